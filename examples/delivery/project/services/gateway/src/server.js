'use strict';
// The gateway: answers /health itself and maps /api/<service>/... to a backend URL.
const http = require('node:http');

const ROUTES = {
  identity: process.env.IDENTITY_URL || 'http://identity:8001',
  orders: process.env.ORDERS_URL || 'http://orders:8002',
};

/** Where a request path goes: `{ service, url }`, or null for an unknown service. */
function route(path) {
  const match = /^\/api\/([a-z-]+)(\/.*)?$/.exec(path);
  if (!match || !(match[1] in ROUTES)) {
    return null;
  }
  return { service: match[1], url: ROUTES[match[1]] + (match[2] || '/') };
}

function createServer() {
  return http.createServer((req, res) => {
    if (req.url === '/health') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: 'ok', service: 'gateway' }));
      return;
    }
    const target = route(req.url);
    res.writeHead(target ? 307 : 404, target ? { location: target.url } : {});
    res.end();
  });
}

if (require.main === module) {
  const port = Number(process.env.PORT || 8080);
  createServer().listen(port, () => console.log(`gateway listening on ${port}`));
}

module.exports = { createServer, route };
