#!/usr/bin/env node
// End-to-end suite of issue 3: a real Socket.IO 4.8 cluster (three nodes, Redis adapter, a real
// redis-server) behind limpet with 2 workers, driven by real socket.io-client 4.8 clients from
// 127.0.0.1. Exits 0 only if every check passed.
//
// Environment:
//   LIMPET_BIN         path of the limpet binary (required for the real suite)
//   E2E_FRONT          limpet (default) | nginx-iphash | nginx-rr — nginx fronts exist only to
//                      develop the harness itself; the spread check is skipped for them
//   E2E_CLIENTS        clients per transport group (default 300; 100 with E2E_TLS=1)
//   E2E_TLS=1          the TLS run: limpet's listener terminates TLS with a certificate made at
//                      run time (`openssl`, a throwaway CA), every client connects to https:// /
//                      wss:// trusting that CA; adds the TLS listener's own controls
//   E2E_TLS_UNTRUSTED=1  with E2E_TLS=1: the clients are not given the CA. A manual negative
//                      control: the run must then fail
//   E2E_HTTP2=1        with E2E_TLS=1: the listener has http2 = true and the clients poll over
//                      HTTP/2 (h2_polling.js: one HTTP/2 connection per client, ALPN h2); their
//                      WebSockets stay HTTP/1.1 (Node has no RFC 8441 client)
//   E2E_KEEP_LOGS=1    keep the temp dir with every child's log even on success
'use strict';

const fs = require('fs');
const path = require('path');
const harness = require('./harness');
const { Report } = require('./report');
const { closeAll } = require('./clients');
const sc = require('./scenarios');

// limpet's active checks in the real run, as a production config would have them (conf/limpet.toml):
// a real Engine.IO handshake per node every second; two failures mark a node down, two successes up.
const HEALTH_CHECK = { type: 'engineio', interval: '1s', timeout: '1s', rise: 2, fall: 2 };

function readConfig() {
  const front = process.env.E2E_FRONT || 'limpet';
  const useTls = process.env.E2E_TLS === '1';
  const cfg = {
    front,
    limpetBin: process.env.LIMPET_BIN || '',
    tls: useTls,
    tlsTrustCa: process.env.E2E_TLS_UNTRUSTED !== '1',
    http2: process.env.E2E_HTTP2 === '1',
    clientsPerGroup: Number(process.env.E2E_CLIENTS || (useTls ? 100 : 300)),
    // Short Engine.IO timers (server options) so that "two ping cycles" and the detection of
    // a dead node take seconds, not the 25 s + 20 s defaults.
    pingInterval: 2000,
    // The time a node waits for a client's pong before it drops the session. 900 clients share
    // two cores with three nodes, redis and limpet: with 2 s, a client process stalled by the
    // reconnect burst of a kill lost sessions that limpet had routed correctly (the access log
    // showed every request on its node; the node had expired the session).
    pingTimeout: 5000,
    // At most this many handshakes in flight per transport group: a burst, but a bounded one.
    concurrency: 50,
    checkSpread: front === 'limpet',
  };
  if (useTls && front !== 'limpet') throw new Error(`E2E_TLS=1 needs the limpet front, not ${front}`);
  if (cfg.http2 && !useTls) throw new Error('E2E_HTTP2=1 needs E2E_TLS=1 (HTTP/2 by ALPN)');
  if (front === 'limpet') {
    if (!cfg.limpetBin) throw new Error('LIMPET_BIN is not set (path of the limpet binary)');
    if (!fs.existsSync(cfg.limpetBin)) throw new Error(`LIMPET_BIN=${cfg.limpetBin} does not exist`);
    cfg.limpetBin = path.resolve(cfg.limpetBin);
  }
  return cfg;
}

async function main() {
  const cfg = readConfig();
  const report = new Report(cfg.http2 ? 'e2e-socketio-h2' : cfg.tls ? 'e2e-socketio-tls' : 'e2e-socketio');
  const dir = harness.makeTempDir();
  const group = new harness.ProcessGroup(dir);
  const ctx = { cfg, report, dir, group, nodes: [], url: '', redisUrl: '', tls: null, clientOpts: {} };
  let groups = null;
  let fresh = [];
  console.log(`e2e: front ${cfg.front}${cfg.limpetBin ? ` (${cfg.limpetBin})` : ''}` +
    `${cfg.tls ? `, TLS listener${cfg.tlsTrustCa ? '' : ', clients NOT trusting the CA (must fail)'}` : ''}, ` +
    `${cfg.clientsPerGroup} clients per group, logs in ${dir}`);

  try {
    if (cfg.tls) {
      await report.phase('make a test CA and a certificate for 127.0.0.1 (openssl)', async () => {
        const pki = harness.makeTestPki(path.join(dir, 'pki'));
        ctx.tls = { cert: pki.cert, key: pki.key, ca: pki.ca };
        if (cfg.tlsTrustCa) ctx.clientOpts = { ca: pki.ca };
        if (cfg.http2) ctx.clientOpts.http2 = true;
        report.note(`CA ${pki.caFile}, leaf ${pki.cert}`);
      });
    }
    await report.phase('start redis-server and three Socket.IO nodes', async () => {
      report.note(await harness.startSocketIoCluster(group, ctx, cfg));
    });

    await report.phase('negative control: round robin, no Engine.IO paths', () => sc.scenarioNegativeControl(ctx));
    await report.phase('wait for the nodes to be idle', () => sc.waitNodesIdle(ctx));
    const baseline = await sc.nodeStats(ctx);

    await report.phase(`start ${cfg.front} (least_sessions, engineio_paths ["/socket.io/"], Engine.IO health checks` +
      `${cfg.tls ? ', TLS' : ''}${cfg.http2 ? ', http2 = true' : ''})`, async () => {
      const port = await harness.freePort();
      ctx.adminPort = cfg.http2 ? await harness.freePort() : undefined;
      await harness.startFront(group, {
        kind: cfg.front, name: 'limpet', dir, listenPort: port, backends: ctx.nodes,
        limpetBin: cfg.limpetBin, balance: 'least_sessions', engineioPaths: ['/socket.io/'], tls: ctx.tls,
        health: HEALTH_CHECK, http2: cfg.http2, adminPort: ctx.adminPort,
      });
      ctx.url = harness.frontUrl(port, ctx.tls);
    });
    if (cfg.tls) await report.phase('TLS listener: certificate, plain HTTP, clients without the CA', () => sc.scenarioTlsListener(ctx));

    groups = await report.phase(`connect ${3 * cfg.clientsPerGroup} clients`, () => sc.scenarioConnect(ctx));
    await report.phase('polling through two ping cycles with acknowledged events',
      () => sc.scenarioPollingKeepAlive(ctx, groups));
    await report.phase('transports and upgrades', () => sc.scenarioTransports(ctx, groups));
    await report.phase('node counters and spread', () => sc.scenarioNodeCounters(ctx, groups, baseline));
    await report.phase('broadcast through the Redis adapter',
      () => sc.broadcastOnce(ctx, groups.all, { id: 'first', fromNode: 'node1', label: 'broadcast' }));
    // The victim is the busiest node (any node under an even spread), so that the kill always
    // has clients to move; the next broadcast comes from a survivor.
    const victim = await sc.busiestNode(ctx);
    const survivor = ctx.nodes.find((n) => n.name !== victim).name;
    await report.phase(`SIGKILL ${victim}`, () => sc.scenarioKillNode(ctx, groups, { victim, broadcastFrom: survivor }));
    fresh = await report.phase(`restart ${victim}`, () => sc.scenarioRestartNode(ctx, groups, { victim }));
    const stillUp = groups.all.filter((c) => c.connected).length;
    report.check('end: every original client is still connected', stillUp === groups.all.length,
      `${stillUp}/${groups.all.length}`);
    if (cfg.http2) {
      // The run was what it says: the polls came as HTTP/2 streams (limpet's own counters).
      const streams = await harness.limpetMetric(ctx.adminPort, 'limpet_http2_streams_total');
      const conns = await harness.limpetMetric(ctx.adminPort, 'limpet_http2_connections_total');
      report.check('http2: the clients polled over HTTP/2', streams >= 3 * cfg.clientsPerGroup && conns >= 2 * cfg.clientsPerGroup,
        `${streams} HTTP/2 streams on ${conns} HTTP/2 connections`);
    }
  } catch (err) {
    report.check('suite ran to the end', false, err && err.stack ? err.stack : String(err));
  } finally {
    if (groups) closeAll(groups.all);
    closeAll(fresh);
  }

  // A crash mid-run shows up above only as client failures: say it plainly. Then a graceful
  // stop (design §7: SIGTERM finishes in-flight work and exits 0 within shutdown_timeout).
  if (cfg.front === 'limpet' && group.children.has('limpet')) {
    const running = group.isRunning('limpet');
    report.check('limpet still running at the end of the scenarios', running,
      running ? '' : `exited with ${JSON.stringify(group.children.get('limpet').exitInfo)}`);
    if (running) {
      const t = Date.now();
      const info = await group.stop('limpet', 'SIGTERM', 15000);
      report.check('limpet exits 0 on SIGTERM', info && info.code === 0,
        `${JSON.stringify(info)} after ${Date.now() - t} ms`);
    }
  }

  const ok = report.summary();
  if (!ok) {
    for (const name of ['limpet', 'limpet-roundrobin']) {
      const tail = group.tail(name, 40);
      if (tail) console.log(`\n--- last lines of ${name}'s log (${dir}/${name}.log)\n${tail}`);
    }
  }
  await group.stopAll(3000);
  if (ok && !process.env.E2E_KEEP_LOGS) {
    fs.rmSync(dir, { recursive: true, force: true });
  } else {
    console.log(`logs kept in ${dir}`);
  }
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(`e2e: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
