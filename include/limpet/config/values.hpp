// Parsers for the value syntaxes of limpet.toml: durations, sizes, addresses, CIDRs, hash keys,
// status ranges. Free of toml11 so other layers and tests can use them. Pure functions, any thread.
// Errors say what was expected, without a position: the loader prefixes "FILE:LINE:COL: key: ".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "limpet/config/config.hpp"
#include "limpet/util/result.hpp"

namespace limpet::config {

// A value as an error message shows it: in double quotes, with quotes, backslashes and control
// characters escaped as TOML writes them, so that every message stays on one line.
std::string quote_value(std::string_view text);

// A decimal number and a unit: "250ms", "30s", "1.5s", "5m", "1h", "7d". Whole milliseconds only.
Result<Millis> parse_duration(std::string_view text);

// Bytes: "512", "512b", "16k", "16kb", "1m", "1mb", "1g", "1gb" (units case-insensitive, powers of 1024).
Result<size_t> parse_size(std::string_view text);

enum class AddressUse {
  kListen,   // "*:port" allowed (0.0.0.0)
  kConnect,  // something limpet connects to: "*" makes no sense
  kBackend,  // kConnect, or a DNS name ("node.internal:3000", Address::by_name), resolved at run time
};

// "host:port" or "[v6]:port", port 1..65535. The host is a numeric IPv4/IPv6 literal or "localhost"
// (127.0.0.1); names are not resolved, so a config never depends on DNS at load time. Address::host
// is the canonical numeric text (inet_ntop), so equal addresses compare equal.
Result<Address> parse_address(std::string_view text, AddressUse use);

// A numeric host and a port as an Address ("10.0.0.1:3000", "[fd00::1]:3000"). `ip` is canonical.
Address numeric_address(const std::string& ip, uint16_t port);

// "127.0.0.1:5353, [::1]" (port 53 when absent): the DNS servers of [server] resolver.
Result<std::vector<Address>> parse_resolver(std::string_view text);

// "10.0.0.0/8", "::1/128"; a bare address stands for one host. Returns the canonical
// "address/prefix" form (a prefix is always present in the result).
Result<std::string> parse_cidr(std::string_view text);

// "query:NAME", "header:NAME", "cookie:NAME" or "ip".
Result<HashKeySource> parse_hash_key(std::string_view text);

// "200-399" or "200"; statuses 100..599, first <= last.
Result<std::pair<int, int>> parse_status_range(std::string_view text);

// "${NAME}" replaced by the environment variable NAME ([A-Za-z_][A-Za-z0-9_]*), which must be
// set; "$${" stands for a literal "${"; any other "$" is itself. For secrets kept out of the file.
Result<std::string> expand_env(std::string_view text);
// The inverse for a value written back (limpet -T): "${" becomes "$${".
std::string escape_env(std::string_view text);

bool is_prime(uint64_t n);
// The smallest prime >= n (n small enough that the answer fits: ring sizes).
uint64_t next_prime(uint64_t n);

}  // namespace limpet::config
