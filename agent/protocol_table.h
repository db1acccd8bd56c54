// Which protocol each well-known port is expected to carry, for protocol
// inspection's port mismatch check. The default is deploy/protocols.yaml,
// embedded at build time; an operator can load their own.
#ifndef SOCKWATCH_AGENT_PROTOCOL_TABLE_H_
#define SOCKWATCH_AGENT_PROTOCOL_TABLE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/protocols.h"

namespace sockwatch {

struct PortRule {
  uint16_t port;
  Transport transport;
  std::vector<Proto> expect;  // any of these is fine; never empty, never kUnknown

  bool operator==(const PortRule&) const = default;
};

class ProtocolTable {
 public:
  // source: a name for error messages ("protocols.yaml"). Errors name the
  // line and what is wrong: absl::InvalidArgumentError.
  static absl::StatusOr<ProtocolTable> Parse(absl::string_view yaml, absl::string_view source);
  // Reads the file, then Parse.
  static absl::StatusOr<ProtocolTable> Load(const std::string& path);
  // The table in deploy/protocols.yaml, embedded at build time.
  static const ProtocolTable& Default();

  // nullptr: no expectation for that port.
  const PortRule* Find(uint16_t port, Transport t) const;
  size_t size() const { return rules_.size(); }
  // Sorted by port, then transport.
  const std::vector<PortRule>& rules() const { return rules_; }

 private:
  std::vector<PortRule> rules_;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_PROTOCOL_TABLE_H_
