#!/usr/bin/env node
// One SocketCluster 20 node for the placement e2e (sc_burst.js): a socketcluster-server attached
// to an HTTP server that also answers GET /__stats with {name, clients}, and an RPC `whoami`
// that tells a client which node it reached.
//   node sc_node.js --port N --name NAME
'use strict';

const http = require('http');
const socketClusterServer = require('socketcluster-server');

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`--${name} is required`);
  return process.argv[i + 1];
}

const name = arg('name');
const port = Number(arg('port'));
const httpServer = http.createServer();
const agServer = socketClusterServer.attach(httpServer, { pingInterval: 60000, pingTimeout: 60000 });

httpServer.on('request', (req, res) => {
  if (req.url === '/__stats') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ name, clients: agServer.clientsCount }));
  }
});

(async () => {
  for await (const { socket } of agServer.listener('connection')) {
    (async () => {
      for await (const request of socket.procedure('whoami')) request.end(name);
    })();
  }
})();

httpServer.listen(port, '127.0.0.1', () => console.log(`${name} listening on ${port}`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
