/* bench/backends/backend.c: the origin server behind all three proxies under test (limpet, nginx,
 * HAProxy), so that they see identical backends. HTTP/1.1 keep-alive with canned responses and a
 * WebSocket echo, on libuv, N threads each with its own SO_REUSEPORT socket.
 *
 * It is deliberately minimal (no real HTTP parser, no limpet code: a shared bug would cancel out)
 * and cheap per request, so that it is never the bottleneck of a benchmark:
 *   GET /16k...        -> 200, 16384-byte body
 *   /socket.io/...     -> Engine.IO polling, just enough for limpet's sid learning (bench rows of
 *                         the shipped configuration): without a sid= query parameter a v4 open
 *                         packet with a fresh 20-character sid (unique per backend port, thread and
 *                         request); with one, 200 "6" (a noop packet) to a GET and "ok" to a POST.
 *                         No session is kept: any sid is accepted.
 *   GET /__bench/requests -> 200, body: how many requests this process answered so far (every
 *                         other request counts; this one does not), for allocation counts over
 *                         a window of a run (bench/lib/bench.py). Ask the backend directly.
 *   GET anything else  -> 200, 13-byte body "Hello, world\n"
 *   GET + Upgrade: websocket -> 101, then every data frame is echoed back unmasked, Ping gets a
 *                         Pong, Close is echoed and the connection closed (server closes first).
 * Responses are static buffers written without copying; pipelined requests in one read are
 * answered with one gathered write.
 *
 * usage: backend --port N [--threads N] [--host 127.0.0.1]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

enum { kReadBufferSize = 64 * 1024, kMaxIov = 64, kMaxFrame = 1 << 20, kBigBody = 16384 };

static const char kSmallResponse[] =
    "HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
    "Hello, world\n";
static const char kPollResponse[] =
    "HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: 1\r\n\r\n"
    "6";
static const char kPostResponse[] =
    "HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nok";
static char *big_response; /* head + 16384 bytes, built once at start */
static size_t big_response_len;
static const char *listen_host = "127.0.0.1";
static int listen_port;

typedef struct conn {
  uv_tcp_t tcp;
  char *in; /* bytes of an incomplete head or frame kept across reads */
  size_t in_len, in_cap;
  size_t skip_body; /* request body bytes still to discard */
  int websocket;
  int closing;
} conn_t;

typedef struct {
  uv_write_t req;
  conn_t *conn;
  char *owned; /* heap bytes to free after the write (echo frames), or NULL */
  int close_after;
} write_req_t;

/* One read buffer per thread: every read is fully consumed before the next one. */
static __thread char read_buffer[kReadBufferSize];
static _Atomic uint64_t requests_answered;
static __thread uint64_t sids_issued;
static _Atomic unsigned next_thread_index;
static __thread unsigned thread_index;

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/* A 20-character Engine.IO sid (base64url alphabet, like the real ones), distinct for every
 * (port, thread, request): the first 11 characters carry a bijective mix of those three. */
static void new_sid(char out[20]) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint64_t unique = ((uint64_t)listen_port << 48) | ((uint64_t)(thread_index & 0xff) << 40) | ++sids_issued;
  uint64_t a = splitmix64(unique), b = splitmix64(a);
  for (int i = 0; i < 11; ++i) out[i] = kAlphabet[(a >> (6 * i)) & 63];
  for (int i = 11; i < 20; ++i) out[i] = kAlphabet[(b >> (6 * (i - 11))) & 63];
}

/* The Engine.IO v4 handshake answer, in a heap buffer the write owns. */
static char *engineio_open(size_t *len) {
  static const char kHead[] =
      "HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: %d\r\n\r\n";
  char sid[21];
  new_sid(sid);
  sid[20] = '\0';
  char body[160];
  int bl = snprintf(body, sizeof body,
                    "0{\"sid\":\"%s\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,"
                    "\"pingTimeout\":20000,\"maxPayload\":1000000}",
                    sid);
  char *out = malloc(sizeof kHead + 16 + (size_t)bl);
  if (out == NULL) abort();
  int hl = sprintf(out, kHead, bl);
  memcpy(out + hl, body, (size_t)bl);
  *len = (size_t)hl + (size_t)bl;
  return out;
}

/* The request target of a head ("GET /x?y HTTP/1.1..."), or an empty one. */
static const char *request_target(const char *head, size_t hlen, size_t *tlen) {
  const char *line_end = memchr(head, '\r', hlen);
  size_t ll = line_end != NULL ? (size_t)(line_end - head) : hlen;
  const char *sp = memchr(head, ' ', ll);
  *tlen = 0;
  if (sp == NULL) return head;
  const char *t = sp + 1;
  const char *sp2 = memchr(t, ' ', ll - (size_t)(t - head));
  *tlen = sp2 != NULL ? (size_t)(sp2 - t) : ll - (size_t)(t - head);
  return t;
}

/* Whether target[0,tlen) has a query parameter "sid" (?sid= or &sid=). */
static int has_sid(const char *target, size_t tlen) {
  const char *q = memchr(target, '?', tlen);
  if (q == NULL) return 0;
  const char *end = target + tlen;
  for (const char *p = q; p + 5 <= end; ++p) {
    if ((*p == '?' || *p == '&') && memcmp(p + 1, "sid=", 4) == 0) return 1;
  }
  return 0;
}

static void on_closed(uv_handle_t *h) {
  conn_t *c = (conn_t *)h->data;
  free(c->in);
  free(c);
}

static void close_conn(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_written(uv_write_t *req, int status) {
  write_req_t *w = (write_req_t *)req;
  if (status < 0 || w->close_after) close_conn(w->conn);
  free(w->owned);
  free(w);
}

/* Writes bufs; `owned` is freed once the kernel has the bytes. */
static void send_bufs(conn_t *c, uv_buf_t *bufs, unsigned n, char *owned, int close_after) {
  if (c->closing || n == 0) {
    free(owned);
    return;
  }
  write_req_t *w = malloc(sizeof *w);
  if (w == NULL) abort();
  w->conn = c;
  w->owned = owned;
  w->close_after = close_after;
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, n, on_written) != 0) {
    free(owned);
    free(w);
    close_conn(c);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(read_buffer, sizeof read_buffer);
}

/* Case-insensitive search for header `name` ("upgrade:") at the start of a line in head[0,len).
 * Returns the value with leading blanks skipped, or NULL. */
static const char *find_header(const char *head, size_t len, const char *name, size_t *value_len) {
  size_t nlen = strlen(name);
  const char *end = head + len;
  for (const char *p = memchr(head, '\n', len); p != NULL && p + 1 + nlen < end;
       p = memchr(p + 1, '\n', (size_t)(end - p - 1))) {
    if (strncasecmp(p + 1, name, nlen) != 0) continue;
    const char *v = p + 1 + nlen;
    while (v < end && (*v == ' ' || *v == '\t')) ++v;
    const char *e = memchr(v, '\r', (size_t)(end - v));
    if (e == NULL) e = end;
    *value_len = (size_t)(e - v);
    return v;
  }
  return NULL;
}

static void websocket_accept(const char *key, size_t key_len, char out[29]) {
  static const char kGuid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  char joined[128];
  unsigned char digest[SHA_DIGEST_LENGTH];
  if (key_len > sizeof joined - sizeof kGuid) key_len = sizeof joined - sizeof kGuid;
  memcpy(joined, key, key_len);
  memcpy(joined + key_len, kGuid, sizeof kGuid - 1);
  SHA1((const unsigned char *)joined, key_len + sizeof kGuid - 1, digest);
  EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
}

/* Echoes every complete frame in data[0,len); returns bytes consumed. */
static size_t handle_frames(conn_t *c, const char *data, size_t len) {
  size_t pos = 0, out_len = 0;
  char *out = NULL;
  int close_after = 0;
  while (!close_after && len - pos >= 2) {
    const unsigned char *p = (const unsigned char *)data + pos;
    uint8_t b0 = p[0], opcode = b0 & 0x0f;
    int masked = p[1] & 0x80;
    uint64_t plen = p[1] & 0x7f;
    size_t hlen = 2;
    if (plen == 126) {
      if (len - pos < 4) break;
      plen = ((uint64_t)p[2] << 8) | p[3];
      hlen = 4;
    } else if (plen == 127) {
      if (len - pos < 10) break;
      plen = 0;
      for (int i = 0; i < 8; ++i) plen = (plen << 8) | p[2 + i];
      hlen = 10;
    }
    if (plen > kMaxFrame) {
      close_after = 1;
      break;
    }
    size_t mask_at = hlen;
    if (masked) hlen += 4;
    if (len - pos < hlen + plen) break;
    /* Echo header: same FIN/opcode, no mask; Ping becomes Pong; Pong is dropped. */
    if (opcode != 0xA) {
      size_t need = out_len + 10 + plen;
      char *grown = realloc(out, need);
      if (grown == NULL) abort();
      out = grown;
      unsigned char *o = (unsigned char *)out + out_len;
      o[0] = opcode == 0x9 ? (uint8_t)((b0 & 0xf0) | 0xA) : b0;
      size_t oh = 2;
      if (plen < 126) {
        o[1] = (uint8_t)plen;
      } else if (plen <= 0xffff) {
        o[1] = 126;
        o[2] = (uint8_t)(plen >> 8);
        o[3] = (uint8_t)plen;
        oh = 4;
      } else {
        o[1] = 127;
        for (int i = 0; i < 8; ++i) o[2 + i] = (uint8_t)(plen >> (56 - 8 * i));
        oh = 10;
      }
      const unsigned char *payload = p + hlen;
      if (masked) {
        const unsigned char *mask = p + mask_at;
        for (uint64_t i = 0; i < plen; ++i) o[oh + i] = payload[i] ^ mask[i & 3];
      } else {
        memcpy(o + oh, payload, plen);
      }
      out_len += oh + plen;
    }
    if (opcode == 0x8) close_after = 1;
    pos += hlen + plen;
  }
  if (out_len > 0) {
    uv_buf_t b = uv_buf_init(out, (unsigned)out_len);
    send_bufs(c, &b, 1, out, close_after);
  } else {
    free(out);
    if (close_after) close_conn(c);
  }
  return pos;
}

/* Answers every complete request head in data[0,len); returns bytes consumed. */
static size_t handle_requests(conn_t *c, const char *data, size_t len) {
  uv_buf_t bufs[kMaxIov];
  unsigned n = 0;
  size_t pos = 0;
  int close_after = 0, close_queued = 0;
  while (pos < len && !close_after && !c->websocket) {
    if (c->skip_body > 0) {
      size_t k = len - pos < c->skip_body ? len - pos : c->skip_body;
      pos += k;
      c->skip_body -= k;
      continue;
    }
    const char *head = data + pos;
    const char *end = memmem(head, len - pos, "\r\n\r\n", 4);
    if (end == NULL) break;
    size_t hlen = (size_t)(end - head) + 4;
    size_t vlen;
    const char *v;
    if ((v = find_header(head, hlen, "content-length:", &vlen)) != NULL) {
      c->skip_body = strtoull(v, NULL, 10);
    }
    if ((v = find_header(head, hlen, "connection:", &vlen)) != NULL && vlen == 5 &&
        strncasecmp(v, "close", 5) == 0) {
      close_after = 1;
    }
    if (memmem(head, hlen, "HTTP/1.0\r\n", 10) != NULL &&
        !((v = find_header(head, hlen, "connection:", &vlen)) != NULL && vlen == 10 &&
          strncasecmp(v, "keep-alive", 10) == 0)) {
      close_after = 1;
    }
    const char *key;
    size_t key_len;
    if ((v = find_header(head, hlen, "upgrade:", &vlen)) != NULL && vlen == 9 &&
        strncasecmp(v, "websocket", 9) == 0 &&
        (key = find_header(head, hlen, "sec-websocket-key:", &key_len)) != NULL) {
      /* The 101 must be its own buffer: it outlives this call. */
      static const char kHead[] =
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          "Sec-WebSocket-Accept: ";
      char *resp = malloc(sizeof kHead + 29 + 4);
      if (resp == NULL) abort();
      memcpy(resp, kHead, sizeof kHead - 1);
      websocket_accept(key, key_len, resp + sizeof kHead - 1);
      memcpy(resp + sizeof kHead - 1 + 28, "\r\n\r\n", 4);
      if (n > 0) send_bufs(c, bufs, n, NULL, 0);
      n = 0;
      uv_buf_t b = uv_buf_init(resp, (unsigned)(sizeof kHead - 1 + 28 + 4));
      send_bufs(c, &b, 1, resp, 0);
      c->websocket = 1;
      c->skip_body = 0;
      pos += hlen;
      break;
    }
    size_t tlen;
    const char *target = request_target(head, hlen, &tlen);
    static const char kCountPath[] = "/__bench/requests";
    if (tlen == sizeof kCountPath - 1 && memcmp(target, kCountPath, tlen) == 0) {
      if (n > 0) send_bufs(c, bufs, n, NULL, 0);
      n = 0;
      char *out = malloc(160);
      if (out == NULL) abort();
      char body[24];
      int bl = snprintf(body, sizeof body, "%llu", (unsigned long long)requests_answered);
      int ol = snprintf(out, 160, "HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/plain\r\n"
                        "Content-Length: %d\r\n\r\n%s", bl, body);
      uv_buf_t b = uv_buf_init(out, (unsigned)ol);
      send_bufs(c, &b, 1, out, close_after);
      close_queued = close_after;
      pos += hlen;
      continue;
    }
    ++requests_answered;
    if (tlen >= 11 && memcmp(target, "/socket.io/", 11) == 0) {
      if (has_sid(target, tlen)) {
        bufs[n++] = hlen > 4 && memcmp(head, "POST", 4) == 0
                        ? uv_buf_init((char *)kPostResponse, sizeof kPostResponse - 1)
                        : uv_buf_init((char *)kPollResponse, sizeof kPollResponse - 1);
      } else {
        /* Its own buffer, written after what is gathered so far (keeps the order). */
        if (n > 0) send_bufs(c, bufs, n, NULL, 0);
        n = 0;
        size_t olen;
        char *open_packet = engineio_open(&olen);
        uv_buf_t b = uv_buf_init(open_packet, (unsigned)olen);
        send_bufs(c, &b, 1, open_packet, close_after);
        close_queued = close_after;
      }
    } else {
      int big = tlen >= 4 && strncmp(target, "/16k", 4) == 0;
      bufs[n++] = big ? uv_buf_init(big_response, (unsigned)big_response_len)
                      : uv_buf_init((char *)kSmallResponse, sizeof kSmallResponse - 1);
    }
    pos += hlen;
    if (n == kMaxIov) {
      send_bufs(c, bufs, n, NULL, 0);
      n = 0;
    }
  }
  if (n > 0) send_bufs(c, bufs, n, NULL, close_after);
  else if (close_after && !close_queued) close_conn(c);
  return pos;
}

static size_t handle(conn_t *c, const char *data, size_t len) {
  size_t pos = 0;
  if (!c->websocket) pos = handle_requests(c, data, len);
  if (c->websocket && !c->closing && pos < len) pos += handle_frames(c, data + pos, len - pos);
  return pos;
}

static void keep(conn_t *c, const char *data, size_t len) {
  if (len > kMaxFrame + 64) {
    close_conn(c);
    return;
  }
  if (c->in_cap < len) {
    char *grown = realloc(c->in, len);
    if (grown == NULL) abort();
    c->in = grown;
    c->in_cap = len;
  }
  memmove(c->in, data, len);
  c->in_len = len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = (conn_t *)s->data;
  if (nread < 0) {
    close_conn(c);
    return;
  }
  if (nread == 0 || c->closing) return;
  if (c->in_len == 0) {
    size_t used = handle(c, buf->base, (size_t)nread);
    if (used < (size_t)nread && !c->closing) keep(c, buf->base + used, (size_t)nread - used);
    return;
  }
  /* A partial head or frame is pending: append and process the joined bytes. */
  size_t total = c->in_len + (size_t)nread;
  if (total > kMaxFrame + 64) {
    close_conn(c);
    return;
  }
  if (c->in_cap < total) {
    char *grown = realloc(c->in, total);
    if (grown == NULL) abort();
    c->in = grown;
    c->in_cap = total;
  }
  memcpy(c->in + c->in_len, buf->base, (size_t)nread);
  size_t used = handle(c, c->in, total);
  if (c->closing) return;
  c->in_len = total - used;
  if (c->in_len > 0) memmove(c->in, c->in + used, c->in_len);
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) abort();
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    close_conn(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void *run_thread(void *arg) {
  (void)arg;
  thread_index = next_thread_index++;
  uv_loop_t loop;
  uv_tcp_t server;
  uv_loop_init(&loop);
  /* libuv 1.44 has no reuseport flag: create, set, bind, then hand the fd to libuv. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  struct sockaddr_in addr;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      uv_ip4_addr(listen_host, listen_port, &addr) != 0 ||
      bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    perror("backend: socket/bind");
    exit(1);
  }
  uv_tcp_init(&loop, &server);
  if (uv_tcp_open(&server, fd) != 0 || uv_listen((uv_stream_t *)&server, 4096, on_connection) != 0) {
    fprintf(stderr, "backend: listen on %s:%d failed\n", listen_host, listen_port);
    exit(1);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  return NULL;
}

int main(int argc, char **argv) {
  int threads = 1;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      listen_port = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
      listen_host = argv[++i];
    } else {
      fprintf(stderr, "usage: %s --port N [--threads N] [--host 127.0.0.1]\n", argv[0]);
      return 2;
    }
  }
  if (listen_port <= 0 || threads < 1 || threads > 64) {
    fprintf(stderr, "backend: --port is required, --threads 1..64\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  char head[160];
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/plain\r\n"
                    "Content-Length: %d\r\n\r\n",
                    kBigBody);
  big_response_len = (size_t)hl + kBigBody;
  big_response = malloc(big_response_len);
  if (big_response == NULL) abort();
  memcpy(big_response, head, (size_t)hl);
  memset(big_response + hl, 'x', kBigBody);

  pthread_t tids[64];
  for (int i = 0; i < threads; ++i) pthread_create(&tids[i], NULL, run_thread, NULL);
  fprintf(stderr, "backend: listening on %s:%d with %d thread(s)\n", listen_host, listen_port, threads);
  for (int i = 0; i < threads; ++i) pthread_join(tids[i], NULL);
  return 0;
}
