#!/usr/bin/env node
// Issue 18's check with a real SocketCluster 20 pool: three socketcluster-server nodes behind
// limpet (least_sessions), and bursts of plain WebSocket clients (socketcluster-client, no
// Engine.IO) that all connect at once from 127.0.0.1. Each client asks its node who it is; the
// spread must be max/mean <= 1.1 for 12 clients and <= 1.05 for 300, with 1 and 2 workers.
// Exits 0 only if every burst met its bound.
'use strict';

const path = require('path');
const socketClusterClient = require('socketcluster-client');
const harness = require('./harness');

const BURSTS = [{ clients: 12, limit: 1.1 }, { clients: 300, limit: 1.05 }];
const WORKERS = [1, 2];

async function burst(port, clients) {
  // Every client stays connected until all have answered: the burst is concurrent sessions.
  const sockets = [];
  const names = await Promise.all(Array.from({ length: clients }, async () => {
    const socket = socketClusterClient.create({
      hostname: '127.0.0.1', port, autoReconnect: false, connectTimeout: 20000, ackTimeout: 20000,
    });
    sockets.push(socket);
    return socket.invoke('whoami');
  }));
  for (const s of sockets) s.disconnect();
  const spread = {};
  for (const n of names) spread[n] = (spread[n] || 0) + 1;
  return spread;
}

async function run(limpetBin, workers, dir) {
  const group = new harness.ProcessGroup(dir);
  group.hookExit();
  try {
    const backends = [];
    for (let i = 1; i <= 3; i++) {
      const b = { name: `sc${i}`, port: await harness.freePort() };
      const rec = group.spawn(b.name, process.execPath, [path.join(__dirname, 'sc_node.js'), '--port', String(b.port), '--name', b.name]);
      await harness.waitUntil(`${b.name} on port ${b.port}`, async () => {
        if (rec.exitInfo) throw new Error(`${b.name} exited: ${JSON.stringify(rec.exitInfo)}`);
        return (await harness.httpJson('GET', `http://127.0.0.1:${b.port}/__stats`)).name === b.name;
      });
      backends.push(b);
    }
    let failed = 0;
    for (const { clients, limit } of BURSTS) {
      const listenPort = await harness.freePort();
      const name = `limpet-w${workers}-${clients}`;
      await harness.startFront(group, {
        kind: 'limpet', name, dir, listenPort, backends, balance: 'least_sessions', engineioPaths: [],
        limpetBin, workers,
      });
      const spread = await burst(listenPort, clients);
      const ratio = Math.max(...Object.values(spread)) / (clients / backends.length);
      const ok = Object.values(spread).reduce((a, b) => a + b, 0) === clients && ratio <= limit;
      console.log(`${ok ? 'ok  ' : 'FAIL'} workers=${workers} clients=${clients} spread=${JSON.stringify(spread)} max/mean=${ratio.toFixed(3)} (<= ${limit})`);
      if (!ok) failed++;
      await group.stop(name);
    }
    return failed;
  } finally {
    await group.stopAll();
  }
}

async function main() {
  const limpetBin = process.env.LIMPET_BIN;
  if (!limpetBin) throw new Error('LIMPET_BIN is not set (path of the limpet binary)');
  let failed = 0;
  for (const workers of WORKERS) failed += await run(path.resolve(limpetBin), workers, harness.makeTempDir('limpet-sc-'));
  const passed = BURSTS.length * WORKERS.length - failed;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
