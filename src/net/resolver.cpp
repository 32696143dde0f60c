#include "limpet/net/resolver.hpp"

#include <arpa/inet.h>
#include <ares.h>
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>

namespace limpet::net {
namespace {

Status library_init() {
  static std::once_flag once;
  static int rc = ARES_SUCCESS;
  std::call_once(once, [] { rc = ares_library_init(ARES_LIB_INIT_ALL); });
  return rc == ARES_SUCCESS ? Status::ok() : Status::fail(std::string("c-ares: ") + ares_strerror(rc));
}

ares_addrinfo_hints address_hints() {
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;  // A and AAAA
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = ARES_AI_NOSORT;  // sorted by limpet, by value: the names must not depend on routes
  return hints;
}

uint64_t now_ms() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

}  // namespace

Resolved to_resolved(int status, const ares_addrinfo* result) {
  Resolved r;
  if (status == ARES_SUCCESS && result != nullptr) {
    for (const ares_addrinfo_node* n = result->nodes; n != nullptr; n = n->ai_next) {
      char text[INET6_ADDRSTRLEN] = {};
      const void* bytes = nullptr;
      if (n->ai_family == AF_INET) bytes = &reinterpret_cast<const sockaddr_in*>(n->ai_addr)->sin_addr;
      if (n->ai_family == AF_INET6) bytes = &reinterpret_cast<const sockaddr_in6*>(n->ai_addr)->sin6_addr;
      if (bytes != nullptr && inet_ntop(n->ai_family, bytes, text, sizeof text) != nullptr) r.hosts.emplace_back(text);
    }
    std::sort(r.hosts.begin(), r.hosts.end());
    r.hosts.erase(std::unique(r.hosts.begin(), r.hosts.end()), r.hosts.end());
  }
  if (!r.hosts.empty()) {
    r.kind = Resolved::Kind::kOk;
  } else if (status == ARES_SUCCESS || status == ARES_ENOTFOUND || status == ARES_ENODATA) {
    r.kind = Resolved::Kind::kGone;
    r.error = status == ARES_SUCCESS ? "no address" : ares_strerror(status);
  } else {
    r.kind = Resolved::Kind::kFailed;
    r.error = ares_strerror(status);
  }
  return r;
}

// A socket c-ares asked the loop to watch; freed in its close callback.
struct Resolver::Poll {
  uv_poll_t handle{};
  Resolver* owner = nullptr;
  int fd = -1;
};

struct Resolver::Query {
  Resolver* owner = nullptr;
  Callback done;
};

Resolver::Resolver(uv_loop_t* loop) : loop_(loop) {}

Resolver::~Resolver() { close(); }


namespace {

// `on_loop`: the resolver whose loop watches the channel's sockets; null for a blocking channel.
Status make_channel(const ResolverOptions& options_, ares_channeldata** out, Resolver* on_loop,
                    void (*sock_state_cb)(void*, int, int, int)) {
  Status lib = library_init();
  if (!lib) return lib;
  ares_options opts{};
  int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
  // Two tries per server; c-ares doubles the timeout on the second round, so a third of the budget each.
  opts.timeout = static_cast<int>(std::max<uint64_t>(options_.timeout_ms / 3, 50));
  opts.tries = 2;
  if (on_loop) {
    mask |= ARES_OPT_SOCK_STATE_CB;
    opts.sock_state_cb = sock_state_cb;
    opts.sock_state_cb_data = on_loop;
  }
  ares_channel channel = nullptr;
  int rc = ares_init_options(&channel, &opts, mask);
  if (rc != ARES_SUCCESS) return Status::fail(std::string("resolver: ") + ares_strerror(rc));
  if (!options_.servers.empty()) {
    rc = ares_set_servers_ports_csv(channel, options_.servers.c_str());
    if (rc != ARES_SUCCESS) {
      ares_destroy(channel);
      return Status::fail("resolver \"" + options_.servers + "\": " + ares_strerror(rc));
    }
  }
  *out = channel;
  return Status::ok();
}

}  // namespace

Status Resolver::init(const ResolverOptions& options) {
  options_ = options;
  Status st = make_channel(options_, &channel_, this, on_sock_state_cb);
  if (!st) return st;
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  return Status::ok();
}

void Resolver::close() {
  // The handles first: c-ares closes its sockets in ares_destroy, and a poll handle must be
  // stopped while its descriptor is still open.
  for (auto& [fd, poll] : polls_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&poll->handle),
             [](uv_handle_t* h) { delete static_cast<Poll*>(h->data); });
  }
  polls_.clear();
  if (timer_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    timer_ = nullptr;
  }
  if (channel_ != nullptr) {
    ares_channel channel = channel_;
    channel_ = nullptr;  // the callbacks ares_destroy makes (ARES_EDESTRUCTION) see it closed
    ares_destroy(channel);
  }
}

void Resolver::resolve(const std::string& host, Callback done) {
  if (channel_ == nullptr) return;
  auto* query = new Query{this, std::move(done)};
  const ares_addrinfo_hints hints = address_hints();
  ares_getaddrinfo(channel_, host.c_str(), nullptr, &hints, on_addrinfo_cb, query);
  rearm_timer();
}

void Resolver::on_addrinfo_cb(void* arg, int status, int, ares_addrinfo* result) {
  auto* query = static_cast<Query*>(arg);
  Resolved r = to_resolved(status, result);
  if (result != nullptr) ares_freeaddrinfo(result);
  if (status != ARES_EDESTRUCTION && query->owner->channel_ != nullptr) query->done(r);
  delete query;
}

void Resolver::on_sock_state_cb(void* data, int fd, int readable, int writable) {
  static_cast<Resolver*>(data)->on_sock_state(fd, readable != 0, writable != 0);
}

void Resolver::on_sock_state(int fd, bool readable, bool writable) {
  auto it = polls_.find(fd);
  if (!readable && !writable) {  // c-ares closes the socket right after this
    if (it == polls_.end()) return;
    uv_close(reinterpret_cast<uv_handle_t*>(&it->second->handle),
             [](uv_handle_t* h) { delete static_cast<Poll*>(h->data); });
    polls_.erase(it);
    return;
  }
  if (it == polls_.end()) {
    auto* poll = new Poll;
    poll->owner = this;
    poll->fd = fd;
    poll->handle.data = poll;
    if (uv_poll_init_socket(loop_, &poll->handle, fd) != 0) {
      delete poll;  // never initialised: no close callback to wait for; c-ares times the query out
      return;
    }
    it = polls_.emplace(fd, poll).first;
  }
  uv_poll_start(&it->second->handle, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll_cb);
}

void Resolver::on_poll_cb(uv_poll_t* handle, int status, int events) {
  auto* poll = static_cast<Poll*>(handle->data);
  Resolver* self = poll->owner;
  if (self->channel_ == nullptr) return;
  // On an error let c-ares read and write: it finds the error itself and moves on.
  const bool read = status < 0 || (events & UV_READABLE) != 0;
  const bool write = status < 0 || (events & UV_WRITABLE) != 0;
  const int fd = poll->fd;  // `poll` may be closed (and later freed) inside ares_process_fd
  ares_process_fd(self->channel_, read ? fd : ARES_SOCKET_BAD, write ? fd : ARES_SOCKET_BAD);
  self->rearm_timer();
}

void Resolver::on_timer_cb(uv_timer_t* handle) {
  auto* self = static_cast<Resolver*>(handle->data);
  if (self->channel_ == nullptr) return;
  ares_process_fd(self->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  self->rearm_timer();
}

void Resolver::rearm_timer() {
  if (channel_ == nullptr || timer_ == nullptr) return;
  timeval tv{};
  if (ares_timeout(channel_, nullptr, &tv) == nullptr) {  // nothing pending
    uv_timer_stop(timer_);
    return;
  }
  const uint64_t ms = static_cast<uint64_t>(tv.tv_sec) * 1000 + static_cast<uint64_t>(tv.tv_usec) / 1000;
  uv_timer_start(timer_, on_timer_cb, std::max<uint64_t>(ms, 1), 0);
}

std::vector<Resolved> resolve_now(const ResolverOptions& options_, const std::vector<std::string>& hosts) {
  std::vector<Resolved> results(hosts.size());
  if (hosts.empty()) return results;
  ares_channeldata* channel = nullptr;
  if (Status st = make_channel(options_, &channel, nullptr, nullptr); !st) {
    for (auto& r : results) r.error = st.message();
    return results;
  }
  struct Pending {
    Resolved* out;
    size_t* left;
  };
  size_t left = hosts.size();
  std::vector<Pending> pending(hosts.size());
  const ares_addrinfo_hints hints = address_hints();
  for (size_t i = 0; i < hosts.size(); ++i) {
    pending[i] = {&results[i], &left};
    results[i].error = "no answer within the resolver timeout";
    ares_getaddrinfo(
        channel, hosts[i].c_str(), nullptr, &hints,
        [](void* arg, int status, int, ares_addrinfo* result) {
          auto* p = static_cast<Pending*>(arg);
          if (status != ARES_ECANCELLED && status != ARES_EDESTRUCTION) *p->out = to_resolved(status, result);
          if (result != nullptr) ares_freeaddrinfo(result);
          --*p->left;
        },
        &pending[i]);
  }
  const uint64_t deadline = now_ms() + options_.timeout_ms;
  while (left > 0) {
    const uint64_t now = now_ms();
    if (now >= deadline) break;
    ares_socket_t socks[ARES_GETSOCK_MAXNUM];
    const int bits = ares_getsock(channel, socks, ARES_GETSOCK_MAXNUM);
    pollfd fds[ARES_GETSOCK_MAXNUM];
    nfds_t n = 0;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
      const short events = static_cast<short>((ARES_GETSOCK_READABLE(bits, i) ? POLLIN : 0) |
                                              (ARES_GETSOCK_WRITABLE(bits, i) ? POLLOUT : 0));
      if (events != 0) fds[n++] = {socks[i], events, 0};
    }
    timeval max{static_cast<time_t>((deadline - now) / 1000), static_cast<suseconds_t>((deadline - now) % 1000 * 1000)};
    timeval tv{};
    ares_timeout(channel, &max, &tv);
    const int wait = static_cast<int>(tv.tv_sec * 1000 + tv.tv_usec / 1000);
    const int ready = ::poll(fds, n, std::max(wait, 1));
    if (ready <= 0) {
      ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      continue;
    }
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      const bool error = (fds[i].revents & (POLLERR | POLLHUP)) != 0;
      ares_process_fd(channel, (error || (fds[i].revents & POLLIN)) ? fds[i].fd : ARES_SOCKET_BAD,
                      (error || (fds[i].revents & POLLOUT)) ? fds[i].fd : ARES_SOCKET_BAD);
    }
  }
  ares_destroy(channel);  // what is still pending is answered now (ARES_EDESTRUCTION): `pending` outlives it
  return results;
}

}  // namespace limpet::net
