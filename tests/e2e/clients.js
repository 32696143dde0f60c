// Real socket.io-client 4.8 clients that record everything the assertions need: which node
// welcomed them (and when), connect errors, disconnects, upgrades and upgrade errors, pings seen,
// echo round trips, and how many times each broadcast id arrived.
'use strict';

const { io } = require('socket.io-client');
const { NodeWebSocket } = require('engine.io-client');
const { Http2Polling } = require('./h2_polling');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class TestClient {
  // extraOpts go to io() as they are: for https:// URLs, `ca` (the PEM to trust) or
  // `rejectUnauthorized`, which Engine.IO hands on to its XHR (polling) and ws (WebSocket).
  // `http2: true` (E2E_HTTP2=1) polls over HTTP/2 instead (h2_polling.js); WebSockets stay HTTP/1.1.
  constructor(id, group, url, transports, { http2 = false, ...extraOpts } = {}) {
    this.id = id;
    this.group = group;            // "polling" | "default" | "websocket" | anything for reports
    this.transportsOpt = transports;
    this.node = null;              // node of the current session (from "welcome")
    this.welcomes = [];            // [{node, at}] one per (re)connection
    this.connectErrors = [];       // [{at, message}]
    this.disconnects = [];         // [{at, reason, node}]
    this.upgradeErrors = [];       // [{at, message}]
    this.upgrades = 0;
    this.pings = 0;                // Engine.IO pings of the current session
    this.echoSent = 0;
    this.echoAcked = 0;
    this.echoFailures = [];        // [{at, message}]
    this.bcast = new Map();        // broadcast id -> times received
    this.connected = false;

    const opts = {
      forceNew: true,            // one Engine.IO session per client, never multiplexed
      reconnection: true,        // the kill scenario relies on the client's own reconnect
      timeout: 10000,
      ...extraOpts,
    };
    if (http2) {
      const classes = { polling: Http2Polling, websocket: NodeWebSocket };
      opts.transports = (transports || ['polling', 'websocket']).map((t) => classes[t]);
    } else if (transports) {
      opts.transports = transports;
    }
    this.socket = io(url, opts);
    this.attach();
  }

  attach() {
    const s = this.socket;
    s.on('connect', () => {
      this.connected = true;
      this.pings = 0;
    });
    s.on('welcome', (msg) => {
      this.node = msg.node;
      this.welcomes.push({ node: msg.node, at: Date.now() });
    });
    s.on('connect_error', (err) => {
      // Engine.IO's TransportError says only "xhr poll error" / "websocket error". The cause is in
      // its description: the HTTP status for polling (0 when the request failed, and then the
      // XHR's responseText holds the Node error's stack), the ws ErrorEvent for WebSocket.
      const d = err && err.description;
      const xhr = err && err.context;
      let why = '';
      if (d && typeof d === 'object') why = d.message || (d.error && d.error.message) || '';
      else if (d === 0 && xhr && typeof xhr.responseText === 'string') why = xhr.responseText.split('\n')[0];
      else if (d !== undefined && d !== null) why = String(d);
      this.connectErrors.push({ at: Date.now(), message: String(err && err.message) + (why ? ` (${why})` : '') });
    });
    s.on('disconnect', (reason) => {
      this.connected = false;
      this.disconnects.push({ at: Date.now(), reason, node: this.node });
    });
    s.on('bcast', (msg) => {
      this.bcast.set(msg.id, (this.bcast.get(msg.id) || 0) + 1);
    });
    // The Manager opens a new Engine.IO socket on every (re)connection: hook each one.
    s.io.on('open', () => {
      const engine = s.io.engine;
      engine.on('upgrade', () => { this.upgrades++; });
      engine.on('upgradeError', (err) => {
        this.upgradeErrors.push({ at: Date.now(), message: String(err && err.message) });
      });
      engine.on('ping', () => { this.pings++; });
    });
  }

  get transport() {
    const e = this.socket.io.engine;
    return e && e.transport ? e.transport.name : null;
  }

  // One acknowledged event; a missing ack within timeoutMs is a failure.
  echo(timeoutMs = 5000) {
    this.echoSent++;
    const payload = { client: this.id, n: this.echoSent };
    return new Promise((resolve) => {
      this.socket.timeout(timeoutMs).emit('echo', payload, (err, reply) => {
        if (err) {
          this.echoFailures.push({ at: Date.now(), message: `no ack: ${err.message}` });
        } else if (!reply || reply.payload.n !== payload.n || reply.node !== this.node) {
          this.echoFailures.push({ at: Date.now(), message: `bad ack ${JSON.stringify(reply)} (on ${this.node})` });
        } else {
          this.echoAcked++;
        }
        resolve();
      });
    });
  }

  close() {
    this.socket.disconnect();
  }
}

// Creates n clients, at most `concurrency` handshakes in flight at once: a bursty but bounded
// arrival, like a page reload wave. Resolves when each client was welcomed by its node or failed
// once, or at the deadline; the caller judges the clients. ("connect" alone is not enough: over
// polling the node's welcome may come in the next poll, after the CONNECT packet.)
async function connectMany(url, n, { group, transports, concurrency = 50, idBase = 0, timeoutMs = 30000, extraOpts } = {}) {
  const clients = [];
  const deadline = Date.now() + timeoutMs;
  const settled = (c) => (c.connected && c.node !== null) || c.connectErrors.length > 0 || c.disconnects.length > 0;
  for (let i = 0; i < n; i++) {
    while (clients.filter((c) => !settled(c)).length >= concurrency && Date.now() < deadline) {
      await sleep(5);
    }
    clients.push(new TestClient(idBase + i, group, url, transports, extraOpts));
  }
  while (!clients.every(settled) && Date.now() < deadline) {
    await sleep(20);
  }
  return clients;
}

function closeAll(clients) {
  for (const c of clients) c.close();
}

module.exports = { TestClient, closeAll, connectMany, sleep };
