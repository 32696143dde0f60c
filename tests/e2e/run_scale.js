#!/usr/bin/env node
// Several limpet instances behind an L4 balancer (issue: the Redis session store). A real
// Socket.IO 4.8 cluster (three nodes, Redis adapter) behind N limpet instances (2 workers each,
// least_sessions, Engine.IO path, an [admin] listener each) behind HAProxy in `mode tcp`,
// `balance roundrobin`, so consecutive TCP connections of one Engine.IO session (every polling
// request of a Node client is a new connection) land on different instances. Only instances that
// share learned sids (the [session_store] table) can keep such a session on its node.
//
//   LIMPET_BIN=build/limpet E2E_SCRIPT=run_scale.js bash tests/e2e/run.sh [options]
//     --instances N    limpet instances behind HAProxy (default 2)
//     --store on|off   on (default): every instance gets a [session_store] table pointing at a
//                      redis-server of its own (not the adapter's, so that killing it tests
//                      limpet and nothing else); all checks must hold.
//                      off: the negative control: polling and default clients must fail
//                      (connect_error or "Session ID unknown" on the nodes)
//     --control        the store-off control first, then the store-on run: one test, both sides
//     --store-kill     with the store on: SIGKILL the store's redis-server once clients are
//                      connected, check that established sessions, the instances and new
//                      clients survive it; restart it on the same port and check recovery
//
// Environment: LIMPET_BIN (required), E2E_CLIENTS (clients per transport mode, default 300),
// E2E_KEEP_LOGS=1 (keep the temp dir with every child's log and config even on success),
// E2E_STORE_TABLE=0 (harness development only: --store on writes no [session_store] table, for a
// limpet without the store; with --instances 1 every check but the store's metric then holds).
//
// Ends with "e2e-scale: N passed, M failed"; exit 1 on any failed check.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const harness = require('./harness');
const { Report } = require('./report');
const { connectMany, closeAll, sleep } = require('./clients');
const { judgeClients, nodeStats } = require('./scenarios');

// The store's health as limpet's /metrics reports it (a gauge, 1 = connected): the lead's design
// of the Redis session store. Change it here if the name changes.
const STORE_UP_METRIC = 'limpet_session_store_up';
// How long a restarted store may take to be reported up again by every instance (its reconnect
// backoff included).
const STORE_RECOVERY_DEADLINE_MS = 30000;
// How long the instances may take to notice that the store died.
const STORE_DOWN_DEADLINE_MS = 15000;
// Same as run_e2e.js: a real Engine.IO handshake per node every second.
const HEALTH_CHECK = { type: 'engineio', interval: '1s', timeout: '1s', rise: 2, fall: 2 };
// Must exceed pingInterval + pingTimeout; much longer than the run's longest check.
const SESSION_TTL = '60s';
const MODES = ['polling', 'default', 'websocket'];
const TRANSPORTS = { polling: ['polling'], default: undefined, websocket: ['websocket'] };

function usage(msg) {
  console.error(`run_scale.js: ${msg}\nusage: run_scale.js [--instances N] [--store on|off] [--control] [--store-kill]`);
  process.exit(2);
}

function readConfig(argv) {
  const cfg = {
    instances: 2,
    store: true,
    control: false,
    storeKill: false,
    storeTable: process.env.E2E_STORE_TABLE !== '0',
    limpetBin: process.env.LIMPET_BIN || '',
    clientsPerMode: Number(process.env.E2E_CLIENTS || 300),
    // Short Engine.IO timers, as in run_e2e.js: two ping cycles take seconds.
    pingInterval: 2000,
    pingTimeout: 5000,
    concurrency: 50,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--instances') cfg.instances = Number(argv[++i]);
    else if (a === '--store') {
      const v = argv[++i];
      if (v !== 'on' && v !== 'off') usage(`--store takes on or off, not ${v}`);
      cfg.store = v === 'on';
    } else if (a === '--control') cfg.control = true;
    else if (a === '--store-kill') cfg.storeKill = true;
    else usage(`unknown option ${a}`);
  }
  if (!Number.isInteger(cfg.instances) || cfg.instances < 1 || cfg.instances > 16) usage('--instances takes 1..16');
  if (cfg.storeKill && !cfg.store) usage('--store-kill needs the store on');
  if (cfg.control && !cfg.store) usage('--control runs the store-off control before a store-on run: leave out --store off');
  if ((cfg.control || !cfg.store) && cfg.instances < 2) usage('the store-off control needs --instances 2 or more');
  if (!cfg.limpetBin) usage('LIMPET_BIN is not set (path of the limpet binary)');
  if (!fs.existsSync(cfg.limpetBin)) usage(`LIMPET_BIN=${cfg.limpetBin} does not exist`);
  cfg.limpetBin = path.resolve(cfg.limpetBin);
  return cfg;
}

// ---------------------------------------------------------------- small helpers

function httpText(url, timeoutMs = 3000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`GET ${url}: HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: timeout`)));
    req.on('error', reject);
  });
}

// The values of a Prometheus metric's samples, one per label set ([] if absent).
function samples(text, name) {
  const re = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm');
  const out = [];
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(Number(m[1]));
  return out;
}

// A counter's value summed over its label sets; null if absent.
function metric(text, name) {
  const v = samples(text, name);
  return v.length ? v.reduce((a, b) => a + b, 0) : null;
}

async function instanceMetrics(fleet) {
  const out = {};
  for (const lb of fleet.instances) {
    try {
      out[lb.name] = await httpText(`http://127.0.0.1:${lb.adminPort}/metrics`);
    } catch (err) {
      out[lb.name] = null;
    }
  }
  return out;
}

function fmtCounts(counts) {
  return Object.entries(counts).map(([k, v]) => `${k}=${v}`).join(' ');
}

function spreadOf(counts) {
  const values = Object.values(counts);
  const total = values.reduce((a, b) => a + b, 0);
  const mean = values.length ? total / values.length : 0;
  const max = values.length ? Math.max(...values) : 0;
  return { total, ratio: mean > 0 ? max / mean : Infinity };
}

// Node-side counters of one client group (the `e2e_group` query parameter every client sends).
function groupCounts(stats, field, group) {
  const out = {};
  for (const s of Object.values(stats)) out[s.name] = (s[field] && s[field][group]) || 0;
  return out;
}

function sum(obj) {
  return Object.values(obj).reduce((a, b) => a + b, 0);
}

function firstErrors(clients, n = 3) {
  const msgs = [];
  for (const c of clients) {
    for (const e of c.connectErrors) msgs.push(`#${c.id} connect_error: ${e.message}`);
    for (const d of c.disconnects) msgs.push(`#${c.id} disconnect: ${d.reason} (on ${d.node})`);
    for (const e of c.echoFailures) msgs.push(`#${c.id} echo: ${e.message}`);
    if (msgs.length >= n) break;
  }
  return msgs.slice(0, n);
}

// ---------------------------------------------------------------- the fleet

// Starts N limpet instances (and, with the store, the store's redis-server first) and HAProxy in
// front of them. Returns {instances: [{name, port, adminPort}], url, haproxy}.
async function startFleet(ctx, { store, tag }) {
  const { cfg, group, dir, report } = ctx;
  if (store && !group.isRunning('redis-store')) {
    if (!ctx.storePort) ctx.storePort = await harness.freePort();
    harness.startRedis(group, { port: ctx.storePort, name: 'redis-store' });
    await harness.waitForRedis(ctx.storePort);
  }
  const fleet = { tag, store, instances: [], url: '', haproxy: `${tag}-haproxy` };
  for (let i = 1; i <= cfg.instances; i++) {
    fleet.instances.push({ name: `${tag}-lb-${i}`, instance: `lb-${i}`, port: await harness.freePort(), adminPort: await harness.freePort() });
  }
  for (const lb of fleet.instances) {
    const sessionStore = store && cfg.storeTable
      ? { address: `127.0.0.1:${ctx.storePort}`, keyPrefix: 'limpet:', instance: lb.instance } : undefined;
    try {
      await harness.startFront(group, {
        kind: 'limpet', name: lb.name, dir, listenPort: lb.port, backends: ctx.nodes, limpetBin: cfg.limpetBin,
        balance: 'least_sessions', engineioPaths: ['/socket.io/'], health: HEALTH_CHECK,
        adminPort: lb.adminPort, sessionTtl: SESSION_TTL, sessionStore,
      });
    } catch (err) {
      report.check(`fleet: ${lb.name} starts`, false, `${err.message}\n${group.tail(lb.name, 10)}`);
      throw new Error(`${lb.name} did not start (its config: ${path.join(dir, `${lb.name}.toml`)})`);
    }
  }
  const hport = await harness.freePort();
  await harness.startHaproxy(group, {
    name: fleet.haproxy, dir, listenPort: hport, backends: ctx.nodes,
    servers: fleet.instances.map((lb) => ({ name: lb.instance, port: lb.port })),
  });
  fleet.url = `http://127.0.0.1:${hport}`;
  report.note(`${fleet.instances.map((lb) => `${lb.name}=:${lb.port} (admin :${lb.adminPort})`).join(' ')} ` +
    `haproxy=:${hport}${store ? ` store=redis :${ctx.storePort}${cfg.storeTable ? '' : ' (E2E_STORE_TABLE=0: not configured)'}` : ' no store'}`);
  return fleet;
}

// Waits until every instance's STORE_UP_METRIC is `want`; one check, with what each reported.
async function checkStoreUp(ctx, fleet, want, { label, timeoutMs }) {
  let last = {};
  const t = Date.now();
  try {
    await harness.waitUntil(`${STORE_UP_METRIC} ${want} on every instance`, async () => {
      const m = await instanceMetrics(fleet);
      last = {};
      // Every sample of the gauge (whatever its labels) must say `want`.
      for (const [name, text] of Object.entries(m)) {
        const v = text === null ? [] : samples(text, STORE_UP_METRIC);
        last[name] = text === null ? 'no /metrics' : v.length === 0 ? null : v.every((x) => x === want) ? want : v.join(',');
      }
      return Object.values(last).every((v) => v === want);
    }, { timeoutMs, intervalMs: 200 });
  } catch (_) { /* judged below */ }
  const ok = Object.values(last).length > 0 && Object.values(last).every((v) => v === want);
  ctx.report.check(`${label}: every instance reports ${STORE_UP_METRIC} ${want}`, ok,
    `${ok ? `after ${Date.now() - t} ms` : `not within ${timeoutMs} ms`}: ` +
    Object.entries(last).map(([k, v]) => `${k}=${v === null ? 'absent' : v}`).join(' '));
  return ok;
}

// Every instance still running, then SIGTERM: each exits 0.
async function stopFleet(ctx, fleet, { label }) {
  const { group, report } = ctx;
  const dead = fleet.instances.filter((lb) => !group.isRunning(lb.name));
  report.check(`${label}: all ${fleet.instances.length} limpet instances still running`, dead.length === 0,
    dead.map((lb) => `${lb.name} exited ${JSON.stringify(group.children.get(lb.name).exitInfo)}`).join('; '));
  await group.stop(fleet.haproxy, 'SIGTERM', 3000);
  const infos = await Promise.all(fleet.instances.filter((lb) => group.isRunning(lb.name))
    .map(async (lb) => [lb.name, await group.stop(lb.name, 'SIGTERM', 15000)]));
  const bad = infos.filter(([, info]) => !info || info.code !== 0);
  if (infos.length) {
    report.check(`${label}: limpet instances exit 0 on SIGTERM`, bad.length === 0,
      bad.map(([n, info]) => `${n}: ${JSON.stringify(info)}`).join('; '));
  }
}

// ---------------------------------------------------------------- clients

function connectMode(ctx, url, mode, { tag, n = ctx.cfg.clientsPerMode, idBase = 0, opts = {} }) {
  return connectMany(url, n, {
    group: `${tag}-${mode}`, transports: TRANSPORTS[mode], idBase, concurrency: ctx.cfg.concurrency,
    timeoutMs: 30000, extraOpts: { query: { e2e_group: `${tag}-${mode}` }, ...opts },
  });
}

// Acknowledged events once a second (each client, while connected) until every client saw
// `cycles` more Engine.IO pings than in `from` (client -> pings; default 0), or the deadline of
// (cycles + 2) ping intervals plus the ping timeout.
async function keepAlive(ctx, clients, { cycles = 2, from = null } = {}) {
  const { pingInterval, pingTimeout } = ctx.cfg;
  const deadline = Date.now() + (cycles + 2) * pingInterval + pingTimeout;
  const base = (c) => (from ? from.get(c) || 0 : 0);
  let rounds = 0;
  while (Date.now() < deadline) {
    rounds++;
    const round = Promise.all(clients.filter((c) => c.connected).map((c) => c.echo(5000)));
    await Promise.all([round, sleep(1000)]);
    if (rounds >= 2 && clients.every((c) => c.connected && c.pings - base(c) >= cycles)) break;
  }
  return { rounds, minPings: Math.min(...clients.map((c) => c.pings - base(c))) };
}

// One broadcast from node1 (its own port); returns {id, got: client -> times}. Waits for every
// connected client or the deadline, then half a second for duplicates.
async function broadcast(ctx, clients, { id, timeoutMs }) {
  const node = ctx.nodes[0];
  const t = Date.now();
  await harness.httpJson('POST', `http://127.0.0.1:${node.port}/__broadcast`, { id });
  try {
    await harness.waitUntil(`broadcast ${id}`, () => clients.every((c) => c.bcast.get(id) >= 1),
      { timeoutMs, intervalMs: 20 });
  } catch (_) { /* judged by the caller */ }
  const ms = Date.now() - t;
  await sleep(500);
  return { id, ms, from: node.name };
}

// The figures of one mode after a run: what the report table and the checks use.
function modeFigures(mode, clients, stats, before, tag, bc) {
  const g = `${tag}-${mode}`;
  const unknownNow = groupCounts(stats, 'session_unknown_by_group', g);
  const unknownBefore = groupCounts(before, 'session_unknown_by_group', g);
  const onNodes = groupCounts(stats, 'connected_by_group', g);
  const reached = clients.filter((c) => c.bcast.get(bc.id) === 1).length;
  return {
    mode,
    total: clients.length,
    connected: clients.filter((c) => c.connected && c.node).length,
    connectErrorClients: clients.filter((c) => c.connectErrors.length > 0).length,
    connectErrors: clients.reduce((a, c) => a + c.connectErrors.length, 0),
    disconnectClients: clients.filter((c) => c.disconnects.length > 0).length,
    sidUnknown: sum(unknownNow) - sum(unknownBefore),
    reached,
    duplicated: clients.filter((c) => c.bcast.get(bc.id) > 1).length,
    upgraded: clients.filter((c) => c.transport === 'websocket').length,
    onNodes,
    spread: spreadOf(onNodes),
  };
}

function printFigures(report, title, figures) {
  report.note(`${title}:`);
  report.note('mode       connected  connect_errors(clients/total)  disconnects  SID-unknown  broadcast  on websocket  spread on nodes');
  for (const f of figures) {
    report.note(`${f.mode.padEnd(10)} ${`${f.connected}/${f.total}`.padEnd(10)} ` +
      `${`${f.connectErrorClients}/${f.connectErrors}`.padEnd(30)} ${String(f.disconnectClients).padEnd(12)} ` +
      `${String(f.sidUnknown).padEnd(12)} ${`${f.reached}/${f.total}`.padEnd(10)} ${String(f.upgraded).padEnd(13)} ` +
      `${fmtCounts(f.onNodes)} (max/mean ${Number.isFinite(f.spread.ratio) ? f.spread.ratio.toFixed(3) : '-'})`);
  }
}

// ---------------------------------------------------------------- the runs

// Connect 3 x clientsPerMode clients through HAProxy, keep them through two ping cycles with
// acknowledged events, one broadcast; returns {groups, figures, all} for the caller's checks.
async function crowd(ctx, fleet, { tag, bcastTimeoutMs }) {
  const { report, cfg } = ctx;
  const before = await nodeStats(ctx);
  const t = Date.now();
  const lists = await Promise.all(MODES.map((mode, k) => connectMode(ctx, fleet.url, mode, { tag, idBase: k * cfg.clientsPerMode })));
  const groups = Object.fromEntries(MODES.map((m, k) => [m, lists[k]]));
  const all = lists.flat();
  try {
    await harness.waitUntil('every client to be welcomed by a node', () => all.every((c) => c.node), { timeoutMs: 5000 });
  } catch (_) { /* judged by the caller */ }
  report.note(`${all.length} clients settled in ${Date.now() - t} ms`);
  const afterConnect = MODES.map((m) => judgeClients(groups[m], { label: m }));
  const ka = await keepAlive(ctx, all);
  report.note(`keep-alive: ${ka.rounds} echo rounds, fewest pings seen by a client ${ka.minPings}`);
  const bc = await broadcast(ctx, all.filter((c) => c.connected), { id: `${tag}-bcast`, timeoutMs: bcastTimeoutMs });
  const stats = await nodeStats(ctx);
  const figures = MODES.map((m) => modeFigures(m, groups[m], stats, before, tag, bc));
  return { groups, all, figures, afterConnect, stats, bc };
}

// The negative control: the same fleet without a store. Polling and default clients must show
// failures; WebSocket-only clients (one TCP connection is the whole session) must not.
async function runControl(ctx, { thenIdle }) {
  const { report } = ctx;
  const fleet = await report.phase(`store off: ${ctx.cfg.instances} limpet instances behind HAProxy (round robin), no session store`,
    () => startFleet(ctx, { store: false, tag: 'off' }));
  let res = null;
  try {
    res = await report.phase(`store off: ${3 * ctx.cfg.clientsPerMode} clients through HAProxy (negative control)`,
      () => crowd(ctx, fleet, { tag: 'off', bcastTimeoutMs: 5000 }));
    printFigures(report, 'store off (negative control)', res.figures);
    for (const c of res.all) {
      if (c.connectErrors.length) { report.note(`e.g. ${firstErrors([c], 1)[0]}`); break; }
    }
    for (const f of res.figures.filter((x) => x.mode !== 'websocket')) {
      report.check(`control (store off): ${f.mode} clients fail across instances (the suite can fail)`,
        f.connectErrorClients > 0 || f.sidUnknown > 0,
        `${f.connected}/${f.total} connected, ${f.connectErrorClients} clients with connect_error, ${f.sidUnknown} "Session ID unknown"`);
    }
    const ws = res.groups.websocket;
    const wsFail = judgeClients(ws, { label: 'websocket' });
    report.check('control (store off): websocket-only clients connect and stay (one TCP connection, nothing to share)',
      wsFail.length === 0, wsFail.concat(firstErrors(ws)).join('; '));
  } finally {
    if (res) closeAll(res.all);
    await stopFleet(ctx, fleet, { label: 'control' });
  }
  // Sessions the control left half-open time out on the nodes; the next run starts clean.
  if (!thenIdle) return;
  await report.phase('wait for the nodes to be idle', () => harness.waitUntil('nodes to have no sessions left', async () => {
    const s = await nodeStats(ctx);
    return Object.values(s).every((x) => x.connected === 0 && x.engine_clients === 0);
  }, { timeoutMs: 2 * (ctx.cfg.pingInterval + ctx.cfg.pingTimeout) + 5000, intervalMs: 250 }));
}

// The checks every store-on crowd must pass.
function judgeStoreOn(ctx, res, label) {
  const { report } = ctx;
  for (const [k, m] of MODES.entries()) {
    const f = res.afterConnect[k];
    report.check(`${label}: ${res.groups[m].length} ${m} clients connect cleanly`, f.length === 0,
      f.concat(firstErrors(res.groups[m])).join('; '));
  }
  for (const m of MODES) {
    const list = res.groups[m];
    const minPings = Math.min(...list.map((c) => c.pings));
    const f = judgeClients(list, { label: m });
    report.check(`${label}: ${m} sessions live through ≥ 2 ping cycles with acknowledged events, no disconnect`,
      minPings >= 2 && f.length === 0 && list.every((c) => c.echoAcked >= 2),
      `fewest pings ${minPings}, ${list.reduce((a, c) => a + c.echoAcked, 0)} acks${f.length ? `; ${f.join('; ')}; ${firstErrors(list).join('; ')}` : ''}`);
  }
  const dflt = res.figures.find((f) => f.mode === 'default');
  report.check(`${label}: every default client upgraded to WebSocket`, dflt.upgraded === dflt.total,
    `${dflt.upgraded}/${dflt.total}`);
  const unknown = res.figures.reduce((a, f) => a + f.sidUnknown, 0);
  report.check(`${label}: zero "Session ID unknown" on the nodes`, unknown === 0,
    res.figures.map((f) => `${f.mode} ${f.sidUnknown}`).join(', '));
  const reached = res.figures.reduce((a, f) => a + f.reached, 0);
  const dup = res.figures.reduce((a, f) => a + f.duplicated, 0);
  report.check(`${label}: a broadcast from ${res.bc.from} reaches every client exactly once`,
    reached === res.all.length && dup === 0, `${reached}/${res.all.length} once in ${res.bc.ms} ms, ${dup} duplicated`);
  const perNode = {};
  for (const f of res.figures) for (const [n, v] of Object.entries(f.onNodes)) perNode[n] = (perNode[n] || 0) + v;
  const sp = spreadOf(perNode);
  report.check(`${label}: all ${res.all.length} sessions on the nodes, spread max/mean ≤ 1.2`,
    sp.total === res.all.length && sp.ratio <= 1.2, `${fmtCounts(perNode)} (max/mean ${sp.ratio.toFixed(3)})`);
}

async function runStoreOn(ctx) {
  const { report, cfg } = ctx;
  const fleet = await report.phase(`store on: ${cfg.instances} limpet instances sharing a Redis session store, behind HAProxy`,
    () => startFleet(ctx, { store: true, tag: 'on' }));
  let res = null;
  try {
    await checkStoreUp(ctx, fleet, 1, { label: 'store on', timeoutMs: 10000 });
    res = await report.phase(`store on: ${3 * cfg.clientsPerMode} clients through HAProxy`,
      () => crowd(ctx, fleet, { tag: 'on', bcastTimeoutMs: 10000 }));
    printFigures(report, 'store on', res.figures);
    judgeStoreOn(ctx, res, 'store on');
  } finally {
    if (res) closeAll(res.all);
    await stopFleet(ctx, fleet, { label: 'store on' });
  }
}

// Store on, then SIGKILL its redis-server under a connected crowd, then restart it.
async function runStoreKill(ctx) {
  const { report, cfg, group } = ctx;
  const fleet = await report.phase(`store on: ${cfg.instances} limpet instances sharing a Redis session store, behind HAProxy`,
    () => startFleet(ctx, { store: true, tag: 'kill' }));
  let res = null;
  const extra = [];
  try {
    await checkStoreUp(ctx, fleet, 1, { label: 'before the kill', timeoutMs: 10000 });
    res = await report.phase(`${3 * cfg.clientsPerMode} clients through HAProxy`,
      () => crowd(ctx, fleet, { tag: 'kill', bcastTimeoutMs: 10000 }));
    printFigures(report, 'store on, before the kill', res.figures);
    judgeStoreOn(ctx, res, 'before the kill');
    const established = res.all.filter((c) => c.connected);

    await report.phase('SIGKILL the session store\'s redis-server', async () => {
      const pingsAt = new Map(established.map((c) => [c, c.pings]));
      const acksAt = new Map(established.map((c) => [c, c.echoAcked]));
      const failsAt = new Map(established.map((c) => [c, c.echoFailures.length + c.disconnects.length]));
      await group.stop('redis-store', 'SIGKILL');
      report.note(`redis-server :${ctx.storePort} killed`);
      await checkStoreUp(ctx, fleet, 0, { label: 'store killed', timeoutMs: STORE_DOWN_DEADLINE_MS });
      const ka = await keepAlive(ctx, established, { cycles: 1, from: pingsAt });
      const bad = established.filter((c) => !c.connected || c.echoFailures.length + c.disconnects.length > failsAt.get(c) ||
        c.echoAcked <= acksAt.get(c) || c.pings - pingsAt.get(c) < 1);
      report.check(`store killed: ${established.length} established sessions keep working through ≥ 1 ping cycle ` +
        '(acknowledged events, nobody disconnected)', bad.length === 0,
      `${ka.rounds} echo rounds, fewest new pings ${ka.minPings}; ${bad.length} clients not ok` +
        (bad.length ? ` (${MODES.map((m) => `${m} ${bad.filter((c) => c.group.endsWith(m)).length}`).join(', ')}); ${firstErrors(bad).join('; ')}` : ''));
      const dead = fleet.instances.filter((lb) => !group.isRunning(lb.name));
      report.check('store killed: every limpet instance still running', dead.length === 0,
        dead.map((lb) => `${lb.name} exited ${JSON.stringify(group.children.get(lb.name).exitInfo)}`).join('; '));

      // New clients during the outage. WebSocket-only through HAProxy and polling straight to one
      // instance must connect (one instance sees the whole session); polling through HAProxy may
      // fail (fleet routing is degraded to local-only): its figures are reported, not judged.
      const before = await nodeStats(ctx);
      const once = { reconnection: false };
      const [ws, viaLb] = await Promise.all([
        connectMode(ctx, fleet.url, 'websocket', { tag: 'outage', n: 30, idBase: 10000, opts: once }),
        connectMode(ctx, fleet.url, 'polling', { tag: 'outage', n: 30, idBase: 10100, opts: once }),
      ]);
      const direct = await Promise.all(fleet.instances.map((lb, k) => connectMode(ctx, `http://127.0.0.1:${lb.port}`, 'polling',
        { tag: `outage-direct-${lb.instance}`, n: 20, idBase: 10200 + 100 * k, opts: once })));
      extra.push(...ws, ...viaLb, ...direct.flat());
      const fw = judgeClients(ws, { label: 'websocket' });
      report.check('store killed: 30 new websocket-only clients connect through HAProxy', fw.length === 0,
        fw.concat(firstErrors(ws)).join('; '));
      const fd = direct.flatMap((list, k) => judgeClients(list, { label: fleet.instances[k].name }));
      report.check(`store killed: 20 new polling clients straight to each instance connect (local routing)`, fd.length === 0,
        fd.concat(firstErrors(direct.flat())).join('; '));
      const after = await nodeStats(ctx);
      const unknown = sum(groupCounts(after, 'session_unknown_by_group', 'outage-polling')) -
        sum(groupCounts(before, 'session_unknown_by_group', 'outage-polling'));
      report.note(`store killed: new polling clients through HAProxy (degraded, not judged): ` +
        `${viaLb.filter((c) => c.connected).length}/${viaLb.length} connected, ` +
        `${viaLb.filter((c) => c.connectErrors.length).length} with connect_error, ${unknown} "Session ID unknown"`);
      closeAll(extra);
    });

    await report.phase('restart the session store\'s redis-server on the same port', async () => {
      harness.startRedis(group, { port: ctx.storePort, name: 'redis-store' });
      await harness.waitForRedis(ctx.storePort);
      await checkStoreUp(ctx, fleet, 1, { label: 'store restarted', timeoutMs: STORE_RECOVERY_DEADLINE_MS });
      const m0 = await instanceMetrics(fleet);
      const lists = await Promise.all(['polling', 'default'].map((mode, k) =>
        connectMode(ctx, fleet.url, mode, { tag: 'after', n: 60, idBase: 20000 + 100 * k })));
      const fresh = lists.flat();
      extra.push(...fresh);
      await Promise.all(fresh.filter((c) => c.connected).map((c) => c.echo(5000)));
      const f = ['polling', 'default'].flatMap((mode, k) => judgeClients(lists[k], { label: mode }));
      report.check('store restarted: 60 polling and 60 default new clients connect cleanly through HAProxy',
        f.length === 0, f.concat(firstErrors(fresh)).join('; '));
      const stats = await nodeStats(ctx);
      const unknown = sum(groupCounts(stats, 'session_unknown_by_group', 'after-polling')) +
        sum(groupCounts(stats, 'session_unknown_by_group', 'after-default'));
      report.check('store restarted: zero "Session ID unknown" for the new sessions', unknown === 0, `${unknown}`);
      const m1 = await instanceMetrics(fleet);
      const learned = fleet.instances.map((lb) => [lb.name,
        (m1[lb.name] === null ? NaN : metric(m1[lb.name], 'limpet_affinity_learned_total')) -
        (m0[lb.name] === null ? NaN : metric(m0[lb.name], 'limpet_affinity_learned_total'))]);
      report.check('store restarted: new sessions go through every instance (each learned handshakes)',
        learned.every(([, v]) => v > 0), learned.map(([n, v]) => `${n} +${v}`).join(' '));
      closeAll(fresh);
    });
    const gone = established.filter((c) => !c.connected || c.welcomes.length > 1);
    report.check('end: every session established before the kill is still connected, never reconnected',
      gone.length === 0, `${established.length - gone.length}/${established.length}${gone.length ? `; ${firstErrors(gone).join('; ')}` : ''}`);
  } finally {
    if (res) closeAll(res.all);
    closeAll(extra);
    await stopFleet(ctx, fleet, { label: 'store kill' });
  }
}

async function main() {
  const cfg = readConfig(process.argv.slice(2));
  const report = new Report('e2e-scale');
  const dir = harness.makeTempDir('limpet-e2e-scale-');
  const group = new harness.ProcessGroup(dir);
  const ctx = { cfg, report, dir, group, nodes: [], redisUrl: '', storePort: 0 };
  console.log(`e2e-scale: ${cfg.instances} limpet instances (${cfg.limpetBin}), ` +
    `${cfg.control ? 'store off (control), then store on' : `store ${cfg.store ? 'on' : 'off (negative control)'}`}` +
    `${cfg.storeKill ? ', store kill' : ''}, ${cfg.clientsPerMode} clients per mode, logs in ${dir}`);
  try {
    await report.phase('start redis-server (adapter) and three Socket.IO nodes', async () => {
      report.note(await harness.startSocketIoCluster(group, ctx, cfg));
    });
    if (cfg.control || !cfg.store) await runControl(ctx, { thenIdle: cfg.store });
    if (cfg.store) await (cfg.storeKill ? runStoreKill(ctx) : runStoreOn(ctx));
  } catch (err) {
    report.check('suite ran to the end', false, err && err.stack ? err.stack : String(err));
  }

  const ok = report.summary();
  if (!ok) {
    for (const name of group.children.keys()) {
      if (!/-lb-\d+$/.test(name)) continue;
      const tail = group.tail(name, 15);
      if (tail) console.log(`\n--- last lines of ${name}'s log (${dir}/${name}.log)\n${tail}`);
    }
  }
  await group.stopAll(3000);
  if (ok && !process.env.E2E_KEEP_LOGS) fs.rmSync(dir, { recursive: true, force: true });
  else console.log(`logs kept in ${dir}`);
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(`e2e-scale: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
