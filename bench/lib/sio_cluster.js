#!/usr/bin/env node
// The Socket.IO cluster of the Socket.IO scenario (bench/run.sh): a redis-server and three
// Socket.IO 4.8 nodes with the Redis adapter, started with the e2e suite's own harness and node
// (tests/e2e/harness.js, node_server.js; used read-only). Writes {"redis":P,"nodes":[...]} to
// --ready-file once every node answers, then runs until SIGTERM/SIGINT or --max-seconds, and
// takes its children down with it either way.
//
//   node sio_cluster.js --redis-port 18620 --ports 18621,18622,18623 --ready-file F --log-dir D
'use strict';

const fs = require('fs');
const path = require('path');
const harness = require(path.join(__dirname, '..', '..', 'tests', 'e2e', 'harness.js'));

function parseArgs(argv) {
  const o = { redisPort: 0, ports: [], readyFile: '', logDir: '', maxSeconds: 1200 };
  for (let i = 2; i < argv.length; i += 2) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--redis-port': o.redisPort = Number(v); break;
      case '--ports': o.ports = v.split(',').map(Number); break;
      case '--ready-file': o.readyFile = v; break;
      case '--log-dir': o.logDir = v; break;
      case '--max-seconds': o.maxSeconds = Number(v); break;
      default:
        console.error(`sio_cluster: unknown option ${argv[i]}`);
        process.exit(2);
    }
  }
  if (!o.redisPort || o.ports.length === 0 || !o.readyFile || !o.logDir) {
    console.error('usage: sio_cluster.js --redis-port P --ports P,P,P --ready-file F --log-dir D');
    process.exit(2);
  }
  return o;
}

async function main() {
  const o = parseArgs(process.argv);
  fs.mkdirSync(o.logDir, { recursive: true });
  const group = new harness.ProcessGroup(o.logDir);
  harness.startRedis(group, { port: o.redisPort });
  await harness.waitForRedis(o.redisPort);
  const redisUrl = `redis://127.0.0.1:${o.redisPort}`;
  await Promise.all(o.ports.map((port, i) => harness.startNode(group, { name: `node${i + 1}`, port, redisUrl })));
  fs.writeFileSync(o.readyFile + '.tmp', JSON.stringify({ redis: o.redisPort, nodes: o.ports }) + '\n');
  fs.renameSync(o.readyFile + '.tmp', o.readyFile);
  console.error(`sio_cluster: redis on ${o.redisPort}, nodes on ${o.ports.join(', ')}`);
  // A forgotten cluster must not outlive the benchmark by long.
  setTimeout(async () => {
    console.error('sio_cluster: --max-seconds reached, stopping');
    await group.stopAll();
    process.exit(0);
  }, o.maxSeconds * 1000);
}

main().catch((err) => {
  console.error(`sio_cluster: ${err.stack || err}`);
  process.exit(1);
});
