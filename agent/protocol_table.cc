#include "agent/protocol_table.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/protocols_internal.h"
#include "agent/yaml_docs.h"
#include "yaml-cpp/yaml.h"

// Generated from deploy/protocols.yaml (agent/CMakeLists.txt):
// kDefaultProtocolsYaml, the file's bytes.
#include "protocols_yaml.inc"

namespace sockwatch {
namespace {

constexpr size_t kMaxFileBytes = 1 << 20;

// Values from the file are escaped in messages: an error may be logged, and
// a file must not be able to drive a terminal.
std::string Quote(absl::string_view s) {
  return absl::StrCat("'", protocols_internal::Escape(s, 64), "'");
}

// yaml-cpp marks are 0-based; nodes without one take their parent's line.
int LineOf(const YAML::Node& n, int fallback) {
  const YAML::Mark m = n.Mark();
  return m.is_null() ? fallback : m.line + 1;
}

class Parser {
 public:
  explicit Parser(absl::string_view source) : source_(protocols_internal::Escape(source, 256)) {}

  absl::Status Error(int line, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ":", line, ": ", what));
  }

  // Scalar text of a node; a missing, empty or non-scalar value is an error.
  absl::StatusOr<std::string> Scalar(const YAML::Node& n, int line, absl::string_view what) const {
    if (!n.IsDefined() || n.IsNull()) return Error(line, absl::StrCat(what, ": empty value"));
    if (!n.IsScalar()) return Error(line, absl::StrCat(what, ": expected a single value"));
    if (n.Scalar().empty()) return Error(line, absl::StrCat(what, ": empty value"));
    return n.Scalar();
  }

  absl::StatusOr<PortRule> Rule(const YAML::Node& node, int line) const;

 private:
  std::string source_;
};

absl::StatusOr<PortRule> Parser::Rule(const YAML::Node& node, int line) const {
  if (!node.IsMap())
    return Error(line, "expected a map like {port: 443, transport: tcp, expect: [tls]}");
  static constexpr absl::string_view kKeys[] = {"port", "transport", "expect"};
  YAML::Node port, transport, expect;
  bool seen_port = false, seen_transport = false, seen_expect = false;
  int port_line = line, transport_line = line, expect_line = line;
  for (auto it = node.begin(); it != node.end(); ++it) {
    const int key_line = LineOf(it->first, line);
    if (!it->first.IsScalar()) return Error(key_line, "keys must be plain words");
    const std::string& key = it->first.Scalar();
    YAML::Node* slot = key == "port"        ? &port
                       : key == "transport" ? &transport
                       : key == "expect"    ? &expect
                                            : nullptr;
    if (slot == nullptr) {
      return Error(key_line, absl::StrCat("unknown key ", Quote(key),
                                          " (known: ", absl::StrJoin(kKeys, ", "), ")"));
    }
    // A default-constructed YAML::Node counts as defined: track keys seen.
    bool& seen = key == "port" ? seen_port : key == "transport" ? seen_transport : seen_expect;
    if (seen) return Error(key_line, absl::StrCat("key ", Quote(key), " given twice"));
    seen = true;
    *slot = it->second;
    (key == "port" ? port_line : key == "transport" ? transport_line : expect_line) = key_line;
  }
  for (auto [seen, name] :
       {std::pair{seen_port, "port"}, {seen_transport, "transport"}, {seen_expect, "expect"}}) {
    if (!seen) return Error(line, absl::StrCat("missing the key '", name, "'"));
  }

  PortRule rule{};
  auto p = Scalar(port, port_line, "port");
  if (!p.ok()) return p.status();
  uint32_t number = 0;
  if (p->size() > 5 || !std::all_of(p->begin(), p->end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(*p, &number) || number < 1 || number > 65535) {
    return Error(port_line, absl::StrCat("bad port ", Quote(*p), " (expected 1-65535)"));
  }
  rule.port = static_cast<uint16_t>(number);

  auto t = Scalar(transport, transport_line, "transport");
  if (!t.ok()) return t.status();
  if (*t == "tcp") {
    rule.transport = Transport::kTcp;
  } else if (*t == "udp") {
    rule.transport = Transport::kUdp;
  } else {
    return Error(transport_line,
                 absl::StrCat("bad transport ", Quote(*t), " (expected tcp or udp)"));
  }

  if (!expect.IsSequence() || expect.size() == 0)
    return Error(expect_line, "expect: expected a non-empty list of protocols, like [tls]");
  for (const YAML::Node& item : expect) {
    const int item_line = LineOf(item, expect_line);
    auto name = Scalar(item, item_line, "expect");
    if (!name.ok()) return name.status();
    const std::optional<Proto> proto = ProtoFromName(*name);
    if (!proto.has_value() || *proto == Proto::kUnknown) {
      return Error(item_line, absl::StrCat("unknown protocol ", Quote(*name),
                                           " (known: tls, http, ssh, dns, smtp)"));
    }
    if (std::find(rule.expect.begin(), rule.expect.end(), *proto) != rule.expect.end())
      return Error(item_line, absl::StrCat("protocol ", Quote(*name), " listed twice"));
    rule.expect.push_back(*proto);
  }
  return rule;
}

bool RuleLess(const PortRule& a, uint16_t port, Transport t) {
  return a.port != port ? a.port < port : a.transport < t;
}

}  // namespace

absl::StatusOr<ProtocolTable> ProtocolTable::Parse(absl::string_view yaml,
                                                   absl::string_view source) {
  Parser p(source);
  // yaml-cpp reports everything by throwing; nothing may escape this function.
  try {
    // Not YAML::LoadAll: yaml-cpp 0.7's never returns on some inputs (a
    // lone ",", found by tests/fuzz). Load reads the first document, and
    // a second one is found by its marker.
    if (const int second = SecondYamlDocumentLine(yaml); second > 0)
      return p.Error(second, "more than one YAML document");
    YAML::Node top;
    try {
      top = YAML::Load(std::string(yaml));
    } catch (const YAML::ParserException& e) {
      return p.Error(e.mark.is_null() ? 1 : e.mark.line + 1,
                     absl::StrCat("YAML syntax error: ", Quote(e.msg)));
    }
    if (!top.IsDefined() || top.IsNull())
      return p.Error(1, "empty file: expected a map with the key 'ports'");
    if (!top.IsMap()) return p.Error(LineOf(top, 1), "expected a map with the key 'ports'");
    YAML::Node list;
    bool seen_list = false;  // a default-constructed YAML::Node counts as defined
    int list_line = LineOf(top, 1);
    for (auto it = top.begin(); it != top.end(); ++it) {
      const int key_line = LineOf(it->first, 1);
      if (!it->first.IsScalar() || it->first.Scalar() != "ports") {
        return p.Error(
            key_line,
            absl::StrCat("unknown key ", Quote(it->first.IsScalar() ? it->first.Scalar() : "?"),
                         " (known: ports)"));
      }
      if (seen_list) return p.Error(key_line, "key 'ports' given twice");
      seen_list = true;
      list = it->second;
      list_line = key_line;
    }
    if (!seen_list) return p.Error(LineOf(top, 1), "missing the key 'ports'");
    if (!list.IsSequence()) return p.Error(list_line, "ports: expected a list (use [] for none)");

    ProtocolTable table;
    std::vector<int> lines;  // of each rule, for the duplicate message
    for (const YAML::Node& node : list) {
      const int line = LineOf(node, list_line);
      auto rule = p.Rule(node, line);
      if (!rule.ok()) return rule.status();
      for (size_t i = 0; i < table.rules_.size(); ++i) {
        if (table.rules_[i].port == rule->port && table.rules_[i].transport == rule->transport) {
          return p.Error(line, absl::StrCat("duplicate port ", rule->port, "/",
                                            rule->transport == Transport::kTcp ? "tcp" : "udp",
                                            " (first at line ", lines[i], ")"));
        }
      }
      table.rules_.push_back(*std::move(rule));
      lines.push_back(line);
    }
    std::sort(table.rules_.begin(), table.rules_.end(), [](const PortRule& a, const PortRule& b) {
      return RuleLess(a, b.port, b.transport);
    });
    return table;
  } catch (const YAML::Exception& e) {
    return p.Error(e.mark.is_null() ? 1 : e.mark.line + 1, Quote(e.msg));
  } catch (const std::exception& e) {
    return p.Error(1, Quote(e.what()));
  }
}

absl::StatusOr<ProtocolTable> ProtocolTable::Load(const std::string& path) {
  const std::string shown = protocols_internal::Escape(path, 256);
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(shown, ": cannot open"));
  std::string text;
  char buf[65536];
  while (text.size() <= kMaxFileBytes && in.read(buf, sizeof(buf)).gcount() > 0)
    text.append(buf, in.gcount());
  if (in.bad()) return absl::UnavailableError(absl::StrCat(shown, ": read error"));
  if (text.size() > kMaxFileBytes)
    return absl::InvalidArgumentError(absl::StrCat(shown, ": larger than 1 MiB"));
  return Parse(text, path);
}

const ProtocolTable& ProtocolTable::Default() {
  static const ProtocolTable* const kDefault = [] {
    absl::StatusOr<ProtocolTable> t =
        Parse(absl::string_view(reinterpret_cast<const char*>(kDefaultProtocolsYaml),
                                sizeof(kDefaultProtocolsYaml)),
              "deploy/protocols.yaml (built in)");
    // The file is parsed by the unit tests at every build; failing here is
    // a build that skipped them, not something to limp on from.
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      std::abort();
    }
    return new ProtocolTable(*std::move(t));
  }();
  return *kDefault;
}

const PortRule* ProtocolTable::Find(uint16_t port, Transport t) const {
  auto it = std::lower_bound(rules_.begin(), rules_.end(), std::pair{port, t},
                             [](const PortRule& r, const std::pair<uint16_t, Transport>& k) {
                               return RuleLess(r, k.first, k.second);
                             });
  return it != rules_.end() && it->port == port && it->transport == t ? &*it : nullptr;
}

}  // namespace sockwatch
