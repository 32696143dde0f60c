// Process management for the e2e suite: free ports, child processes with logs, deadlines.
// Every child is registered with the ProcessGroup, which kills what is left when the suite
// exits for any reason (normal end, failed assertion, uncaught error, SIGINT/SIGTERM), so a
// failed run never leaves a redis-server, a node or a limpet behind holding ports.
'use strict';

const { spawn, execFileSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const https = require('https');
const net = require('net');
const os = require('os');
const path = require('path');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Ask the OS for a free port on loopback. Something else could take it before the child binds,
// but on a test machine that race is rare and shows up as a clear "address in use" in the log.
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Polls `check` (sync or async, truthy = done) until it holds or the deadline passes.
// Errors thrown by `check` count as "not yet" (a server still starting refuses connections).
async function waitUntil(what, check, { timeoutMs = 10000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastErr = null;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= deadline) {
      const why = lastErr ? ` (last error: ${lastErr.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await sleep(intervalMs);
  }
}

// Minimal HTTP client for the nodes' control endpoints. Uses node's own http module with no
// keep-alive so that each call is independent of the proxy under test. An https:// URL is
// verified against `ca` (PEM) when given, else against Node's default trust store.
function httpJson(method, url, body, { timeoutMs = 3000, ca } = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const secure = url.startsWith('https:');
    const req = (secure ? https : http).request(url, {
      method,
      agent: false,
      timeout: timeoutMs,
      ...(secure && ca ? { ca } : {}),
      headers: data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {},
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        if (res.statusCode < 200 || res.statusCode >= 300) {
          reject(new Error(`${method} ${url}: HTTP ${res.statusCode} ${text.slice(0, 200)}`));
          return;
        }
        try {
          resolve(JSON.parse(text));
        } catch (err) {
          reject(new Error(`${method} ${url}: bad JSON: ${text.slice(0, 200)}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

// One unlabelled sample of limpet's /metrics on its admin port (0 when absent).
function limpetMetric(adminPort, name, { timeoutMs = 3000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(`http://127.0.0.1:${adminPort}/metrics`, { agent: false, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        const m = text.match(new RegExp(`^${name} (\\S+)$`, 'm'));
        resolve(m ? Number(m[1]) : 0);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`/metrics on ${adminPort}: timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

class ProcessGroup {
  constructor(logDir) {
    this.logDir = logDir;
    this.children = new Map();  // name -> { child, logFile, exited }
    this.exitHooked = false;
  }

  // Starts `cmd args`, stdout+stderr appended to <logDir>/<name>.log. Returns the record;
  // `record.exited` resolves with {code, signal} when the process ends.
  spawn(name, cmd, args, { env, cwd } = {}) {
    this.hookExit();
    const logFile = path.join(this.logDir, `${name}.log`);
    const out = fs.openSync(logFile, 'a');
    fs.writeSync(out, `--- ${new Date().toISOString()} ${cmd} ${args.join(' ')}\n`);
    const child = spawn(cmd, args, {
      cwd,
      env: { ...process.env, ...(env || {}) },
      stdio: ['ignore', out, out],
    });
    fs.closeSync(out);
    const rec = { name, child, logFile, exitInfo: null };
    rec.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        rec.exitInfo = { code, signal };
        resolve(rec.exitInfo);
      });
      child.on('error', (err) => {
        rec.exitInfo = { code: -1, signal: null, error: err.message };
        resolve(rec.exitInfo);
      });
    });
    this.children.set(name, rec);
    return rec;
  }

  isRunning(name) {
    const rec = this.children.get(name);
    return !!rec && rec.exitInfo === null;
  }

  // Sends `signal` and waits (bounded) for the exit; escalates to SIGKILL past the deadline.
  async stop(name, signal = 'SIGTERM', timeoutMs = 5000) {
    const rec = this.children.get(name);
    if (!rec || rec.exitInfo) return rec ? rec.exitInfo : null;
    try { rec.child.kill(signal); } catch (_) { /* already gone */ }
    const info = await Promise.race([rec.exited, sleep(timeoutMs).then(() => null)]);
    if (info) return info;
    try { rec.child.kill('SIGKILL'); } catch (_) { /* already gone */ }
    return rec.exited;
  }

  async stopAll(timeoutMs = 5000) {
    await Promise.all([...this.children.keys()].map((n) => this.stop(n, 'SIGTERM', timeoutMs)));
  }

  // Last lines of a child's log, for failure reports.
  tail(name, lines = 30) {
    const rec = this.children.get(name);
    if (!rec) return '';
    try {
      const text = fs.readFileSync(rec.logFile, 'utf8').trimEnd().split('\n');
      return text.slice(-lines).join('\n');
    } catch (_) {
      return '';
    }
  }

  killAllNow() {
    for (const rec of this.children.values()) {
      if (rec.exitInfo === null) {
        try { rec.child.kill('SIGKILL'); } catch (_) { /* already gone */ }
      }
    }
  }

  hookExit() {
    if (this.exitHooked) return;
    this.exitHooked = true;
    // 'exit' handlers must be synchronous: SIGKILL is the only thing we can do there.
    process.on('exit', () => this.killAllNow());
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
      process.on(sig, () => {
        console.error(`\ne2e: ${sig}: stopping child processes`);
        this.killAllNow();
        process.exit(130);
      });
    }
  }
}

function makeTempDir(prefix = 'limpet-e2e-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// `name` names the child and its log: run_scale.js runs a second one as the session store.
function startRedis(group, { port, name = 'redis' }) {
  const rec = group.spawn(name, 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no', '--daemonize', 'no',
  ]);
  return rec;
}

async function waitForRedis(port, timeoutMs = 10000) {
  // A raw PING keeps the harness independent of the redis client library the nodes use.
  await waitUntil(`redis-server on port ${port}`, () => new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    sock.setTimeout(1000, () => sock.destroy(new Error('timeout')));
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      buf += d;
      if (buf.includes('\r\n')) {
        sock.end();
        resolve(buf.startsWith('+PONG'));
      }
    });
    sock.on('error', reject);
  }), { timeoutMs });
}

// One Socket.IO node (node_server.js). Resolves once its /__stats answers on its own port.
async function startNode(group, { name, port, redisUrl, pingInterval, pingTimeout, timeoutMs = 15000 }) {
  const args = [path.join(__dirname, 'node_server.js'),
    '--port', String(port), '--name', name, '--redis-url', redisUrl];
  if (pingInterval) args.push('--ping-interval', String(pingInterval));
  if (pingTimeout) args.push('--ping-timeout', String(pingTimeout));
  const rec = group.spawn(name, process.execPath, args);
  await waitUntil(`${name} on port ${port}`, async () => {
    if (rec.exitInfo) throw new Error(`${name} exited: ${JSON.stringify(rec.exitInfo)}`);
    const s = await httpJson('GET', `http://127.0.0.1:${port}/__stats`);
    return s.name === name;
  }, { timeoutMs });
  return rec;
}

// A throwaway PKI made with the `openssl` command: a CA (P-256, CA:TRUE) and a leaf it signs for
// localhost / 127.0.0.1 (serverAuth), 30 days (limpet warns about certificates that expire within
// 14). Files under `dir`: ca.pem, ca.key, leaf.pem, leaf.key. Returns their paths and the CA PEM.
function makeTestPki(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const f = (name) => path.join(dir, name);
  const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '30',
    '-subj', '/CN=limpet e2e test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  openssl('req', '-new', ...ec, '-keyout', f('leaf.key'), '-out', f('leaf.csr'), '-subj', '/CN=localhost');
  fs.writeFileSync(f('leaf.ext'), [
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature',
    'extendedKeyUsage = serverAuth',
    'subjectAltName = DNS:localhost, IP:127.0.0.1',
  ].join('\n') + '\n');
  openssl('x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'),
    '-set_serial', '0x' + crypto.randomBytes(8).toString('hex'), '-days', '30', '-sha256',
    '-extfile', f('leaf.ext'), '-out', f('leaf.pem'));
  return { caFile: f('ca.pem'), cert: f('leaf.pem'), key: f('leaf.key'), ca: fs.readFileSync(f('ca.pem')) };
}

// limpet's config for the suite: 2 workers, no access log, one listener, one upstream.
// `tls` ({cert, key}) makes the listener TLS-only.
// `health` ({key: value}) becomes an [upstream.health] table.
// `adminPort` adds an [admin] listener on 127.0.0.1 (/metrics, /status). `sessionTtl` ("60s")
// sets upstream.session_ttl. `sessionStore` ({address, keyPrefix, instance}) becomes a
// [session_store] table (the Redis session store shared by several instances: run_scale.js).
// `http2` turns the listener's http2 on (ALPN h2 with `tls`: browser_h2.js).
function limpetToml({ listenPort, balance, engineioPaths, backends, logLevel = 'info', tls, health, workers = 2,
  adminPort, sessionTtl, sessionStore, http2 }) {
  const q = (s) => JSON.stringify(s);
  const lines = [
    '# written by tests/e2e/harness.js (limpetToml)',
    '[server]',
    `workers = ${workers}`,
    'access_log = "off"',
    `log_level = ${q(logLevel)}`,
    ...(adminPort ? ['', '[admin]', `address = ${q(`127.0.0.1:${adminPort}`)}`] : []),
    ...(sessionStore ? ['', '[session_store]', `address = ${q(sessionStore.address)}`,
      `key_prefix = ${q(sessionStore.keyPrefix)}`,
      ...(sessionStore.instance ? [`instance = ${q(sessionStore.instance)}`] : [])] : []),
    '',
    '[[listener]]',
    `address = ${q(`127.0.0.1:${listenPort}`)}`,
    'upstream = "io"',
    ...(tls ? [`tls = { cert = ${q(tls.cert)}, key = ${q(tls.key)} }`] : []),
    ...(http2 ? ['http2 = true'] : []),
    '',
    '[[upstream]]',
    'name = "io"',
    `balance = ${q(balance)}`,
    `engineio_paths = [${engineioPaths.map(q).join(', ')}]`,
    ...(sessionTtl ? [`session_ttl = ${q(sessionTtl)}`] : []),
  ];
  if (health) {
    lines.push('', '[upstream.health]');
    for (const [k, v] of Object.entries(health)) lines.push(`${k} = ${typeof v === 'string' ? q(v) : v}`);
  }
  for (const b of backends) {
    lines.push('', '[[upstream.backend]]', `name = ${q(b.name)}`, `address = ${q(`127.0.0.1:${b.port}`)}`);
  }
  return lines.join('\n') + '\n';
}

// nginx in front, for developing the harness without limpet (E2E_FRONT=nginx-*). Not used by
// the real suite; `hash` is an nginx upstream directive such as "hash $remote_addr consistent"
// or "" for round robin.
function nginxConf({ dir, listenPort, backends, hash }) {
  return `
worker_processes 2;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${dir}/nginx-body;
  proxy_temp_path ${dir}/nginx-proxy;
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  upstream io {
    ${hash ? hash + ';' : ''}
    ${backends.map((b) => `server 127.0.0.1:${b.port} max_fails=1 fail_timeout=2s;`).join('\n    ')}
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${listenPort};
    location / {
      proxy_pass http://io;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 60s;
    }
  }
}
`;
}

// Starts the front under test on listenPort and waits until a request through it reaches a
// node. kind: "limpet" (the real thing) or "nginx-rr" / "nginx-iphash" (harness development).
// With `tls` ({cert, key, ca}) limpet's listener is TLS-only and the check goes over https,
// trusting `ca`. Returns the child's record; its URL is `frontUrl(listenPort, tls)`.
// adminPort, sessionTtl, sessionStore: see limpetToml (limpet only).
async function startFront(group, { kind, name, dir, listenPort, backends, balance, engineioPaths, limpetBin, tls, health, workers,
  adminPort, sessionTtl, sessionStore, http2 }) {
  let rec;
  if (tls && kind !== 'limpet') throw new Error(`TLS is implemented for limpet only, not ${kind}`);
  if (kind === 'limpet') {
    const conf = path.join(dir, `${name}.toml`);
    fs.writeFileSync(conf, limpetToml({ listenPort, balance, engineioPaths, backends, tls, health, workers,
      adminPort, sessionTtl, sessionStore, http2 }));
    // cwd = the log dir: a core dump (core_pattern "core") lands beside the logs.
    rec = group.spawn(name, limpetBin, ['-c', conf], { cwd: dir });
  } else if (kind === 'nginx-rr' || kind === 'nginx-iphash') {
    const ndir = path.join(dir, name);
    fs.mkdirSync(ndir, { recursive: true });
    fs.chmodSync(ndir, 0o777);
    const conf = path.join(ndir, 'nginx.conf');
    const hash = kind === 'nginx-iphash' ? 'hash $remote_addr consistent' : '';
    fs.writeFileSync(conf, nginxConf({ dir: ndir, listenPort, backends, hash }));
    rec = group.spawn(name, 'nginx', ['-p', ndir, '-c', conf, '-e', path.join(ndir, 'nginx-error.log')]);
  } else {
    throw new Error(`unknown front kind ${kind}`);
  }
  await readyOrExited(group, rec, waitUntil(`${name} (${kind}) on port ${listenPort}`, async () => {
    const s = await httpJson('GET', `${frontUrl(listenPort, tls)}/__stats`, undefined, { ca: tls && tls.ca });
    return backends.some((b) => b.name === s.name);
  }, { timeoutMs: 15000 }));
  return rec;
}

// Resolves when `ready` does; rejects at once, with the last lines of its log, if the child
// exits first (a config error, a port in use), instead of running the wait to its deadline.
async function readyOrExited(group, rec, ready) {
  let done = false;
  const exited = rec.exited.then((info) => {
    if (!done) throw new Error(`${rec.name} exited ${JSON.stringify(info)}: ${group.tail(rec.name, 5)}`);
  });
  exited.catch(() => {});
  try {
    await Promise.race([exited, ready]);
  } finally {
    done = true;
  }
}

// HAProxy as the L4 balancer in front of several limpet instances (run_scale.js): `mode tcp`,
// `balance roundrobin`, no health checks and no stickiness, so every new TCP connection (each
// polling request of a Node client, which keeps no connections alive) goes to the next instance.
// `servers`: [{name, port}]. Long client/server timeouts: a WebSocket or a held long-poll is one
// idle TCP connection as far as HAProxy knows. `maxconn` 8000: HAProxy needs about two file
// descriptors per connection and refuses to start when it cannot raise its limit that far
// (run.sh sets 20000).
function haproxyConf({ listenPort, servers, maxconn = 8000 }) {
  return [
    '# written by tests/e2e/harness.js (startHaproxy)',
    'global',
    `  maxconn ${maxconn}`,
    '  nbthread 1',
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 10m',
    '  timeout server 10m',
    'frontend fe',
    `  bind 127.0.0.1:${listenPort}`,
    `  maxconn ${maxconn}`,
    '  default_backend limpets',
    'backend limpets',
    '  balance roundrobin',
    ...servers.map((s) => `  server ${s.name} 127.0.0.1:${s.port}`),
    '',
  ].join('\n');
}

// Writes <dir>/<name>.cfg, checks it (`haproxy -c`), starts HAProxy in the foreground (-db) and
// waits until a request through it reaches one of `backends` (the nodes' /__stats).
async function startHaproxy(group, { name = 'haproxy', dir, listenPort, servers, backends, timeoutMs = 15000 }) {
  const conf = path.join(dir, `${name}.cfg`);
  fs.writeFileSync(conf, haproxyConf({ listenPort, servers }));
  execFileSync('haproxy', ['-c', '-q', '-f', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  const rec = group.spawn(name, 'haproxy', ['-db', '-f', conf], { cwd: dir });
  await readyOrExited(group, rec, waitUntil(`${name} on port ${listenPort}`, async () => {
    const s = await httpJson('GET', `http://127.0.0.1:${listenPort}/__stats`);
    return backends.some((b) => b.name === s.name);
  }, { timeoutMs }));
  return rec;
}

function frontUrl(listenPort, tls) {
  return `${tls ? 'https' : 'http'}://127.0.0.1:${listenPort}`;
}

// The Socket.IO cluster every run puts behind limpet: a redis-server for the adapter and three
// nodes (ctx.nodes gets {name, port}, ctx.redisUrl the adapter's URL). Returns a line for the report.
async function startSocketIoCluster(group, ctx, { pingInterval, pingTimeout }) {
  const redisPort = await freePort();
  startRedis(group, { port: redisPort });
  await waitForRedis(redisPort);
  ctx.redisUrl = `redis://127.0.0.1:${redisPort}`;
  for (const name of ['node1', 'node2', 'node3']) ctx.nodes.push({ name, port: await freePort() });
  await Promise.all(ctx.nodes.map((n) => startNode(group, { ...n, redisUrl: ctx.redisUrl, pingInterval, pingTimeout })));
  return ctx.nodes.map((n) => `${n.name}=:${n.port}`).join(' ') + ` redis=:${redisPort}`;
}

module.exports = {
  startSocketIoCluster,
  limpetMetric,
  ProcessGroup,
  freePort,
  frontUrl,
  haproxyConf,
  httpJson,
  limpetToml,
  makeTempDir,
  makeTestPki,
  sleep,
  startFront,
  startHaproxy,
  startNode,
  startRedis,
  waitForRedis,
  waitUntil,
};
