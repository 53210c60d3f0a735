/**
 * Numbers shared by the network plan and the nft ruleset in host routing: the firewall mark the NAT rules put on
 * redirected connections, the routing table it selects, and the policy-rule priorities we own.
 * 0x6572 = "er". Chosen away from the ranges kube-proxy (0x4000, 0x8000) and Calico (0xffff0000) use.
 */
export const FWMARK = 0x6572
export const ROUTE_TABLE = 6572
/** `from EGRESS_SOURCE lookup ROUTE_TABLE` */
export const RULE_PRIORITY_FROM = 6572
/** `fwmark FWMARK lookup ROUTE_TABLE` */
export const RULE_PRIORITY_MARK = 6573
/** the one table the daemon owns in nftables */
export const NFT_TABLE = 'egress_router'
