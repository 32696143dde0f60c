// What limpet refuses in a complete request head that strict llhttp lets through, checked by the
// parser before the head goes anywhere (doc/security.md). One place for the rules, so that the
// parser, the fuzz targets and the docs agree on them.
#pragma once

#include <optional>
#include <string_view>

#include "limpet/http/message.hpp"

namespace limpet::http {

struct Refusal {
  int status = 400;
  std::string_view reason;  // a literal
};

// nullopt when the head may go on. Checks the version (HTTP/0.9 is 400, 2.0 is 505: this is an
// HTTP/1.1 listener), CONNECT (501: limpet is no forward proxy), the target's form, field names,
// and Transfer-Encoding (RFC 9112 §6.1, §6.3: on HTTP/1.0 or more than one header 400; anything
// but exactly one "chunked" is 400 when chunked is not last, else 501 as a coding limpet does not
// implement).
std::optional<Refusal> refuse_request_head(const RequestHead& head);

// RFC 9112 §3.2.2: the host of an absolute-form target ("http://example.com:8080/a?b"), or
// nullopt when the target is not absolute-form. `path` gets what follows the authority
// (possibly empty: origin-form is then "/" and that).
struct AbsoluteForm {
  std::string_view authority;
  std::string_view path;
};
// An absolute-form target limpet accepts: scheme http or https, a non-empty authority without
// userinfo. nullopt for origin-form and asterisk-form; `*refusal` set for anything else.
std::optional<AbsoluteForm> parse_absolute_form(std::string_view target, std::optional<Refusal>* refusal);

}  // namespace limpet::http
