#!/usr/bin/env node
// Issue 13 in a real browser: headless Chromium opens 12 tabs of the demo page (demo/index.html,
// served by the Socket.IO nodes through limpet) on one https:// origin.
//
//   1. HTTP/2 (listener http2 = true), transports ["polling"]: all 12 tabs connect over one
//      HTTP/2 connection and every tab receives a chat message sent from one of them through the
//      Redis adapter.
//   2. HTTP/2, transports ["websocket"]: Chromium's WebSocket over HTTP/2 (RFC 8441) reaches a
//      Socket.IO node as a plain upgrade; limpet counts the extended CONNECT.
//   3. Negative control, the same 12 polling tabs on a listener without HTTP/2: Chromium opens
//      at most 6 connections to an HTTP/1.1 origin, each held by a tab's pending long-poll (the
//      nodes' pingInterval, 25 s by default, holds it), so the other tabs cannot connect: the
//      stall users of ~6+ tabs report. Checked as a state, once limpet has those 6 connections
//      and 6 tabs are connected: the other 6 are not.
//
// Run by tests/e2e/run.sh (E2E_SCRIPT=browser_h2.js); needs Debian's chromium.
'use strict';

const fs = require('fs');
const path = require('path');
const WebSocket = require('ws');
const harness = require('./harness');
const { Report } = require('./report');

const TABS = 12;
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage',
  '--disable-extensions', '--mute-audio', '--no-default-browser-check', '--proxy-server=direct://',
  '--proxy-bypass-list=*', '--ignore-certificate-errors',
  // Background tabs must keep their timers and requests going as foreground ones do.
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows'];

function chromiumPath() {
  for (const dir of (process.env.PATH || '').split(':')) {
    for (const name of ['chromium', 'chromium-browser', 'google-chrome']) {
      const p = path.join(dir, name);
      if (fs.existsSync(p)) return p;
    }
  }
  throw new Error('headless Chromium is required: apt-get install -y chromium (scripts/install-deps.sh lists it)');
}

// The browser's DevTools endpoint: targets (tabs) are created and evaluated in through it.
class Browser {
  static async launch(group, dir, name) {
    const profile = path.join(dir, `${name}-profile`);
    fs.mkdirSync(profile, { recursive: true });
    group.spawn(name, chromiumPath(), [...CHROMIUM_FLAGS, `--user-data-dir=${profile}`, '--remote-debugging-port=0',
      '--remote-debugging-address=127.0.0.1', 'about:blank']);
    const portFile = path.join(profile, 'DevToolsActivePort');
    const text = await harness.waitUntil(`${name}'s DevTools port`, () => {
      if (!group.isRunning(name)) throw new Error(`${name} exited: ${group.tail(name, 20)}`);
      const t = fs.existsSync(portFile) && fs.readFileSync(portFile, 'utf8');
      return t && t.includes('\n') ? t : null;
    }, { timeoutMs: 30000 });
    const [port, wsPath] = text.trim().split('\n');
    const b = new Browser(new WebSocket(`ws://127.0.0.1:${port}${wsPath}`, { maxPayload: 64 << 20 }));
    await new Promise((resolve, reject) => {
      b.ws.once('open', resolve);
      b.ws.once('error', reject);
    });
    return b;
  }

  constructor(ws) {
    this.ws = ws;
    this.nextId = 0;
    this.pending = new Map();
    ws.on('message', (raw) => {
      const msg = JSON.parse(raw);
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`${p.method}: ${JSON.stringify(msg.error)}`));
      else p.resolve(msg.result);
    });
  }

  send(method, params = {}, sessionId) {
    const id = ++this.nextId;
    this.ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      setTimeout(() => {
        if (this.pending.delete(id)) reject(new Error(`${method}: no answer from Chromium within 20 s`));
      }, 20000);
    });
  }

  async openTab(url) {
    const { targetId } = await this.send('Target.createTarget', { url });
    const { sessionId } = await this.send('Target.attachToTarget', { targetId, flatten: true });
    return { targetId, sessionId };
  }

  async evaluate(tab, expression) {
    const r = await this.send('Runtime.evaluate', { expression, returnByValue: true }, tab.sessionId);
    if (r.exceptionDetails) throw new Error(`evaluate: ${JSON.stringify(r.exceptionDetails)}`);
    return r.result.value;
  }

  async closeTabs(tabs) {
    for (const t of tabs) await this.send('Target.closeTarget', { targetId: t.targetId }).catch(() => {});
  }

  close() {
    this.ws.close();
  }
}

// What the demo page shows, plus how its document came (nextHopProtocol: "h2", "http/1.1").
const TAB_STATE = `(() => {
  const text = (id) => (document.getElementById(id) || {}).textContent || '';
  const nav = performance.getEntriesByType('navigation')[0];
  let transport = '';
  try { transport = socket.io.engine ? socket.io.engine.transport.name : ''; } catch (_) { /* not loaded yet */ }
  return { state: text('state'), node: text('node'), transport, protocol: nav ? nav.nextHopProtocol : '',
           log: [...document.querySelectorAll('#log li')].map((li) => li.textContent) };
})()`;

async function states(browser, tabs) {
  return Promise.all(tabs.map((t) => browser.evaluate(t, TAB_STATE).catch(() => ({ state: 'unreachable', log: [] }))));
}

async function startLimpet(ctx, name, http2) {
  const port = await harness.freePort();
  const adminPort = await harness.freePort();
  await harness.startFront(ctx.group, {
    kind: 'limpet', name, dir: ctx.dir, listenPort: port, backends: ctx.nodes, limpetBin: ctx.limpetBin,
    balance: 'least_sessions', engineioPaths: ['/socket.io/'], tls: ctx.tls, adminPort, http2,
  });
  return { port, adminPort, origin: `https://localhost:${port}` };
}

async function scenarioPollingOverH2(ctx, browser, lp) {
  const { report } = ctx;
  const tabs = [];
  for (let i = 0; i < TABS; i++) tabs.push(await browser.openTab(`${lp.origin}/?transports=polling`));
  let last = [];
  const all = await harness.waitUntil(`${TABS} tabs connected over HTTP/2`, async () => {
    last = await states(browser, tabs);
    return last.every((s) => s.state === 'connected') ? last : null;
  }, { timeoutMs: 60000, intervalMs: 250 }).catch(() => null);
  report.check(`HTTP/2: all ${TABS} polling tabs connect`, all,
    all ? '' : `states: ${last.map((s) => s.state).join(', ')}`);
  if (!all) return tabs;
  report.check('HTTP/2: every tab came over h2 and polls', all.every((s) => s.protocol === 'h2' && s.transport === 'polling'),
    all.map((s) => `${s.protocol}/${s.transport}`).join(' '));
  const nodes = new Set(all.map((s) => s.node));
  report.note(`tabs per node: ${[...nodes].map((n) => `${n}=${all.filter((s) => s.node === n).length}`).join(' ')}`);
  report.check('HTTP/2: the tabs are spread over the nodes', nodes.size >= 2, [...nodes].join(','));
  const text = `broadcast-over-h2-${Date.now()}`;
  await browser.evaluate(tabs[0], `socket.emit('chat', { user: 'e2e', text: ${JSON.stringify(text)} }), true`);
  const got = await harness.waitUntil('the broadcast in every tab', async () => {
    last = await states(browser, tabs);
    return last.every((s) => s.log.some((l) => l.includes(text))) ? last : null;
  }, { timeoutMs: 30000, intervalMs: 250 }).catch(() => null);
  report.check(`HTTP/2: all ${TABS} tabs receive a message broadcast through the Redis adapter`, got,
    got ? '' : `${last.filter((s) => s.log.some((l) => l.includes(text))).length} of ${TABS}`);
  const connections = await harness.limpetMetric(lp.adminPort, 'limpet_http2_connections_total');
  report.check('HTTP/2: the tabs share the origin\'s HTTP/2 connection', connections >= 1 && connections <= 2,
    `${connections} HTTP/2 connection(s)`);
  return tabs;
}

async function scenarioWebSocketOverH2(ctx, browser, lp) {
  const { report } = ctx;
  const before = await harness.limpetMetric(lp.adminPort, 'limpet_http2_websockets_total');
  const tab = await browser.openTab(`${lp.origin}/?transports=websocket`);
  let last = {};
  const ok = await harness.waitUntil('a websocket tab connected', async () => {
    [last] = await states(browser, [tab]);
    return last.state === 'connected' && last.transport === 'websocket';
  }, { timeoutMs: 30000, intervalMs: 250 }).catch(() => false);
  report.check('HTTP/2: a websocket-only tab connects to a Socket.IO node', ok, JSON.stringify(last));
  const after = await harness.limpetMetric(lp.adminPort, 'limpet_http2_websockets_total');
  report.check('HTTP/2: Chromium\'s WebSocket came as an extended CONNECT (RFC 8441)', after > before,
    `limpet_http2_websockets_total ${before} -> ${after}`);
  return [tab];
}

async function scenarioHttp11Stall(ctx, browser, lp) {
  const { report } = ctx;
  const tabs = [];
  for (let i = 0; i < TABS; i++) tabs.push(await browser.openTab(`${lp.origin}/?transports=polling`));
  let last = [];
  const stalled = await harness.waitUntil('6 connections, each with a tab connected', async () => {
    const open = await harness.limpetMetric(lp.adminPort, 'limpet_active_connections');
    last = await states(browser, tabs);
    const connected = last.filter((s) => s.state === 'connected').length;
    return open >= 6 && connected >= 6 ? { open, connected } : null;
  }, { timeoutMs: 60000, intervalMs: 250 }).catch(() => null);
  report.check('HTTP/1.1 only (negative control): Chromium holds 6 connections with a connected tab each', stalled,
    `states: ${last.map((s) => s.state).join(', ')}`);
  if (stalled) {
    report.check('HTTP/1.1 only (negative control): the other tabs wait for a connection',
      stalled.connected < TABS && stalled.open <= 6, `${stalled.connected} of ${TABS} connected on ${stalled.open} connections`);
  }
  return tabs;
}

async function main() {
  const report = new Report('e2e-browser-h2');
  const dir = harness.makeTempDir('limpet-e2e-browser-');
  const group = new harness.ProcessGroup(dir);
  const ctx = { report, dir, group, nodes: [], limpetBin: path.resolve(process.env.LIMPET_BIN || '') };
  let browser = null;
  try {
    if (!process.env.LIMPET_BIN) throw new Error('LIMPET_BIN is not set');
    await report.phase('a test CA, redis-server and three Socket.IO nodes', async () => {
      const pki = harness.makeTestPki(path.join(dir, 'pki'));
      ctx.tls = { cert: pki.cert, key: pki.key, ca: pki.ca };
      report.note(await harness.startSocketIoCluster(group, ctx, { pingInterval: 25000, pingTimeout: 20000 }));
    });
    const h2 = await report.phase('limpet with http2 = true on its TLS listener', () => startLimpet(ctx, 'limpet', true));
    const h1 = await report.phase('limpet without HTTP/2', () => startLimpet(ctx, 'limpet-http11', false));
    browser = await report.phase('headless Chromium', () => Browser.launch(group, dir, 'chromium'));
    const polling = await report.phase(`${TABS} polling tabs over HTTP/2`, () => scenarioPollingOverH2(ctx, browser, h2));
    const ws = await report.phase('a websocket tab over HTTP/2', () => scenarioWebSocketOverH2(ctx, browser, h2));
    await browser.closeTabs([...polling, ...ws]);
    await report.phase(`${TABS} polling tabs over HTTP/1.1 (negative control)`, () => scenarioHttp11Stall(ctx, browser, h1));
  } catch (err) {
    report.check('suite ran to the end', false, err && err.stack ? err.stack : String(err));
  } finally {
    if (browser) browser.close();
  }
  for (const name of ['limpet', 'limpet-http11']) {
    if (!group.children.has(name)) continue;
    const running = group.isRunning(name);
    report.check(`${name} still running at the end`, running);
    if (running) {
      const info = await group.stop(name, 'SIGTERM', 15000);
      report.check(`${name} exits 0 on SIGTERM`, info && info.code === 0, JSON.stringify(info));
    }
  }
  const ok = report.summary();
  if (!ok) {
    for (const name of ['limpet', 'limpet-http11', 'chromium']) {
      const tail = group.tail(name, 30);
      if (tail) console.log(`\n--- last lines of ${name}'s log\n${tail}`);
    }
  }
  await group.stopAll(3000);
  if (ok && !process.env.E2E_KEEP_LOGS) {
    // Chromium's helpers may still be writing its profile for a moment after it was stopped.
    try {
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
    } catch (err) {
      console.log(`could not remove ${dir}: ${err.message}`);
    }
  } else {
    console.log(`logs kept in ${dir}`);
  }
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(`e2e-browser-h2: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
