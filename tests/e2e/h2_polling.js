// Engine.IO long-polling over HTTP/2, for the e2e suite's E2E_HTTP2=1 run: socket.io-client's own
// polling transport (engine.io-client's Fetch, whose framing, pausing and error handling stay as
// they are) with its two requests, the poll and the write, sent as streams of one HTTP/2
// connection per client (node:http2, ALPN h2) instead of through fetch(), which speaks only
// HTTP/1.1. Node's WebSocket client has no RFC 8441: with this transport a client upgrades to a
// WebSocket over HTTP/1.1 on the same listener (browser_h2.js checks Chromium's RFC 8441).
'use strict';

const http2 = require('http2');
const { Fetch } = require('engine.io-client');

class Http2Polling extends Fetch {
  session() {
    if (!this.h2 || this.h2.closed || this.h2.destroyed) {
      const uri = new URL(this.uri());
      this.h2 = http2.connect(uri.origin, { ca: this.opts.ca, rejectUnauthorized: this.opts.rejectUnauthorized !== false });
      this.h2.on('error', () => {});  // each request reports its own failure
      this.h2.unref();  // as fetch(): an idle connection keeps no process alive
    }
    return this.h2;
  }

  // One request as a stream: resolves to {status, body}.
  request(data) {
    return new Promise((resolve, reject) => {
      const uri = new URL(this.uri());
      const headers = { ':method': data === undefined ? 'GET' : 'POST', ':path': uri.pathname + uri.search };
      if (data !== undefined) headers['content-type'] = 'text/plain;charset=UTF-8';
      let stream;
      try {
        stream = this.session().request(headers);
      } catch (err) {
        reject(err);
        return;
      }
      let status = 0;
      const chunks = [];
      stream.on('response', (h) => { status = h[':status']; });
      stream.on('data', (c) => chunks.push(c));
      stream.on('end', () => resolve({ status, body: Buffer.concat(chunks).toString('utf8') }));
      stream.on('error', reject);
      stream.end(data === undefined ? undefined : data);
    });
  }

  doPoll() {
    this.request()
      .then((r) => (r.status === 200 ? this.onData(r.body) : this.onError('h2 poll error', r.status)))
      .catch((err) => this.onError('h2 poll error', err));
  }

  doWrite(data, callback) {
    this.request(data)
      .then((r) => (r.status === 200 ? callback() : this.onError('h2 write error', r.status)))
      .catch((err) => this.onError('h2 write error', err));
  }

  doClose() {
    super.doClose();
    if (this.h2) this.h2.close();
  }
}

module.exports = { Http2Polling };
