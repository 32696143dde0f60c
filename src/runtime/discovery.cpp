#include "limpet/runtime/discovery.hpp"

#include "limpet/config/values.hpp"
#include "limpet/util/log.hpp"

namespace limpet::runtime {
namespace {

std::string joined(const std::vector<std::string>& ips) {
  std::string out;
  for (const auto& ip : ips) out += (out.empty() ? "" : ", ") + ip;
  return out.empty() ? "nothing" : out;
}

}  // namespace

net::ResolverOptions resolver_options(const config::ServerConfig& server) {
  net::ResolverOptions o;
  for (const auto& a : server.resolver) {
    o.servers += (o.servers.empty() ? "" : ",") + config::numeric_address(a.host, a.port).text;
  }
  o.timeout_ms = static_cast<uint64_t>(server.resolver_timeout.count());
  return o;
}

Discovery::Discovery(uv_loop_t* loop, Apply apply) : loop_(loop), apply_(std::move(apply)) {}

Discovery::~Discovery() { close(); }

Result<ResolvedNames> Discovery::resolve_new(const config::Config& file, const ResolvedNames& known) {
  ResolvedNames out;
  std::vector<std::string> hosts;
  std::vector<std::pair<const config::UpstreamConfig*, const config::BackendConfig*>> asked;
  for (const auto& u : file.upstreams) {
    for (const auto& b : u.backends) {
      if (!b.address.by_name) continue;
      const auto up = known.find(u.name);
      if (up != known.end()) {
        const auto it = up->second.find(b.name);
        if (it != up->second.end() && it->second.host == b.address.host && it->second.port == b.address.port &&
            !it->second.ips.empty()) {
          out[u.name][b.name] = it->second;
          continue;
        }
      }
      hosts.push_back(b.address.host);
      asked.emplace_back(&u, &b);
    }
  }
  if (hosts.empty()) return out;
  const auto answers = net::resolve_now(resolver_options(file.server), hosts);
  for (size_t i = 0; i < answers.size(); ++i) {
    const auto& [u, b] = asked[i];
    if (answers[i].kind != net::Resolved::Kind::kOk) {
      return Result<ResolvedNames>::fail(b->file + ":" + std::to_string(b->line) + ": upstream \"" + u->name +
                                         "\": backend \"" + b->name + "\": " + b->address.host +
                                         " does not resolve: " + answers[i].error);
    }
    out[u->name][b->name] = config::ResolvedName{b->address.host, b->address.port, answers[i].hosts};
    LOG_INFO("upstream %s: backend %s: %s resolves to %s", u->name.c_str(), b->name.c_str(),
             b->address.host.c_str(), joined(answers[i].hosts).c_str());
  }
  return out;
}

Status Discovery::schedule(const config::Config& file, const ResolvedNames& resolved) {
  const net::ResolverOptions options = resolver_options(file.server);
  if (!resolver_ || options.servers != options_.servers || options.timeout_ms != options_.timeout_ms) {
    if (resolver_) resolver_->close();
    resolver_ = std::make_unique<net::Resolver>(loop_);
    options_ = options;
    Status st = resolver_->init(options);
    if (!st) return st;
  }
  std::map<std::pair<std::string, std::string>, Entry> next;
  const uint64_t now = uv_now(loop_);
  ++serial_;
  for (const auto& u : file.upstreams) {
    for (const auto& b : u.backends) {
      if (!b.address.by_name) continue;
      Entry e;
      e.upstream = u.name;
      e.backend = b.name;
      e.host = b.address.host;
      e.port = b.address.port;
      e.interval_ms = static_cast<uint64_t>(b.resolve.count());
      e.due_ms = now + e.interval_ms;
      e.serial = serial_;
      if (const auto up = resolved.find(u.name); up != resolved.end()) {
        if (const auto it = up->second.find(b.name); it != up->second.end()) e.ips = it->second.ips;
      }
      next.emplace(std::make_pair(u.name, b.name), std::move(e));
    }
  }
  entries_ = std::move(next);
  return Status::ok();
}

void Discovery::tick() {
  if (!resolver_) return;
  const uint64_t now = uv_now(loop_);
  for (auto& [key, e] : entries_) {
    if (e.interval_ms == 0 || e.asking || e.due_ms > now) continue;
    e.asking = true;
    const auto k = key;
    const uint64_t serial = e.serial;
    resolver_->resolve(e.host, [this, k, serial](const net::Resolved& r) { on_answer(k, serial, r); });
  }
}

void Discovery::note(Entry& e, const std::string& problem) {
  if (problem == e.problem) return;
  if (problem.empty()) {
    LOG_INFO("upstream %s: backend %s: %s resolves again", e.upstream.c_str(), e.backend.c_str(), e.host.c_str());
  } else {
    LOG_WARN("upstream %s: backend %s: %s", e.upstream.c_str(), e.backend.c_str(), problem.c_str());
  }
  e.problem = problem;
}

void Discovery::on_answer(const std::pair<std::string, std::string>& key, uint64_t serial, const net::Resolved& r) {
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.serial != serial) return;
  Entry& e = it->second;
  e.asking = false;
  e.due_ms = uv_now(loop_) + e.interval_ms;
  if (r.kind == net::Resolved::Kind::kFailed) {
    // Nothing is known: a transient DNS failure must never empty the pool.
    return note(e, "resolving " + e.host + " failed (" + r.error + "): keeping its " +
                       std::to_string(e.ips.size()) + " addresses");
  }
  const std::vector<std::string> ips = r.kind == net::Resolved::Kind::kOk ? r.hosts : std::vector<std::string>();
  if (ips == e.ips) return note(e, "");
  Status st = apply_(e.upstream, e.backend, config::ResolvedName{e.host, e.port, ips});
  if (!st) return note(e, e.host + " resolves to " + joined(ips) + ", not applied: " + st.message());
  LOG_INFO("upstream %s: backend %s: %s now resolves to %s (was %s)", e.upstream.c_str(), e.backend.c_str(),
           e.host.c_str(), r.kind == net::Resolved::Kind::kGone ? ("nothing: " + r.error).c_str() : joined(ips).c_str(),
           joined(e.ips).c_str());
  e.ips = ips;
  e.problem.clear();
}

void Discovery::close() {
  if (resolver_) resolver_->close();
  resolver_.reset();
  entries_.clear();
}

}  // namespace limpet::runtime
