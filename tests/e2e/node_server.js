#!/usr/bin/env node
// One Socket.IO 4.8 node of the test cluster (and of the README demo).
//
//   node node_server.js --port 3001 --name node1 --redis-url redis://127.0.0.1:6379
//                       [--ping-interval 25000] [--ping-timeout 20000] [--static-dir DIR]
//
// Besides Socket.IO on /socket.io/ it answers, on the same port:
//   GET  /__stats      counters as JSON: what the e2e suite asserts on. The suite fetches them from
//                      the node's own port, never through limpet, so a proxy bug cannot hide here.
//   POST /__broadcast  {"id": ...} → io.emit("bcast", {id, from}) through the Redis adapter, so
//                      it reaches the clients of every node, not only this one.
//   GET  /             the demo chat page (DIR/index.html), so a browser tab loads it through limpet.
// It prints "READY <port>" on stdout once it listens and the adapter's Redis links are up.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

function parseArgs(argv) {
  const opts = {
    port: 3000,
    name: '',
    redisUrl: 'redis://127.0.0.1:6379',
    pingInterval: 25000,
    pingTimeout: 20000,
    staticDir: path.join(__dirname, '..', '..', 'demo'),
  };
  const keys = {
    '--port': ['port', Number],
    '--name': ['name', String],
    '--redis-url': ['redisUrl', String],
    '--ping-interval': ['pingInterval', Number],
    '--ping-timeout': ['pingTimeout', Number],
    '--static-dir': ['staticDir', String],
  };
  for (let i = 2; i < argv.length; i++) {
    const spec = keys[argv[i]];
    if (!spec || i + 1 >= argv.length) {
      console.error(`node_server: unknown or incomplete option ${argv[i]}`);
      process.exit(2);
    }
    opts[spec[0]] = spec[1](argv[++i]);
  }
  if (!opts.name) opts.name = `node-${opts.port}`;
  return opts;
}

// Engine.IO's connection_error codes (engine.io/lib/server.js, Server.errors).
const ERROR_NAMES = {
  0: 'unknown_transport',
  1: 'session_unknown',
  2: 'bad_handshake_method',
  3: 'bad_request',
  4: 'forbidden',
  5: 'unsupported_protocol_version',
};

function makeStats(name, port) {
  return {
    name,
    port,
    pid: process.pid,
    started_at: Date.now(),
    connected: 0,           // Socket.IO sockets on "/" right now: the sessions the spread is about
    total_connections: 0,   // Socket.IO connections ever accepted
    engine_clients: 0,      // Engine.IO sessions right now (includes handshakes not yet connected)
    handshakes: 0,          // Engine.IO sessions ever opened
    handshakes_by_proto: {},  // the same by X-Forwarded-Proto of the opening request ("none": absent)
    health_checks: 0,       // Engine.IO handshakes of limpet's health checker (not in `handshakes`)
    health_check_closes: {},  // how those sessions ended, by reason ("transport close": its close packet)
    session_unknown_errors: 0,
    // The same by the client's `e2e_group` query parameter (run_scale.js tags each client with
    // its transport mode: polling, default, websocket); "none" when absent.
    session_unknown_by_group: {},
    connected_by_group: {},  // like `connected`, by the e2e_group of the socket's handshake
    connection_errors: {},  // by name, all codes (ERROR_NAMES)
    upgrade_count: 0,       // polling → websocket upgrades completed
    transports: { polling: 0, websocket: 0 },  // current Engine.IO transports of open sessions
    disconnect_reasons: {},
    echo_count: 0,
    bcast_emitted: 0,
    chat_emitted: 0,
  };
}

function countTransports(io) {
  const out = { polling: 0, websocket: 0 };
  for (const client of Object.values(io.engine.clients)) {
    const t = client.transport && client.transport.name;
    out[t] = (out[t] || 0) + 1;
  }
  return out;
}

function readBody(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      body += chunk;
      if (body.length > limit) reject(new Error('body too large'));
    });
    req.on('end', () => resolve(body));
    req.on('error', reject);
  });
}

function sendJson(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

// Requests Socket.IO does not claim (it only takes its own path) land here.
function makeHttpHandler(opts, stats, io) {
  return async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    try {
      if (req.method === 'GET' && url.pathname === '/__stats') {
        stats.engine_clients = io.engine.clientsCount;
        stats.connected = io.of('/').sockets.size;
        stats.connected_by_group = {};
        for (const socket of io.of('/').sockets.values()) {
          const g = String(socket.handshake.query.e2e_group || 'none');
          stats.connected_by_group[g] = (stats.connected_by_group[g] || 0) + 1;
        }
        stats.transports = countTransports(io);
        return sendJson(res, 200, stats);
      }
      if (req.method === 'POST' && url.pathname === '/__broadcast') {
        const body = JSON.parse((await readBody(req)) || '{}');
        const id = body.id !== undefined ? body.id : Date.now();
        stats.bcast_emitted++;
        // io.emit goes to local sockets and, through the Redis adapter, to every other node.
        io.emit('bcast', { id, from: opts.name });
        return sendJson(res, 200, { ok: true, id, from: opts.name });
      }
      if (req.method === 'GET' && (url.pathname === '/' || url.pathname === '/index.html')) {
        const file = path.join(opts.staticDir, 'index.html');
        const page = await fs.promises.readFile(file);
        res.writeHead(200, {
          'Content-Type': 'text/html; charset=utf-8',
          'Content-Length': page.length,
          'Cache-Control': 'no-cache',
          // Lets a curious user see which node served the page itself.
          'X-Served-By': opts.name,
        });
        return res.end(page);
      }
      sendJson(res, 404, { error: 'not found', path: url.pathname });
    } catch (err) {
      sendJson(res, 500, { error: String(err && err.message ? err.message : err) });
    }
  };
}

function attachSocketHandlers(opts, stats, io) {
  io.engine.on('connection', (engineSocket) => {
    // limpet's active Engine.IO check: a real handshake, then a close packet. Counted apart so
    // that the session and proto counts stay about clients.
    if (engineSocket.request.headers['user-agent'] === 'limpet-health-check') {
      stats.health_checks++;
      engineSocket.on('close', (reason) => {
        stats.health_check_closes[reason] = (stats.health_check_closes[reason] || 0) + 1;
      });
      return;
    }
    stats.handshakes++;
    // What the proxy says the client spoke: limpet always sends X-Forwarded-Proto, "https"
    // behind a TLS listener. The TLS e2e run asserts on it.
    const proto = String(engineSocket.request.headers['x-forwarded-proto'] || 'none');
    stats.handshakes_by_proto[proto] = (stats.handshakes_by_proto[proto] || 0) + 1;
    engineSocket.on('upgrade', () => {
      stats.upgrade_count++;
    });
  });

  // A misrouted request of an existing session arrives here as code 1 ("Session ID unknown"):
  // the one number that says whether the balancer kept every session on its node.
  io.engine.on('connection_error', (err) => {
    const key = ERROR_NAMES[err.code] || `code_${err.code}`;
    stats.connection_errors[key] = (stats.connection_errors[key] || 0) + 1;
    if (err.code === 1) {
      stats.session_unknown_errors++;
      let g = 'none';
      try {
        g = new URL(err.req.url, 'http://localhost').searchParams.get('e2e_group') || 'none';
      } catch (_) { /* keep "none" */ }
      stats.session_unknown_by_group[g] = (stats.session_unknown_by_group[g] || 0) + 1;
    }
  });

  io.on('connection', (socket) => {
    stats.total_connections++;
    socket.emit('welcome', {
      node: opts.name,
      sid: socket.conn.id,
      transport: socket.conn.transport.name,
    });
    socket.conn.on('upgrade', (transport) => {
      socket.emit('transport', { node: opts.name, transport: transport.name });
    });

    socket.on('echo', (payload, ack) => {
      stats.echo_count++;
      if (typeof ack === 'function') ack({ node: opts.name, payload });
    });

    // Same broadcast as POST /__broadcast, for clients (the demo page's button, interactive tests).
    socket.on('broadcast', (payload, ack) => {
      const id = payload && payload.id !== undefined ? payload.id : Date.now();
      stats.bcast_emitted++;
      io.emit('bcast', { id, from: opts.name });
      if (typeof ack === 'function') ack({ ok: true, id });
    });

    // Demo chat: every message goes to every tab on every node, tagged with the node that sent it.
    socket.on('chat', (msg, ack) => {
      const text = String((msg && msg.text) || '').slice(0, 500);
      const user = String((msg && msg.user) || 'anonymous').slice(0, 40);
      if (!text) return;
      stats.chat_emitted++;
      io.emit('chat', { text, user, node: opts.name, at: Date.now() });
      if (typeof ack === 'function') ack({ ok: true });
    });

    socket.on('disconnect', (reason) => {
      stats.disconnect_reasons[reason] = (stats.disconnect_reasons[reason] || 0) + 1;
    });
  });
}

async function main() {
  const opts = parseArgs(process.argv);
  const stats = makeStats(opts.name, opts.port);

  const pubClient = createClient({ url: opts.redisUrl });
  const subClient = pubClient.duplicate();
  for (const [which, c] of [['pub', pubClient], ['sub', subClient]]) {
    c.on('error', (err) => console.error(`${opts.name}: redis ${which}: ${err.message}`));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);

  // Our handler is registered before Socket.IO attaches: Socket.IO then wraps it and passes on
  // only the requests outside its own path (a listener added later would also see /socket.io/).
  let handler = null;
  const httpServer = http.createServer((req, res) => handler(req, res));
  const io = new Server(httpServer, {
    adapter: createAdapter(pubClient, subClient),
    pingInterval: opts.pingInterval,
    pingTimeout: opts.pingTimeout,
    // Socket.IO serves /socket.io/socket.io.js to the demo page.
    serveClient: true,
  });
  handler = makeHttpHandler(opts, stats, io);
  attachSocketHandlers(opts, stats, io);

  httpServer.on('error', (err) => {
    console.error(`${opts.name}: ${err.message}`);
    process.exit(1);
  });
  httpServer.listen(opts.port, '127.0.0.1', () => {
    console.log(`READY ${httpServer.address().port}`);
  });

  const stop = () => {
    io.close();
    Promise.allSettled([pubClient.quit(), subClient.quit()]).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(`node_server: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
