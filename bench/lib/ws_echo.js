#!/usr/bin/env node
// A second opinion on WebSocket load (b) with a different client: the npm `ws` 8 package (the one
// the e2e suite installs), not wsload. --conns connections opened at --connect-rate, then each
// sends a --size byte binary message at --msg-rate per second (open loop, phases spread evenly);
// latency is taken from the *scheduled* send time of each message, so a stalled proxy cannot
// slow the schedule down. Node timers tick in milliseconds, so the client adds up to ~1 ms of its
// own lateness (reported as lag_p99_us). Prints one JSON object on stdout.
//
//   node ws_echo.js --url ws://127.0.0.1:18610/ --conns 1000 --msg-rate 10 --size 32 \
//                   --duration 5 --warmup 1
'use strict';

const path = require('path');
const WebSocket = require(path.join(__dirname, '..', '..', 'tests', 'e2e', 'node_modules', 'ws'));

function parseArgs(argv) {
  const o = { url: '', conns: 1000, msgRate: 10, size: 32, duration: 5, warmup: 1, connectRate: 3000 };
  const num = { '--conns': 'conns', '--msg-rate': 'msgRate', '--size': 'size', '--duration': 'duration',
    '--warmup': 'warmup', '--connect-rate': 'connectRate' };
  for (let i = 2; i < argv.length; i += 2) {
    if (argv[i] === '--url') o.url = argv[i + 1];
    else if (num[argv[i]]) o[num[argv[i]]] = Number(argv[i + 1]);
    else {
      console.error(`ws_echo: unknown option ${argv[i]}`);
      process.exit(2);
    }
  }
  if (!/^ws:\/\/127\.0\.0\.1:\d+\//.test(o.url)) {
    console.error('ws_echo: --url ws://127.0.0.1:PORT/ is required (loopback only)');
    process.exit(2);
  }
  return o;
}

const nowNs = () => process.hrtime.bigint();

function quantileUs(sortedNs, q) {
  if (sortedNs.length === 0) return 0;
  return Number(sortedNs[Math.min(sortedNs.length - 1, Math.floor(q * sortedNs.length))]) / 1000;
}

async function openAll(o) {
  const sockets = [];
  let errors = 0;
  const perTick = Math.max(1, Math.round(o.connectRate / 100));
  let started = 0;
  await new Promise((resolve) => {
    let settled = 0;
    const tick = setInterval(() => {
      for (let k = 0; k < perTick && started < o.conns; k++, started++) {
        const ws = new WebSocket(o.url, { perMessageDeflate: false });
        ws.binaryType = 'nodebuffer';
        ws.sched = [];  // scheduled send times of messages in flight, oldest first
        ws.once('open', () => {
          sockets.push(ws);
          if (++settled === o.conns) resolve();
        });
        ws.once('error', () => {
          errors++;
          if (++settled === o.conns) resolve();
        });
      }
      if (started >= o.conns) clearInterval(tick);
    }, 10);
  });
  return { sockets, errors };
}

async function main() {
  const o = parseArgs(process.argv);
  const deadline = setTimeout(() => {
    console.error('ws_echo: deadline reached');
    process.exit(1);
  }, (o.conns / o.connectRate * 3 + o.warmup + o.duration + 30) * 1000);
  deadline.unref();
  const { sockets, errors } = await openAll(o);
  const payload = Buffer.alloc(o.size, 'x');
  const lat = [];
  const lag = [];
  let dropped = 0;
  const t0 = nowNs() + 20_000_000n;
  const from = t0 + BigInt(Math.round(o.warmup * 1e9));
  const to = from + BigInt(Math.round(o.duration * 1e9));
  const interval = BigInt(Math.round(1e9 / (o.msgRate * sockets.length)));
  for (const ws of sockets) {
    ws.on('message', () => {
      const t = nowNs();
      const s = ws.sched.shift();
      if (s !== undefined && s >= from && s < to) lat.push(t - s);
    });
    ws.on('close', () => { dropped++; });
  }
  let seq = 0n;
  let sent = 0;
  await new Promise((resolve) => {
    const tick = setInterval(() => {
      const t = nowNs();
      for (;;) {
        const s = t0 + seq * interval;
        if (s >= to) {
          clearInterval(tick);
          resolve();
          return;
        }
        if (s > t) return;
        const ws = sockets[Number(seq % BigInt(sockets.length))];
        seq++;
        if (ws.readyState !== WebSocket.OPEN) continue;
        ws.sched.push(s);
        ws.send(payload);
        sent++;
        if (s >= from) lag.push(t - s);
      }
    }, 1);
  });
  // Replies still in flight get two seconds.
  const graceEnd = Date.now() + 2000;
  while (Date.now() < graceEnd && sockets.some((ws) => ws.sched.length > 0)) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const lost = sockets.reduce((a, ws) => a + ws.sched.length, 0);
  lat.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  lag.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const closing = dropped;
  for (const ws of sockets) ws.terminate();
  console.log(JSON.stringify({
    mode: 'ws-echo-node', url: o.url, conns: o.conns, open: sockets.length, connect_errors: errors,
    dropped: closing, sent, counted: lat.length, lost, rate: lat.length / o.duration,
    p50_us: quantileUs(lat, 0.5), p99_us: quantileUs(lat, 0.99), p999_us: quantileUs(lat, 0.999),
    max_us: lat.length ? Number(lat[lat.length - 1]) / 1000 : 0, lag_p99_us: quantileUs(lag, 0.99),
  }));
  setTimeout(() => process.exit(0), 100).unref();
}

main().catch((err) => {
  console.error(`ws_echo: ${err.stack || err}`);
  process.exit(1);
});
