// The scenarios of issue 3, each a function of the suite context:
//   ctx = { group, dir, cfg, report, redisUrl, nodes: [{name, port}], url (front under test),
//           tls ({cert, key, ca} of the TLS run, else null), clientOpts (extra io() options:
//           the CA to trust in the TLS run) }
// Scenarios assert through ctx.report and return what later scenarios need. Node counters are
// always read from the nodes' own ports, never through the proxy under test.
'use strict';

const net = require('net');
const tls = require('tls');
const { connectMany, closeAll, sleep } = require('./clients');
const { frontUrl, httpJson, startFront, startNode, waitUntil, freePort } = require('./harness');

// ---------------------------------------------------------------- node counters

async function nodeStats(ctx, { only } = {}) {
  const out = {};
  for (const n of ctx.nodes) {
    if (only && !only.includes(n.name)) continue;
    if (!ctx.group.isRunning(n.name)) continue;
    out[n.name] = await httpJson('GET', `http://127.0.0.1:${n.port}/__stats`);
  }
  return out;
}

function sumField(stats, field) {
  return Object.values(stats).reduce((a, s) => a + (s[field] || 0), 0);
}

function spreadOf(counts) {
  const values = Object.values(counts);
  const total = values.reduce((a, b) => a + b, 0);
  const mean = total / values.length;
  const max = Math.max(...values);
  return { total, mean, max, ratio: mean > 0 ? max / mean : Infinity };
}

function fmtCounts(counts) {
  return Object.entries(counts).map(([k, v]) => `${k}=${v}`).join(' ');
}

async function busiestNode(ctx) {
  const stats = Object.values(await nodeStats(ctx));
  stats.sort((a, b) => b.connected - a.connected || a.name.localeCompare(b.name));
  return stats[0].name;
}

// ---------------------------------------------------------------- judging clients

// Everything that must not happen to a healthy session, as a list of failure strings
// (empty = clean). The negative control uses the same judge and expects a non-empty list.
function judgeClients(clients, { label }) {
  const failures = [];
  const bad = (what, list) => {
    if (list.length === 0) return;
    const ex = list.slice(0, 3).map((c) => `#${c.id}`).join(', ');
    failures.push(`${label}: ${list.length}/${clients.length} ${what} (e.g. ${ex})`);
  };
  bad('not connected', clients.filter((c) => !c.connected));
  bad('connected but not welcomed by a node', clients.filter((c) => c.connected && !c.node));
  bad('with connect_error', clients.filter((c) => c.connectErrors.length > 0));
  bad('with disconnect', clients.filter((c) => c.disconnects.length > 0));
  bad('with upgradeError', clients.filter((c) => c.upgradeErrors.length > 0));
  bad('with unacknowledged/bad echo', clients.filter((c) => c.echoFailures.length > 0));
  bad('reconnected (more than one welcome)', clients.filter((c) => c.welcomes.length > 1));
  return failures;
}

function firstErrors(clients, n = 3) {
  const msgs = [];
  for (const c of clients) {
    for (const e of c.connectErrors) msgs.push(`#${c.id} connect_error: ${e.message}`);
    for (const d of c.disconnects) msgs.push(`#${c.id} disconnect: ${d.reason} (on ${d.node})`);
    for (const e of c.upgradeErrors) msgs.push(`#${c.id} upgradeError: ${e.message}`);
    for (const e of c.echoFailures) msgs.push(`#${c.id} echo: ${e.message}`);
    if (msgs.length >= n) break;
  }
  return msgs.slice(0, n);
}

// ---------------------------------------------------------------- building blocks

function connectGroup(ctx, url, group, idBase) {
  const transports = { polling: ['polling'], websocket: ['websocket'], default: undefined }[group];
  return connectMany(url, ctx.cfg.clientsPerGroup, {
    group, transports, idBase, concurrency: ctx.cfg.concurrency, timeoutMs: 30000, extraOpts: ctx.clientOpts,
  });
}

// Keeps the clients' sessions alive through at least `cycles` Engine.IO ping cycles while each
// client sends one acknowledged "echo" per second. Ends when every client saw the pings or at a
// deadline of (cycles + 2) ping intervals plus the ping timeout.
async function keepAlive(ctx, clients, { cycles = 2 } = {}) {
  const { pingInterval, pingTimeout } = ctx.cfg;
  const deadline = Date.now() + (cycles + 2) * pingInterval + pingTimeout;
  let rounds = 0;
  while (Date.now() < deadline) {
    rounds++;
    const round = Promise.all(clients.filter((c) => c.connected).map((c) => c.echo(5000)));
    await Promise.all([round, sleep(1000)]);
    if (clients.every((c) => c.connected && c.pings >= cycles)) break;
  }
  return { rounds };
}

// Emits one broadcast from `fromNode` (POST to the node's own port; the Redis adapter carries it
// to the other nodes) and checks that each of `clients` gets it exactly once.
async function broadcastOnce(ctx, clients, { id, fromNode, label }) {
  const node = ctx.nodes.find((n) => n.name === fromNode);
  const t = Date.now();
  await httpJson('POST', `http://127.0.0.1:${node.port}/__broadcast`, { id });
  const got = () => clients.filter((c) => (c.bcast.get(id) || 0) >= 1).length;
  try {
    await waitUntil(`broadcast ${id} at ${clients.length} clients`, () => got() === clients.length,
      { timeoutMs: 10000, intervalMs: 20 });
  } catch (_) { /* judged below */ }
  const ms = Date.now() - t;
  // Duplicates would arrive within the same adapter round trip: give them time to show up.
  await sleep(500);
  const missing = clients.filter((c) => !c.bcast.get(id));
  const dup = clients.filter((c) => (c.bcast.get(id) || 0) > 1);
  const byNode = {};
  for (const c of missing) {
    const k = `${c.group}@${c.node}${c.connected ? '' : '(down)'}`;
    byNode[k] = (byNode[k] || 0) + 1;
  }
  ctx.report.check(`${label}: broadcast "${id}" from ${fromNode} reaches every client exactly once`,
    missing.length === 0 && dup.length === 0,
    `${clients.length - missing.length}/${clients.length} received in ${ms} ms, ${dup.length} duplicated` +
    (missing.length ? `, missing by group@node: ${fmtCounts(byNode)}` : ''));
}

// ---------------------------------------------------------------- scenarios

// Negative control: limpet as a plain round robin with no Engine.IO awareness must break the
// polling scenario. If it does not, the suite could not detect the bug it exists for.
async function scenarioNegativeControl(ctx) {
  const { report, cfg } = ctx;
  const port = await freePort();
  const kind = cfg.front === 'limpet' ? 'limpet' : 'nginx-rr';
  const name = 'limpet-roundrobin';
  await startFront(ctx.group, {
    kind, name, dir: ctx.dir, listenPort: port, backends: ctx.nodes, limpetBin: cfg.limpetBin,
    balance: 'round_robin', engineioPaths: [], tls: ctx.tls,
  });
  const before = await nodeStats(ctx);
  const url = frontUrl(port, ctx.tls);
  const clients = await connectGroup(ctx, url, 'polling', 100000);
  await keepAlive(ctx, clients);
  const after = await nodeStats(ctx);
  const unknown = sumField(after, 'session_unknown_errors') - sumField(before, 'session_unknown_errors');
  const failures = judgeClients(clients, { label: 'round robin' });
  closeAll(clients);
  await ctx.group.stop(name);
  report.note(`round robin (${kind}): Session ID unknown on nodes: ${unknown}; ` +
    `${clients.filter((c) => c.connectErrors.length).length} clients with connect_error, ` +
    `${clients.filter((c) => c.disconnects.length).length} with disconnect`);
  for (const f of failures) report.note(f);
  for (const m of firstErrors(clients)) report.note(m);
  report.check(`negative control: polling through plain round robin${ctx.tls ? ' (TLS listener)' : ''} fails (the suite can fail)`,
    unknown > 0 || failures.length > 0,
    `${unknown} "Session ID unknown", ${failures.length} client failure kinds`);
}

// After the control, sessions it left half-open time out on the nodes (pingInterval +
// pingTimeout); the spread must be measured on a clean slate.
async function waitNodesIdle(ctx) {
  const timeoutMs = 2 * (ctx.cfg.pingInterval + ctx.cfg.pingTimeout) + 5000;
  await waitUntil('nodes to have no sessions left', async () => {
    const s = await nodeStats(ctx);
    return Object.values(s).every((x) => x.connected === 0 && x.engine_clients === 0);
  }, { timeoutMs, intervalMs: 250 });
}

// 300 polling-only, 300 default-transport and 300 WebSocket-only clients, all at once.
async function scenarioConnect(ctx) {
  const { report, cfg } = ctx;
  const n = cfg.clientsPerGroup;
  const t = Date.now();
  const [polling, dflt, ws] = await Promise.all([
    connectGroup(ctx, ctx.url, 'polling', 0),
    connectGroup(ctx, ctx.url, 'default', n),
    connectGroup(ctx, ctx.url, 'websocket', 2 * n),
  ]);
  const all = [...polling, ...dflt, ...ws];
  try {
    await waitUntil('every client to be welcomed by a node', () => all.every((c) => c.node),
      { timeoutMs: 5000 });
  } catch (_) { /* judged below */ }
  report.note(`${all.length} clients settled in ${Date.now() - t} ms`);
  for (const [label, list] of [['polling', polling], ['default', dflt], ['websocket', ws]]) {
    const f = judgeClients(list, { label });
    report.check(`connect: ${list.length} ${label} clients connect cleanly`, f.length === 0,
      f.length ? `${f.join('; ')}; ${firstErrors(list).join('; ')}` : '');
  }
  return { polling, dflt, ws, all };
}

async function scenarioPollingKeepAlive(ctx, groups) {
  const { report, cfg } = ctx;
  const { rounds } = await keepAlive(ctx, groups.polling);
  const minPings = Math.min(...groups.polling.map((c) => c.pings));
  const acked = groups.polling.reduce((a, c) => a + c.echoAcked, 0);
  report.check(`polling: sessions live through ≥ 2 ping cycles (pingInterval ${cfg.pingInterval} ms)`,
    minPings >= 2, `fewest pings seen by a client: ${minPings}, ${rounds} echo rounds`);
  const f = judgeClients(groups.polling, { label: 'polling' });
  report.check('polling: every acknowledged event acked by the session\'s node, no disconnect',
    f.length === 0 && groups.polling.every((c) => c.echoAcked >= 2),
    `${acked} acks; ${f.join('; ')} ${firstErrors(groups.polling).join('; ')}`.trim());
}

async function scenarioTransports(ctx, groups) {
  const { report } = ctx;
  try {
    await waitUntil('default-transport clients to finish the upgrade to WebSocket',
      () => groups.dflt.every((c) => c.transport === 'websocket'), { timeoutMs: 10000 });
  } catch (_) { /* judged below */ }
  const notUpgraded = groups.dflt.filter((c) => c.transport !== 'websocket');
  const upgradeErrors = groups.all.filter((c) => c.upgradeErrors.length > 0);
  report.check('default transports: every client upgraded to WebSocket, no upgradeError',
    notUpgraded.length === 0 && upgradeErrors.length === 0,
    `${groups.dflt.length - notUpgraded.length}/${groups.dflt.length} on websocket, ` +
    `${upgradeErrors.length} upgradeErrors${upgradeErrors.length ? ': ' + upgradeErrors[0].upgradeErrors[0].message : ''}`);
  const wsNot = groups.ws.filter((c) => c.transport !== 'websocket');
  const pollNot = groups.polling.filter((c) => c.transport !== 'polling');
  report.check('websocket-only and polling-only clients stay on their transport',
    wsNot.length === 0 && pollNot.length === 0, `${wsNot.length} ws off websocket, ${pollNot.length} polling off polling`);
  // Echo once over the upgraded and WebSocket-only sessions too.
  const others = [...groups.dflt, ...groups.ws];
  await Promise.all(others.map((c) => c.echo(5000)));
  const f = judgeClients(others, { label: 'default+websocket' });
  report.check('default and websocket clients: acknowledged events, no disconnect', f.length === 0,
    f.join('; '));
}

// Node-side truth: no "Session ID unknown" anywhere, and an even spread of sessions.
async function scenarioNodeCounters(ctx, groups, baseline) {
  const { report } = ctx;
  const stats = await nodeStats(ctx);
  const unknown = sumField(stats, 'session_unknown_errors') - sumField(baseline, 'session_unknown_errors');
  const errs = {};
  for (const s of Object.values(stats)) {
    for (const [k, v] of Object.entries(s.connection_errors)) errs[`${s.name}.${k}`] = v;
  }
  report.check('nodes: zero "Session ID unknown" errors', unknown === 0,
    `${unknown} new; all connection_error counters: ${fmtCounts(errs) || 'none'}`);
  if (ctx.cfg.front === 'limpet') checkHealthSessions(report, stats);
  const counts = {};
  for (const s of Object.values(stats)) counts[s.name] = s.connected;
  const sp = spreadOf(counts);
  report.check(`nodes: all ${groups.all.length} sessions present on the nodes`, sp.total === groups.all.length,
    `${sp.total} sockets on nodes`);
  const clientSide = {};
  for (const c of groups.all) clientSide[c.node] = (clientSide[c.node] || 0) + 1;
  report.note(`client-side view of the spread: ${fmtCounts(clientSide)}`);
  if (ctx.cfg.checkSpread) {
    report.check('nodes: sessions spread evenly, max/mean ≤ 1.2', sp.ratio <= 1.2,
      `${fmtCounts(counts)} (max/mean ${sp.ratio.toFixed(3)})`);
  } else {
    report.note(`spread not checked for front ${ctx.cfg.front}: ${fmtCounts(counts)}`);
  }
  // Every session of the run reached its node through the listener under test: limpet says
  // which protocol the client spoke in X-Forwarded-Proto ("https" behind the TLS listener).
  if (ctx.cfg.front === 'limpet') {
    const want = ctx.tls ? 'https' : 'http';
    const byProto = {};
    for (const [name, s] of Object.entries(stats)) {
      for (const [k, v] of Object.entries(s.handshakes_by_proto || {})) {
        const b = (baseline[name] && baseline[name].handshakes_by_proto && baseline[name].handshakes_by_proto[k]) || 0;
        if (v - b) byProto[k] = (byProto[k] || 0) + v - b;
      }
    }
    const total = Object.values(byProto).reduce((a, b) => a + b, 0);
    report.check(`nodes: every new session arrived with X-Forwarded-Proto ${want}`,
      total === groups.all.length && byProto[want] === total, `handshakes by X-Forwarded-Proto: ${fmtCounts(byProto) || 'none'}`);
  }
  const upgrades = sumField(stats, 'upgrade_count') - sumField(baseline, 'upgrade_count');
  report.note(`node-side: ${upgrades} upgrades, transports ` +
    Object.values(stats).map((s) => `${s.name}{polling=${s.transports.polling} websocket=${s.transports.websocket}}`).join(' '));
}

// ---------------------------------------------------------------- TLS listener

// One TLS handshake with 127.0.0.1:port (no SNI: an IP address). Resolves with what the client
// saw: {ok, protocol, alpn, code} — code is Node's verification error when it refused the peer.
function tlsProbe(port, { ca } = {}) {
  return new Promise((resolve) => {
    const sock = tls.connect({ host: '127.0.0.1', port, ca, ALPNProtocols: ['http/1.1'], timeout: 5000 });
    const done = (r) => { sock.destroy(); resolve(r); };
    sock.on('secureConnect', () => done({ ok: sock.authorized, protocol: sock.getProtocol(), alpn: sock.alpnProtocol }));
    sock.on('error', (err) => done({ ok: false, code: err.code || err.message }));
    sock.on('timeout', () => done({ ok: false, code: 'timeout' }));
  });
}

// Plain HTTP to the TLS port: resolves with the bytes that came back ('' if none).
function plainHttpProbe(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let got = Buffer.alloc(0);
    const done = () => { sock.destroy(); resolve(got.toString('latin1')); };
    sock.setTimeout(3000, done);
    sock.on('connect', () => sock.write('GET /__stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'));
    sock.on('data', (d) => { got = Buffer.concat([got, d]); });
    sock.on('end', done);
    sock.on('error', done);
    sock.on('close', done);
  });
}

// The TLS run's own controls, on the listener the scenarios then use: its certificate verifies
// against the test CA for 127.0.0.1 and not without it; plain HTTP is not served; and
// socket.io clients that do not trust the CA never get a session (nothing reaches the nodes).
async function scenarioTlsListener(ctx) {
  const { report } = ctx;
  const port = Number(new URL(ctx.url).port);
  const trusted = await tlsProbe(port, { ca: ctx.tls.ca });
  report.check('tls: the listener\'s certificate verifies against the test CA for 127.0.0.1',
    trusted.ok, JSON.stringify(trusted));
  const untrusted = await tlsProbe(port);
  report.check('tls: without the test CA, verification fails', !untrusted.ok && !!untrusted.code,
    JSON.stringify(untrusted));
  const plain = await plainHttpProbe(port);
  // limpet answers it 400 (like nginx's "plain HTTP request was sent to HTTPS port"); what
  // matters is that it is not proxied.
  report.check('tls: a plain-HTTP request to the TLS listener is not served', !/^HTTP\/1\.[01] [23]/.test(plain),
    plain ? `answer: ${JSON.stringify(plain.split('\r\n')[0])}` : 'no bytes');

  const before = await nodeStats(ctx);
  const n = 20;
  // One attempt each: a refused client must not retry in a loop. E2E_HTTP2=1: over HTTP/2 too.
  const opts = { reconnection: false, http2: ctx.cfg.http2 };
  const [poll, ws] = await Promise.all([
    connectMany(ctx.url, n, { group: 'untrusted-polling', transports: ['polling'], idBase: 300000, extraOpts: opts, timeoutMs: 15000 }),
    connectMany(ctx.url, n, { group: 'untrusted-websocket', transports: ['websocket'], idBase: 300000 + n, extraOpts: opts, timeoutMs: 15000 }),
  ]);
  const all = [...poll, ...ws];
  const after = await nodeStats(ctx);
  closeAll(all);
  const connected = all.filter((c) => c.connected || c.node).length;
  const refused = all.filter((c) => c.connectErrors.length > 0).length;
  const handshakes = sumField(after, 'handshakes') - sumField(before, 'handshakes');
  // Refused for the right reason: each client's error names the certificate check.
  const errors = all.flatMap((c) => c.connectErrors.map((e) => `${c.group}: ${e.message}`));
  const otherErrors = errors.filter((m) => !/certificate|UNABLE_TO_VERIFY/i.test(m));
  const examples = [...new Set(errors)].slice(0, 2).map((m) => `"${m}"`).join(', ');
  report.check(`tls: ${all.length} socket.io clients (polling, websocket) that do not trust the CA are refused`,
    connected === 0 && refused === all.length && handshakes === 0 && otherErrors.length === 0,
    `${connected} connected, ${refused} with connect_error (${otherErrors.length} not a certificate error), ` +
    `${handshakes} handshakes on the nodes; e.g. ${examples || 'none'}`);
}

// limpet's Engine.IO health checks: every node answered some, and each check closed the session
// its handshake opened (close packet: "transport close"), so checks leave no sessions behind. One
// check per node may be between its handshake and its close packet right now.
function checkHealthSessions(report, stats) {
  const bad = [];
  const seen = [];
  for (const s of Object.values(stats)) {
    const closes = s.health_check_closes || {};
    const closed = closes['transport close'] || 0;
    const other = Object.entries(closes).filter(([k]) => k !== 'transport close');
    seen.push(`${s.name}: ${s.health_checks} checks, closes ${fmtCounts(closes) || 'none'}`);
    if (!(s.health_checks >= 2) || closed < s.health_checks - 1 || other.length) bad.push(s.name);
  }
  report.check('health: Engine.IO checks reach every node and close the sessions they open', bad.length === 0,
    seen.join('; '));
}

// What limpet logged about a node's health ("down: ..." / "up: ..."), for the kill and restart checks.
function healthLog(ctx, node, state) {
  const re = new RegExp(`backend ${node} \\(\\S+\\) of upstream io is ${state}: ([^\\n]*)`);
  const m = re.exec(ctx.group.tail('limpet', 100000));
  return m ? m[1] : null;
}

// SIGKILL one node: its clients must come back on the survivors within 10 s, nobody else may
// notice, and a broadcast must reach everyone again.
async function scenarioKillNode(ctx, groups, { victim, broadcastFrom }) {
  const { report } = ctx;
  const victims = groups.all.filter((c) => c.node === victim);
  const others = groups.all.filter((c) => c.node !== victim);
  const othersDisconnectsBefore = others.reduce((a, c) => a + c.disconnects.length, 0);
  report.note(`${victim} holds ${victims.length} sessions; killing it with SIGKILL`);
  const before = await nodeStats(ctx);
  const t0 = Date.now();
  await ctx.group.stop(victim, 'SIGKILL');
  const back = (c) => c.connected && c.welcomes.length > 0 &&
    c.welcomes[c.welcomes.length - 1].at > t0 && c.node !== victim;
  try {
    await waitUntil(`clients of ${victim} to reconnect to the survivors`, () => victims.every(back),
      { timeoutMs: 20000, intervalMs: 50 });
  } catch (_) { /* judged below */ }
  const times = victims.filter(back).map((c) => c.welcomes[c.welcomes.length - 1].at - t0).sort((a, b) => a - b);
  const slowest = times.length ? times[times.length - 1] : NaN;
  const ok10 = times.filter((ms) => ms <= 10000).length;
  report.check(`kill: all ${victims.length} clients of ${victim} reconnect to survivors within 10 s`,
    victims.length > 0 && ok10 === victims.length,
    `${ok10}/${victims.length} within 10 s; median ${times[Math.floor(times.length / 2)]} ms, slowest ${slowest} ms; ` +
    `${victims.filter((c) => !back(c)).length} still out` +
    (victims.some((c) => !back(c)) ? `; ${firstErrors(victims.filter((c) => !back(c))).join('; ')}` : ''));
  const newHome = {};
  for (const c of victims) newHome[c.node] = (newHome[c.node] || 0) + 1;
  report.note(`victims now on: ${fmtCounts(newHome)}`);
  const othersDisconnects = others.reduce((a, c) => a + c.disconnects.length, 0) - othersDisconnectsBefore;
  report.check(`kill: clients of the surviving nodes keep their sessions`, othersDisconnects === 0,
    `${othersDisconnects} disconnects among ${others.length}` +
    (othersDisconnects ? `; ${firstErrors(others.filter((c) => c.disconnects.length)).join('; ')}` : ''));
  const stats = await nodeStats(ctx);
  // A request of a dead node's session may be placed on a survivor and get "Session ID unknown"
  // (design §5): allowed here, and reported, since the client then starts a fresh session.
  const survivorsBefore = Object.fromEntries(Object.entries(before).filter(([k]) => k !== victim));
  report.note(`"Session ID unknown" on survivors during the kill: ` +
    `${sumField(stats, 'session_unknown_errors') - sumField(survivorsBefore, 'session_unknown_errors')}`);
  const counts = {};
  for (const s of Object.values(stats)) counts[s.name] = s.connected;
  const sp = spreadOf(counts);
  if (ctx.cfg.checkSpread) {
    report.check('kill: the reconnect burst spreads over the survivors, max/mean ≤ 1.2', sp.ratio <= 1.2,
      `${fmtCounts(counts)} (max/mean ${sp.ratio.toFixed(3)})`);
  } else {
    report.note(`survivors: ${fmtCounts(counts)}`);
  }
  if (ctx.cfg.front === 'limpet') {
    const why = healthLog(ctx, victim, 'down');
    report.check(`kill: limpet marks ${victim} down and says why`, why !== null, why || 'no "is down" line in its log');
  }
  await broadcastOnce(ctx, groups.all, { id: 'after-kill', fromNode: broadcastFrom, label: 'kill' });
}

// Restart the killed node with the same name and port: new sessions must reach it again, and it
// must rejoin the adapter (its broadcast reaches everyone).
async function scenarioRestartNode(ctx, groups, { victim }) {
  const { report, cfg } = ctx;
  const node = ctx.nodes.find((n) => n.name === victim);
  const disconnectsBefore = groups.all.reduce((a, c) => a + c.disconnects.length, 0);
  await startNode(ctx.group, { ...node, redisUrl: ctx.redisUrl, pingInterval: cfg.pingInterval, pingTimeout: cfg.pingTimeout });
  const t0 = Date.now();
  const restartedAt = t0;
  let landedAt = NaN;
  const fresh = [];
  let landed = 0;
  let batches = 0;
  while (Date.now() - t0 < 20000) {
    batches++;
    const batch = await connectMany(ctx.url, 30, {
      group: 'fresh', idBase: 200000 + fresh.length, concurrency: 30, timeoutMs: 10000, extraOpts: ctx.clientOpts,
    });
    fresh.push(...batch);
    await waitUntil('fresh clients to be welcomed', () => batch.every((c) => c.node || c.connectErrors.length),
      { timeoutMs: 3000 }).catch(() => {});
    landed = fresh.filter((c) => c.node === victim).length;
    if (landed > 0) {
      landedAt = Date.now();
      break;
    }
    await sleep(1000);
  }
  const byNode = {};
  for (const c of fresh) byNode[c.node] = (byNode[c.node] || 0) + 1;
  report.check(`restart: new sessions reach the restarted ${victim}`, landed > 0,
    `after ${Date.now() - t0} ms, ${batches} batch(es): ${fmtCounts(byNode)}`);
  if (ctx.cfg.front === 'limpet') {
    const why = healthLog(ctx, victim, 'up');
    report.check(`restart: limpet's health checks mark ${victim} up again`, why !== null && /checks passed/.test(why),
      why || 'no "is up" line in its log');
  }
  const f = judgeClients(fresh, { label: 'fresh' });
  report.check('restart: fresh clients connect cleanly', f.length === 0, f.join('; '));
  // The returning node must not pull existing sessions back: affinity, not a hash, decides.
  const moved = groups.all.reduce((a, c) => a + c.disconnects.length, 0) - disconnectsBefore;
  if (moved) {
    // What a failure needs: when (relative to the node's restart), which group and node, why;
    // and the nodes' own view.
    const hit = groups.all.filter((c) => c.disconnects.length && c.disconnects[c.disconnects.length - 1].at >= restartedAt);
    const byKey = {};
    for (const c of hit) {
      const d = c.disconnects[c.disconnects.length - 1];
      const k = `${c.group}@${d.node}:${d.reason}${c.welcomes.length > 1 ? '(reconnected before)' : ''}`;
      byKey[k] = (byKey[k] || 0) + 1;
    }
    const at = hit.map((c) => c.disconnects[c.disconnects.length - 1].at - restartedAt).sort((x, y) => x - y);
    report.note(`disconnects after the restart: ${fmtCounts(byKey)}; at +${at[0]}..+${at[at.length - 1]} ms ` +
      `after ${victim} was up (fresh batches: ${batches}, first one on ${victim} at +${landedAt - restartedAt} ms)`);
    const st = await nodeStats(ctx);
    for (const x of Object.values(st)) {
      report.note(`${x.name}: connection_errors ${JSON.stringify(x.connection_errors)} disconnect_reasons ${JSON.stringify(x.disconnect_reasons)}`);
    }
  }
  report.check('restart: existing sessions undisturbed by the node coming back', moved === 0,
    `${moved} disconnects among ${groups.all.length}` +
    (moved ? `; ${firstErrors(groups.all.filter((c) => c.disconnects.length > 0 && c.disconnects[c.disconnects.length - 1].at >= t0)).join('; ')}` : ''));
  await broadcastOnce(ctx, [...groups.all, ...fresh], { id: 'after-restart', fromNode: victim, label: 'restart' });
  return fresh;
}

module.exports = {
  broadcastOnce,
  busiestNode,
  judgeClients,
  nodeStats,
  scenarioConnect,
  scenarioKillNode,
  scenarioNegativeControl,
  scenarioNodeCounters,
  scenarioPollingKeepAlive,
  scenarioRestartNode,
  scenarioTlsListener,
  scenarioTransports,
  waitNodesIdle,
};
