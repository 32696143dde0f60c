// Collects the suite's checks and phase timings and prints them as they happen, then a summary
// ending in the plain "N passed, N failed" line that CI reads.
'use strict';

class Report {
  constructor(name = 'e2e-socketio') {
    this.name = name;
    this.checks = [];   // {name, ok, detail}
    this.phases = [];   // {name, ms}
    this.notes = [];
    this.t0 = Date.now();
  }

  check(name, ok, detail = '') {
    this.checks.push({ name, ok: !!ok, detail });
    const line = `${ok ? 'ok  ' : 'FAIL'}  ${name}${detail ? ` — ${detail}` : ''}`;
    (ok ? console.log : console.error)(line);
    return !!ok;
  }

  note(text) {
    this.notes.push(text);
    console.log(`      ${text}`);
  }

  async phase(name, fn) {
    const t = Date.now();
    console.log(`\n== ${name}`);
    try {
      return await fn();
    } finally {
      this.phases.push({ name, ms: Date.now() - t });
    }
  }

  get failed() {
    return this.checks.filter((c) => !c.ok);
  }

  summary() {
    const passed = this.checks.length - this.failed.length;
    console.log('\n== summary');
    for (const p of this.phases) console.log(`  ${(p.ms / 1000).toFixed(1).padStart(6)} s  ${p.name}`);
    console.log(`  ${((Date.now() - this.t0) / 1000).toFixed(1).padStart(6)} s  total`);
    for (const c of this.failed) console.log(`  FAILED: ${c.name}${c.detail ? ` — ${c.detail}` : ''}`);
    console.log(`${this.name}: ${passed} passed, ${this.failed.length} failed`);
    return this.failed.length === 0 && this.checks.length > 0;
  }
}

module.exports = { Report };
