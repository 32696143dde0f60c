#include "limpet/runtime/snapshot.hpp"

namespace limpet::runtime {

Result<std::shared_ptr<const Snapshot>> build_snapshot(std::shared_ptr<const config::Config> config,
                                                      SharedState& shared, uint64_t generation,
                                                      const RetiredBackends& retired) {
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->config = config;
  snapshot->generation = generation;
  for (const auto& listener : config->listeners) {
    auto& counters = shared.listener_counters[listener.name];
    if (!counters) counters = std::make_unique<proxy::ListenerCounters>();
    snapshot->listener_counters[listener.name] = counters.get();
  }
  for (const auto& upstream_config : config->upstreams) {
    auto was = retired.find(upstream_config.name);
    auto built = balancer::Upstream::build(upstream_config, shared.registry, shared.affinity, shared.clock,
                                           was == retired.end() ? std::vector<config::BackendConfig>{} : was->second);
    if (!built) {
      return Result<std::shared_ptr<const Snapshot>>::fail(
          config->file + ": upstream \"" + upstream_config.name + "\": " + built.message());
    }
    snapshot->upstreams.emplace(upstream_config.name, std::move(*built));
  }
  // Certificates and keys are read here: a bad one fails the reload and the old snapshot serves on.
  for (const auto& listener : config->listeners) {
    if (!listener.tls.enabled) continue;
    auto built = tls::ServerContext::build(listener.tls, tls::TicketKeys::process(), listener.http2);
    if (!built) {
      return Result<std::shared_ptr<const Snapshot>>::fail(listener.tls.where + ": listener \"" + listener.name +
                                                           "\": " + built.message());
    }
    snapshot->listener_tls.emplace(listener.name, std::move(*built));
  }
  for (const auto& listener : config->listeners) {
    if (!listener.proxy_protocol) continue;
    auto trusted = balancer::CidrSet::parse(listener.trusted_proxies);
    if (!trusted) {
      return Result<std::shared_ptr<const Snapshot>>::fail(config->file + ": listener \"" + listener.name +
                                                           "\": " + trusted.message());
    }
    snapshot->listener_trusted.emplace(listener.name, std::move(*trusted));
  }
  for (const auto& upstream_config : config->upstreams) {
    if (!upstream_config.tls.enabled) continue;
    auto built = tls::ClientContext::build(upstream_config.tls, upstream_config.name);
    if (!built) {
      return Result<std::shared_ptr<const Snapshot>>::fail(upstream_config.tls.where + ": upstream \"" +
                                                           upstream_config.name + "\": " + built.message());
    }
    snapshot->upstream_tls.emplace(upstream_config.name, std::move(*built));
  }
  if (config->session_store.enabled) {
    auto setup = std::make_shared<store::StoreSetup>();
    setup->config = config->session_store;
    if (setup->config.tls.enabled) {
      auto built = tls::ClientContext::build(setup->config.tls, "session_store");
      if (!built) {
        return Result<std::shared_ptr<const Snapshot>>::fail(setup->config.tls.where +
                                                             ": [session_store]: " + built.message());
      }
      setup->tls = std::move(*built);
    }
    snapshot->session_store = std::move(setup);
  }
  return std::shared_ptr<const Snapshot>(std::move(snapshot));
}

}  // namespace limpet::runtime
