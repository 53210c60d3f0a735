// Bundled in place of undici/lib/dispatcher/client-h2.js (scripts/bundle.mjs). undici's Client requires its HTTP/2
// client at load, and that file requires node:http2 at its top, which loads tls and node:crypto (OpenSSL's
// initialisation): ~2 MiB of RSS that stays, for a code path the proxy never takes. undici speaks HTTP/2 only on
// a TLS connection whose ALPN chose h2, and every upstream connection of the proxy is plain TCP, HTTP/1.1.
'use strict'
module.exports = function connectH2 () {
  throw new Error('HTTP/2 is not in the egress-router bundle: upstream connections are plain HTTP/1.1')
}
