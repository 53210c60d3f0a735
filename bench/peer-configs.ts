/**
 * Configuration files of the peers and of the destination server, as text (pure). Each peer gets the
 * least configuration that makes it an honest forward proxy / TCP forwarder for the bench: no cache, no
 * access log, no header rewriting beyond its defaults, limits high enough for 10,000 idle tunnels.
 */

export interface ProxyConfigOptions {
  /** the router's pod-side address, where clients connect */
  listen: string
  port: number
  /** the client network allowed to use the proxy */
  clients: string
  /** a directory for logs and pid files, writable by the peer's unprivileged user */
  dir: string
}

/** squid 5: forward proxy on one address, caching off, CONNECT to any port (like EGRESS_HTTP_PROXY_CONNECT_PORTS=*). */
export function squidConf (o: ProxyConfigOptions): string {
  return `# egress-router bench: squid as a plain forward proxy
http_port ${o.listen}:${o.port}
acl clients src ${o.clients}
http_access allow clients
http_access deny all
cache deny all
cache_mem 0 MB
access_log none
cache_store_log none
cache_log ${o.dir}/cache.log
pid_filename none
coredump_dir ${o.dir}
max_filedescriptors 65536
visible_hostname egress-bench
shutdown_lifetime 0 seconds
client_persistent_connections on
server_persistent_connections on
forwarded_for transparent
via off
`
}

/** tinyproxy 1.11: no ConnectPort lines means CONNECT may reach any port. */
export function tinyproxyConf (o: ProxyConfigOptions): string {
  return `# egress-router bench: tinyproxy as a plain forward proxy
User nobody
Group nogroup
Port ${o.port}
Listen ${o.listen}
Timeout 600
MaxClients 20000
Allow ${o.clients}
LogLevel Critical
LogFile "${o.dir}/tinyproxy.log"
PidFile "${o.dir}/tinyproxy.pid"
DisableViaHeader Yes
`
}

export interface Forward { listen: string, port: number, target: string, targetPort: number }

/**
 * haproxy 2.6 in mode tcp: one frontend per forward, one thread per core the router gets. maxconn
 * within the descriptor limit: haproxy refuses to start when it cannot raise its limit to 2 × maxconn.
 */
export function haproxyConf (forwards: readonly Forward[], maxconn: number, threads = 1): string {
  const parts = [`# egress-router bench: haproxy as a TCP forwarder
global
  maxconn ${maxconn}
  nbthread ${threads}

defaults
  mode tcp
  timeout connect 5s
  timeout client 600s
  timeout server 600s
`]
  for (const f of forwards) {
    parts.push(`frontend f${f.port}
  bind ${f.listen}:${f.port}
  default_backend b${f.port}

backend b${f.port}
  server s ${f.target}:${f.targetPort}
`)
  }
  return parts.join('\n')
}

/**
 * The plain Node forwarder (node-forward.ts), one process for every forward, its upstream connections from
 * `source` as the daemon's.
 */
export function nodeForwardArgv (node: string, script: string, source: string, forwards: readonly Forward[]): string[] {
  const listen = forwards[0]?.listen
  if (listen === undefined || forwards.some((f) => f.listen !== listen)) throw new TypeError('node-forward: every forward needs the same listen address')
  return [node, script, listen, source, ...forwards.map((f) => `${f.port}=${f.target}:${f.targetPort}`)]
}

/** socat: one forking listener per forward, the naive floor. */
export function socatArgv (f: Forward): string[] {
  return ['socat', '-b', '131072', `TCP-LISTEN:${f.port},bind=${f.listen},fork,reuseaddr,backlog=1024`, `TCP:${f.target}:${f.targetPort}`]
}

/**
 * nginx as the destination: a fixed 200 answer, no logging, a long header timeout so idle tunnels
 * (which send an unfinished request) stay open for the whole memory measurement.
 */
export function nginxConf (o: { listen: string, port: number, dir: string }): string {
  return `# egress-router bench: the destination HTTP server
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid ${o.dir}/nginx.pid;
error_log ${o.dir}/nginx-error.log crit;
events { worker_connections 32768; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${o.dir};
  proxy_temp_path ${o.dir};
  fastcgi_temp_path ${o.dir};
  uwsgi_temp_path ${o.dir};
  scgi_temp_path ${o.dir};
  keepalive_requests 1000000;
  keepalive_timeout 600s;
  client_header_timeout 600s;
  server {
    listen ${o.listen}:${o.port} backlog=4096;
    # the body is the peer address, so the bench can check the destination saw EGRESS_SOURCE
    location / { return 200 "$remote_addr\\n"; }
  }
}
`
}
