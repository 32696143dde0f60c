#include "limpet/config/overlay.hpp"

#include "limpet/config/values.hpp"

namespace limpet::config {

std::string expanded_name(const std::string& name, const Address& address) { return name + "/" + address.text; }

Config effective_config(const Config& file, const Overlay& overlay) {
  Config out = file;
  for (auto& u : out.upstreams) {
    const auto resolved = overlay.resolved.find(u.name);
    const auto admin_it = overlay.admin.find(u.name);
    const AdminChanges* admin = admin_it == overlay.admin.end() ? nullptr : &admin_it->second;
    auto changed = [](const std::map<std::string, uint32_t>& m, const BackendConfig& b) {
      auto it = m.find(b.name);
      if (it == m.end() && !b.from.empty()) it = m.find(b.from);
      return it == m.end() ? std::optional<uint32_t>() : std::optional<uint32_t>(it->second);
    };
    auto removed = [admin](const BackendConfig& b) {
      return admin != nullptr && (admin->removed.count(b.name) || (!b.from.empty() && admin->removed.count(b.from)));
    };

    std::vector<BackendConfig> backends;
    std::set<std::string> names;
    auto add = [&](BackendConfig b) {
      if (removed(b) || !names.insert(b.name).second) return;
      if (admin != nullptr) {
        if (auto w = changed(admin->weights, b)) b.weight = *w;
      }
      backends.push_back(std::move(b));
    };
    for (const auto& b : u.backends) {
      if (!b.address.by_name) {
        add(b);
        continue;
      }
      if (resolved == overlay.resolved.end()) continue;
      const auto r = resolved->second.find(b.name);
      if (r == resolved->second.end() || r->second.host != b.address.host || r->second.port != b.address.port) continue;
      for (const auto& ip : r->second.ips) {
        BackendConfig e = b;
        e.address = numeric_address(ip, b.address.port);
        e.from = b.name;
        e.name = expanded_name(b.name, e.address);
        add(std::move(e));
      }
    }
    if (admin != nullptr) {
      for (const auto& [name, b] : admin->added) add(b);
    }
    u.backends = std::move(backends);
  }
  return out;
}

}  // namespace limpet::config
