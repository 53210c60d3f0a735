/**
 * Node flags the daemon runs with, wherever it is started: the systemd units, the image's ENTRYPOINT,
 * bin/egress-router's own #! line, and the lab, the tests and the bench (src/lab/router-process.ts).
 * test/unit/ops/ checks that the units and the Containerfile carry exactly these.
 *
 * --max-semi-space-size=4 (MiB): V8 lets the young generation grow to 16 MiB per semi-space under
 * load, and a proxy that accepts thousands of connections a second drives it there; it is not given
 * back when the load stops. Measured with a dns-proxy forwarder on loopback after 6 s of new
 * connections: RSS 109-112 MiB at the default, 86 MiB at 4, 79-81 MiB at 1-2; connections/s within
 * the run-to-run noise at 4 and 8 (5.1, 5.2, 3.7k against 5.4, 4.4, 4.2k), lower at 1-2.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = Object.freeze(['--max-semi-space-size=4'])
