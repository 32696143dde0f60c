#include "limpet/runtime/snapshot.hpp"

namespace limpet::runtime {

Result<std::shared_ptr<const Snapshot>> build_snapshot(std::shared_ptr<const config::Config> config,
                                                      SharedState& shared, uint64_t generation) {
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->config = config;
  snapshot->generation = generation;
  for (const auto& upstream_config : config->upstreams) {
    auto built = balancer::Upstream::build(upstream_config, shared.registry, shared.affinity);
    if (!built) {
      return Result<std::shared_ptr<const Snapshot>>::fail(
          config->file + ": upstream \"" + upstream_config.name + "\": " + built.message());
    }
    snapshot->upstreams.emplace(upstream_config.name, std::move(*built));
  }
  return std::shared_ptr<const Snapshot>(std::move(snapshot));
}

}  // namespace limpet::runtime
