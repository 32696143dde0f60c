#include "limpet/store/fleet_counts.hpp"

#include <array>
#include <charconv>
#include <unordered_map>

#include "limpet/util/log.hpp"

namespace limpet::store {

FleetCounts::FleetCounts(uv_loop_t* loop, BufferPool* buffers, std::shared_ptr<const StoreSetup> setup,
                         StoreStats* stats, tls::Counters* tls_counters, std::string instance)
    : loop_(loop),
      setup_(std::move(setup)),
      instance_(std::move(instance)),
      set_key_(setup_->config.key_prefix + "fleet"),
      own_key_(set_key_ + ":" + instance_),
      client_(loop, buffers, setup_->redis(), tls_counters,
              [this, stats, address = setup_->config.address.text, counted_down = true](
                  bool up, const std::string& why) mutable {
                if (!up) forget_others();
                stats->connection_state(up, counted_down, "fleet counts", why, address);
              }) {
  stats->connections.fetch_add(1, std::memory_order_relaxed);
  stats->connections_down.fetch_add(1, std::memory_order_relaxed);
}

FleetCounts::~FleetCounts() { stop(); }

void FleetCounts::set_backends(std::vector<std::shared_ptr<balancer::BackendState>> backends) {
  // A backend that left the configuration keeps no fleet count from an earlier round.
  for (const auto& old : backends_) old->fleet_sessions.store(0, std::memory_order_relaxed);
  backends_ = std::move(backends);
}

void FleetCounts::start() {
  if (timer_ != nullptr) return;
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  uv_timer_start(timer_, on_tick_cb, kPeriodMs, kPeriodMs);
  client_.start();
}

void FleetCounts::stop() {
  if (timer_ == nullptr) return;
  if (client_.ready()) {
    std::array<std::string_view, 2> del{"DEL", own_key_};
    client_.send(del, 0, nullptr);
    std::array<std::string_view, 3> srem{"SREM", set_key_, instance_};
    client_.send(srem, 0, nullptr);
  }
  client_.stop();  // what is queued is written before the close
  uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  timer_ = nullptr;
}

void FleetCounts::on_tick_cb(uv_timer_t* t) { static_cast<FleetCounts*>(t->data)->tick(); }

std::string FleetCounts::encode(const std::vector<std::shared_ptr<balancer::BackendState>>& backends) {
  std::string out;
  for (const auto& b : backends) {
    char num[24];
    auto [end, ec] = std::to_chars(num, num + sizeof num, b->own_sessions());
    (void)ec;
    out += b->name;
    out += '\t';
    out.append(num, end);
    out += '\n';
  }
  return out;
}

void FleetCounts::apply(const std::vector<std::string>& others,
                        const std::vector<std::shared_ptr<balancer::BackendState>>& backends) {
  std::unordered_map<std::string_view, int64_t> sum;
  for (const std::string& value : others) {
    std::string_view rest = value;
    while (!rest.empty()) {
      const size_t nl = rest.find('\n');
      std::string_view line = rest.substr(0, nl);
      rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
      const size_t tab = line.rfind('\t');
      if (tab == std::string_view::npos) continue;
      int64_t n = 0;
      const char* first = line.data() + tab + 1;
      const char* last = line.data() + line.size();
      auto [ptr, ec] = std::from_chars(first, last, n);
      if (ec != std::errc() || ptr != last || n < 0) continue;  // not ours to trust
      sum[line.substr(0, tab)] += n;
    }
  }
  for (const auto& b : backends) {
    auto it = sum.find(b->name);
    b->fleet_sessions.store(it == sum.end() ? 0 : it->second, std::memory_order_relaxed);
  }
}

void FleetCounts::tick() {
  if (!client_.ready()) return;
  const std::string value = encode(backends_);
  const std::string ttl = std::to_string(kKeyTtlMs);
  std::array<std::string_view, 5> set{"SET", own_key_, value, "PX", ttl};
  client_.send(set, 0, nullptr);
  std::array<std::string_view, 3> sadd{"SADD", set_key_, instance_};
  client_.send(sadd, 0, nullptr);
  if (reading_) return;  // the last round is still out: no pile-up behind a slow store
  std::array<std::string_view, 2> members{"SMEMBERS", set_key_};
  reading_ = client_.send(members, kPeriodMs, [this](const Reply& r) { read_others(r); }) != 0;
}

void FleetCounts::read_others(const Reply& members) {
  if (members.type != Reply::Type::kArray) {
    reading_ = false;
    return;
  }
  std::vector<std::string> names;
  for (const Reply& m : members.elements) {
    if (m.type == Reply::Type::kString && m.str != instance_) names.push_back(m.str);
  }
  if (names.empty()) {
    apply({}, backends_);
    reading_ = false;
    return;
  }
  std::vector<std::string> keys;
  keys.reserve(names.size() + 1);
  keys.emplace_back("MGET");
  for (const std::string& n : names) keys.push_back(set_key_ + ":" + n);
  std::vector<std::string_view> argv(keys.begin(), keys.end());
  const uint64_t sent = client_.send(argv, kPeriodMs, [this, names = std::move(names)](const Reply& r) {
    reading_ = false;
    if (r.type != Reply::Type::kArray || r.elements.size() != names.size()) return;
    std::vector<std::string> values;
    for (size_t i = 0; i < names.size(); ++i) {
      if (r.elements[i].type == Reply::Type::kString) {
        values.push_back(r.elements[i].str);
      } else {
        // Its key expired: that instance stopped sharing (gone, or cut off from the store).
        std::array<std::string_view, 3> srem{"SREM", set_key_, names[i]};
        client_.send(srem, 0, nullptr);
      }
    }
    apply(values, backends_);
  });
  if (sent == 0) reading_ = false;
}

void FleetCounts::forget_others() {
  reading_ = false;
  for (const auto& b : backends_) b->fleet_sessions.store(0, std::memory_order_relaxed);
}

}  // namespace limpet::store
