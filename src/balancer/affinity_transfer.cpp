#include "limpet/balancer/affinity_transfer.hpp"

#include <cstring>
#include <map>

namespace limpet::balancer::affinity_transfer {
namespace {

// Layout, integers little-endian:
//   "LMPTAFF\0"  u16 version  u16 reserved(0)
//   u32 names     { u16 length, bytes }            backend names, referenced by index
//   u32 entries   { u16 sid length, sid bytes, u32 name index, u32 remaining ms, u8 origin }
constexpr char kMagic[8] = {'L', 'M', 'P', 'T', 'A', 'F', 'F', '\0'};
constexpr uint32_t kMaxRemainingMs = 0xffffffffu;

class Writer {
 public:
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void bytes(std::string_view b) { out_.append(b); }
  void patch_u32(size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) out_[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
  }
  size_t size() const { return out_.size(); }
  std::string take() { return std::move(out_); }

 private:
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool u8(uint8_t* v) { return get(v, 1); }
  bool u16(uint16_t* v) { return get(v, 2); }
  bool u32(uint32_t* v) { return get(v, 4); }
  bool bytes(size_t n, std::string_view* out) {
    if (in_.size() - pos_ < n) return false;
    *out = in_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == in_.size(); }

 private:
  template <typename T>
  bool get(T* v, size_t n) {
    if (in_.size() - pos_ < n) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; ++i) x |= uint64_t{static_cast<unsigned char>(in_[pos_ + i])} << (8 * i);
    pos_ += n;
    *v = static_cast<T>(x);
    return true;
  }
  std::string_view in_;
  size_t pos_ = 0;
};

// Builds the name table as entries come, then the two sections.
class Encoder {
 public:
  void add(std::string_view sid, std::string_view backend, AffinityTable::Millis remaining,
           AffinityTable::Origin origin) {
    if (sid.size() > AffinityTable::kMaxKey || backend.size() > 0xffff) return;
    auto [it, fresh] = names_.try_emplace(std::string(backend), static_cast<uint32_t>(order_.size()));
    if (fresh) order_.push_back(&it->first);
    entries_.u16(static_cast<uint16_t>(sid.size()));
    entries_.bytes(sid);
    entries_.u32(it->second);
    const int64_t ms = remaining.count();
    entries_.u32(ms <= 0 ? 0 : ms >= kMaxRemainingMs ? kMaxRemainingMs : static_cast<uint32_t>(ms));
    entries_.u8(static_cast<uint8_t>(origin));
    ++count_;
  }

  std::string finish() {
    Writer w;
    w.bytes(std::string_view(kMagic, sizeof kMagic));
    w.u16(kVersion);
    w.u16(0);
    w.u32(static_cast<uint32_t>(order_.size()));
    for (const std::string* name : order_) {
      w.u16(static_cast<uint16_t>(name->size()));
      w.bytes(*name);
    }
    w.u32(count_);
    w.bytes(entries_.take());
    return w.take();
  }

 private:
  std::map<std::string, uint32_t, std::less<>> names_;
  std::vector<const std::string*> order_;
  Writer entries_;
  uint32_t count_ = 0;
};

}  // namespace

std::string encode_table(const AffinityTable& table, const BackendRegistry& registry) {
  Encoder enc;
  std::map<uint32_t, std::string> names;  // registry lookups once per backend, not per entry
  table.for_each_live([&](std::string_view sid, uint32_t id, AffinityTable::Millis remaining,
                          AffinityTable::Origin origin) {
    auto it = names.find(id);
    if (it == names.end()) {
      const BackendState* state = registry.find(id);
      it = names.emplace(id, state ? state->name : std::string()).first;
    }
    if (!it->second.empty()) enc.add(sid, it->second, remaining, origin);
  });
  return enc.finish();
}

std::string encode_records(const std::vector<Record>& records) {
  Encoder enc;
  for (const Record& r : records) enc.add(r.sid, r.backend, r.remaining, r.origin);
  return enc.finish();
}

Result<ImportStats> decode_into(std::string_view bytes, AffinityTable& table, const ResolveBackend& resolve) {
  using R = Result<ImportStats>;
  Reader in(bytes);
  std::string_view magic;
  uint16_t version = 0, reserved = 0;
  if (!in.bytes(sizeof kMagic, &magic) || std::memcmp(magic.data(), kMagic, sizeof kMagic) != 0) {
    return R::fail("affinity hand-over: not limpet's format (bad magic)");
  }
  if (!in.u16(&version) || !in.u16(&reserved)) return R::fail("affinity hand-over: truncated header");
  if (version != kVersion) {
    return R::fail("affinity hand-over: format version " + std::to_string(version) + ", this limpet reads " +
                   std::to_string(kVersion));
  }
  uint32_t name_count = 0;
  if (!in.u32(&name_count)) return R::fail("affinity hand-over: truncated name table");
  std::vector<std::optional<uint32_t>> ids;
  for (uint32_t i = 0; i < name_count; ++i) {
    uint16_t len = 0;
    std::string_view name;
    if (!in.u16(&len) || !in.bytes(len, &name)) return R::fail("affinity hand-over: truncated name table");
    ids.push_back(resolve(name));
  }
  struct Parsed {
    std::string_view sid;
    uint32_t name;
    uint32_t remaining_ms;
    uint8_t origin;
  };
  uint32_t entry_count = 0;
  if (!in.u32(&entry_count)) return R::fail("affinity hand-over: truncated entry count");
  std::vector<Parsed> parsed;  // everything checked before anything is imported
  parsed.reserve(std::min<size_t>(entry_count, bytes.size() / 11));
  for (uint32_t i = 0; i < entry_count; ++i) {
    Parsed p{};
    uint16_t len = 0;
    if (!in.u16(&len) || !in.bytes(len, &p.sid) || !in.u32(&p.name) || !in.u32(&p.remaining_ms) ||
        !in.u8(&p.origin)) {
      return R::fail("affinity hand-over: truncated at entry " + std::to_string(i));
    }
    if (p.name >= ids.size() || p.origin > static_cast<uint8_t>(AffinityTable::Origin::kStore)) {
      return R::fail("affinity hand-over: malformed entry " + std::to_string(i));
    }
    parsed.push_back(p);
  }
  if (!in.done()) return R::fail("affinity hand-over: bytes after the last entry");
  ImportStats stats;
  for (const Parsed& p : parsed) {
    const std::optional<uint32_t>& id = ids[p.name];
    if (!id) {
      ++stats.unknown_backend;
    } else if (table.restore(p.sid, *id, AffinityTable::Millis(p.remaining_ms),
                             static_cast<AffinityTable::Origin>(p.origin))) {
      ++stats.imported;
    } else {
      ++stats.already_known;
    }
  }
  return stats;
}

}  // namespace limpet::balancer::affinity_transfer
