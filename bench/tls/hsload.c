/* bench/tls/hsload.c: TLS handshakes per second against one server, for bench/tls/tls_bench.py.
 *
 * `openssl s_time` cannot measure TLS 1.3 resumption: it never reads after the handshake, so it
 * never sees the session tickets a TLS 1.3 server sends after it, and `s_time -reuse` does a full
 * handshake every time. This client does what s_time -new / -reuse mean, for TLS 1.3 too:
 * --procs processes, each in a loop for --duration seconds: TCP connect, TLS handshake (SNI
 * localhost, no certificate check, no request), then read until the server's session ticket has
 * arrived, then close. With --resume each handshake offers the ticket of the previous connection
 * (TLS 1.3 clients use a ticket once), so every handshake but the first is a resumption (PSK with
 * (EC)DHE, as browsers do); without it every handshake is a full one. Both modes wait for the
 * ticket, so they differ in the handshake only. --tls12 caps the version at TLS 1.2 (a resumption is
 * then an abbreviated handshake without any key exchange). Output: one JSON object on stdout.
 *
 * usage: hsload --port N [--host 127.0.0.1] [--procs 4] [--duration 5] [--resume] [--tls12]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct counts {
  long handshakes, resumed, errors, no_ticket, tickets;
  double seconds;
};

static SSL_SESSION *ticket;  /* the newest session of this process's last connection */
static int ticket_arrived;   /* during the current connection */
static long tickets;         /* every ticket this process received */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* OpenSSL calls this for every session ticket (TLS 1.3: after the handshake, when read). */
static int on_new_session(SSL *ssl, SSL_SESSION *session) {
  (void)ssl;
  if (ticket != NULL) SSL_SESSION_free(ticket);
  ticket = session;
  ticket_arrived = 1;
  tickets++;
  return 1; /* we keep the reference */
}

static int connect_to(const struct sockaddr_in *addr) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Reads (non-blocking) until a ticket has arrived, the server closes, or 1 s passes. */
static int wait_for_ticket(SSL *ssl, int fd) {
  char buf[256];
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  double deadline = now_s() + 1.0;
  while (!ticket_arrived) {
    int n = SSL_read(ssl, buf, sizeof buf);
    if (n > 0) continue;
    if (SSL_get_error(ssl, n) != SSL_ERROR_WANT_READ) return 0;
    if (ticket_arrived) break;
    int left_ms = (int)((deadline - now_s()) * 1000);
    if (left_ms <= 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, left_ms) <= 0) return 0;
  }
  return 1;
}

static void run(SSL_CTX *ctx, const struct sockaddr_in *addr, double duration, int resume, struct counts *c) {
  double start = now_s(), end = start + duration;
  while (now_s() < end) {
    int fd = connect_to(addr);
    if (fd < 0) {
      c->errors++;
      continue;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    if (resume && ticket != NULL) SSL_set_session(ssl, ticket);
    ticket_arrived = 0;
    if (SSL_connect(ssl) == 1) {
      c->handshakes++;
      if (SSL_session_reused(ssl)) c->resumed++;
      /* TLS 1.2 sends its ticket inside the handshake (and none on a resumption: the old one
       * stays good); TLS 1.3 after it. */
      if (SSL_version(ssl) >= TLS1_3_VERSION ? !wait_for_ticket(ssl, fd) : !ticket_arrived && !SSL_session_reused(ssl))
        c->no_ticket++;
    } else {
      c->errors++;
      ERR_clear_error();
    }
    /* As s_time: no close_notify exchange, the session stays resumable. */
    SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(ssl);
    close(fd);
  }
  c->seconds = now_s() - start;
  c->tickets = tickets;
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1";
  int port = 0, procs = 4, resume = 0, tls12 = 0;
  double duration = 5;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
      host = argv[++i];
    } else if (strcmp(argv[i], "--procs") == 0 && i + 1 < argc) {
      procs = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--duration") == 0 && i + 1 < argc) {
      duration = atof(argv[++i]);
    } else if (strcmp(argv[i], "--resume") == 0) {
      resume = 1;
    } else if (strcmp(argv[i], "--tls12") == 0) {
      tls12 = 1;
    } else {
      fprintf(stderr, "usage: %s --port N [--host 127.0.0.1] [--procs 4] [--duration 5] [--resume] [--tls12]\n",
              argv[0]);
      return 2;
    }
  }
  if (port <= 0 || procs < 1 || procs > 256 || duration <= 0) {
    fprintf(stderr, "hsload: --port is required, --procs 1..256, --duration > 0\n");
    return 2;
  }
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    fprintf(stderr, "hsload: bad address %s\n", host);
    return 2;
  }

  int pipes[256];
  pid_t pids[256];
  for (int i = 0; i < procs; i++) {
    int fds[2];
    if (pipe(fds) != 0) return 1;
    pids[i] = fork();
    if (pids[i] < 0) return 1;
    if (pids[i] == 0) {
      close(fds[0]);
      SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
      SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
      SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
      SSL_CTX_set_max_proto_version(ctx, tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
      SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
      SSL_CTX_sess_set_new_cb(ctx, on_new_session);
      static const unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
      SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn);
      struct counts c = {0};
      run(ctx, &addr, duration, resume, &c);
      ssize_t w = write(fds[1], &c, sizeof c);
      _exit(w == (ssize_t)sizeof c ? 0 : 1);
    }
    close(fds[1]);
    pipes[i] = fds[0];
  }
  struct counts total = {0};
  int failed = 0;
  for (int i = 0; i < procs; i++) {
    struct counts c;
    ssize_t r;
    do {
      r = read(pipes[i], &c, sizeof c);
    } while (r < 0 && errno == EINTR);
    int status = 0;
    waitpid(pids[i], &status, 0);
    if (r != (ssize_t)sizeof c || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      failed++;
      continue;
    }
    total.handshakes += c.handshakes;
    total.resumed += c.resumed;
    total.errors += c.errors;
    total.no_ticket += c.no_ticket;
    total.tickets += c.tickets;
    if (c.seconds > total.seconds) total.seconds = c.seconds;
  }
  printf("{\"handshakes\":%ld,\"resumed\":%ld,\"errors\":%ld,\"no_ticket\":%ld,\"tickets\":%ld,\"seconds\":%.3f,"
         "\"rate\":%.1f,\"procs\":%d,\"failed_procs\":%d}\n",
         total.handshakes, total.resumed, total.errors, total.no_ticket, total.tickets, total.seconds,
         total.seconds > 0 ? (double)total.handshakes / total.seconds : 0.0, procs, failed);
  return failed ? 1 : 0;
}
