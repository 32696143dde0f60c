#!/usr/bin/env node
// Socket.IO handshakes per second through a front (bench/run.sh, Socket.IO scenario).
// --concurrency loops, each: a socket.io-client 4.8 connection with the default transports
// (Engine.IO polling handshake, Socket.IO connect, upgrade to WebSocket), then disconnect and
// start over. A cycle counts once the namespace is connected *and* the transport is WebSocket,
// so a front that breaks stickiness (polling requests or the upgrade on the wrong node) shows
// up as errors, not as fast handshakes. Prints one JSON object on stdout.
//
//   node sio_load.js --url http://127.0.0.1:18610 --concurrency 32 --duration 5 --warmup 1
//                    [--nodes 18621,18622,18623]   (read each node's /__stats before and after)
'use strict';

const path = require('path');
const e2e = path.join(__dirname, '..', '..', 'tests', 'e2e');
const { io } = require(path.join(e2e, 'node_modules', 'socket.io-client'));
const harness = require(path.join(e2e, 'harness.js'));

function parseArgs(argv) {
  const o = { url: '', concurrency: 32, duration: 5, warmup: 1, nodes: [], timeoutMs: 5000 };
  for (let i = 2; i < argv.length; i += 2) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--url': o.url = v; break;
      case '--concurrency': o.concurrency = Number(v); break;
      case '--duration': o.duration = Number(v); break;
      case '--warmup': o.warmup = Number(v); break;
      case '--nodes': o.nodes = v.split(',').map(Number); break;
      default:
        console.error(`sio_load: unknown option ${argv[i]}`);
        process.exit(2);
    }
  }
  if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(o.url)) {
    console.error('sio_load: --url http://127.0.0.1:PORT is required (loopback only)');
    process.exit(2);
  }
  return o;
}

function quantile(sorted, q) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function nodeStats(ports) {
  return Promise.all(ports.map((p) => harness.httpJson('GET', `http://127.0.0.1:${p}/__stats`)));
}

async function main() {
  const o = parseArgs(process.argv);
  const before = o.nodes.length ? await nodeStats(o.nodes) : [];
  const t0 = Date.now();
  const from = t0 + o.warmup * 1000;
  const to = from + o.duration * 1000;
  let done = 0;
  let total = 0;
  let errors = 0;
  let firstError = '';
  const times = [];

  function cycle() {
    if (Date.now() >= to) return Promise.resolve();
    return new Promise((resolve) => {
      const start = Date.now();
      const socket = io(o.url, { forceNew: true, reconnection: false, timeout: o.timeoutMs });
      let finished = false;
      const end = (ok, why) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        socket.disconnect();
        const now = Date.now();
        if (ok) {
          total++;
          if (now >= from && now < to) {
            done++;
            times.push(now - start);
          }
        } else {
          errors++;
          if (!firstError) firstError = why;
        }
        resolve();
      };
      const timer = setTimeout(() => end(false, 'no connect+upgrade within 5 s'), o.timeoutMs);
      const check = () => {
        if (socket.connected && socket.io.engine && socket.io.engine.transport.name === 'websocket') end(true);
      };
      socket.on('connect', () => {
        check();
        socket.io.engine.once('upgrade', check);
      });
      socket.on('connect_error', (err) => end(false, `connect_error: ${err.message}`));
      socket.on('disconnect', (reason) => { if (!finished) end(false, `disconnect: ${reason}`); });
    }).then(cycle);
  }

  await Promise.all(Array.from({ length: o.concurrency }, cycle));
  const after = o.nodes.length ? await nodeStats(o.nodes) : [];
  times.sort((a, b) => a - b);
  const perNode = after.map((s, i) => s.handshakes - before[i].handshakes);
  const unknown = after.reduce((acc, s, i) => acc + s.session_unknown_errors - before[i].session_unknown_errors, 0);
  console.log(JSON.stringify({
    url: o.url,
    concurrency: o.concurrency,
    duration_s: o.duration,
    handshakes_per_s: done / o.duration,
    completed: done,
    completed_total: total,
    errors,
    first_error: firstError,
    p50_ms: quantile(times, 0.5),
    p99_ms: quantile(times, 0.99),
    node_handshakes: perNode,
    session_unknown_errors: unknown,
  }));
  // Sockets closed above; nothing else holds the loop open, but do not wait on stragglers.
  setTimeout(() => process.exit(0), 200).unref();
}

main().catch((err) => {
  console.error(`sio_load: ${err.stack || err}`);
  process.exit(1);
});
