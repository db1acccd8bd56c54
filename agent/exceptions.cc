#include "agent/exceptions.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/text.h"
#include "agent/yaml_docs.h"
#include "re2/re2.h"
#include "yaml-cpp/yaml.h"

namespace sockwatch {

constexpr absl::string_view kSuspiciousRule = "suspicious_image_network";
namespace {

constexpr int kGlobFlags = FNM_PATHNAME | FNM_PERIOD;
constexpr size_t kMaxFileBytes = 16 << 20;
constexpr absl::string_view kRules[] = {"first_network_use", "new_behavior", "new_listener",
                                        "suspicious_image_network"};

// ---------------------------------------------------------------------------
// Parsing. Values from the file are escaped in messages: the agent logs them
// on a failed reload, and a file must not be able to drive a terminal.

std::string Quote(absl::string_view s) { return absl::StrCat("'", EscapeForTerminal(s), "'"); }

bool IsHex(absl::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isxdigit(c); });
}

bool IsDigits(absl::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isdigit(c); });
}

// yaml-cpp marks are 0-based; nodes without a position (an empty value) have
// a null mark and take their key's line instead.
int LineOf(const YAML::Node& n, int fallback) {
  const YAML::Mark m = n.Mark();
  return m.is_null() ? fallback : m.line + 1;
}

struct Field {
  YAML::Node value;
  int line;
};
using Fields = std::vector<std::pair<std::string, Field>>;

class Parser {
 public:
  explicit Parser(absl::string_view filename) : file_(EscapeForTerminal(filename)) {}

  absl::Status Error(int line, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ":", line, ": ", what));
  }

  // A map's fields in order. Unknown and repeated keys are refused rather
  // than ignored or overwritten: either would silently change a match.
  absl::StatusOr<Fields> MapFields(const YAML::Node& map, int line, absl::string_view where,
                                   std::initializer_list<absl::string_view> known) const {
    if (!map.IsMap()) return Error(line, absl::StrCat(where, ": expected a map of keys"));
    Fields out;
    for (auto it = map.begin(); it != map.end(); ++it) {
      const int key_line = LineOf(it->first, line);
      if (!it->first.IsScalar())
        return Error(key_line, absl::StrCat(where, ": keys must be plain words"));
      const std::string& key = it->first.Scalar();
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        return Error(key_line, absl::StrCat(where, ": unknown key ", Quote(key),
                                            " (known: ", absl::StrJoin(known, ", "), ")"));
      }
      for (const auto& [k, f] : out) {
        if (k == key) {
          return Error(key_line, absl::StrCat(where, ": key ", Quote(key),
                                              " given twice (first at line ", f.line, ")"));
        }
      }
      out.push_back({key, Field{it->second, key_line}});
    }
    return out;
  }

  absl::StatusOr<std::string> Scalar(const Field& f, absl::string_view what) const {
    if (f.value.IsNull() || (f.value.IsScalar() && f.value.Scalar().empty()))
      return Error(f.line, absl::StrCat(what, ": empty value"));
    if (!f.value.IsScalar()) return Error(f.line, absl::StrCat(what, ": expected a single value"));
    return f.value.Scalar();
  }

  // A scalar or a non-empty list of scalars, each with its line.
  absl::StatusOr<std::vector<std::pair<std::string, int>>> OneOrMany(const Field& f,
                                                                     absl::string_view what) const {
    std::vector<std::pair<std::string, int>> out;
    if (!f.value.IsSequence()) {
      auto s = Scalar(f, what);
      if (!s.ok()) return s.status();
      out.emplace_back(*s, f.line);
      return out;
    }
    if (f.value.size() == 0) return Error(f.line, absl::StrCat(what, ": empty list"));
    for (const YAML::Node& item : f.value) {
      auto s = Scalar(Field{item, LineOf(item, f.line)}, what);
      if (!s.ok()) return s.status();
      out.emplace_back(*s, LineOf(item, f.line));
    }
    return out;
  }

  absl::StatusOr<ExceptionEntry> Entry(const YAML::Node& node, int line) const;
  absl::Status ParseMatch(const Field& f, ExceptionMatch& m) const;

 private:
  std::string file_;
};

std::optional<absl::Time> ParseExpiry(absl::string_view s) {
  absl::Time t;
  std::string why;
  // A bare date means 00:00 UTC of that day: the entry is gone on the date
  // written, which errs towards alerting rather than towards silence.
  if (s.size() == 10 && s[4] == '-' && s[7] == '-') {
    if (IsDigits(s.substr(0, 4)) && IsDigits(s.substr(5, 2)) && IsDigits(s.substr(8, 2)) &&
        absl::ParseTime("%Y-%m-%d", s, absl::UTCTimeZone(), &t, &why)) {
      return t;
    }
  } else if (absl::ParseTime(absl::RFC3339_full, s, &t, &why)) {
    return t;
  }
  return std::nullopt;
}

std::optional<PortRange> ParsePortRange(absl::string_view s) {
  std::pair<absl::string_view, absl::string_view> lh = absl::StrSplit(s, absl::MaxSplits('-', 1));
  absl::string_view lo_s = absl::StripAsciiWhitespace(lh.first);
  absl::string_view hi_s =
      absl::StripAsciiWhitespace(absl::StrContains(s, '-') ? lh.second : lh.first);
  uint32_t lo = 0, hi = 0;
  if (!IsDigits(lo_s) || !IsDigits(hi_s) || lo_s.size() > 5 || hi_s.size() > 5 ||
      !absl::SimpleAtoi(lo_s, &lo) || !absl::SimpleAtoi(hi_s, &hi) || lo < 1 || hi > 65535 ||
      lo > hi) {
    return std::nullopt;
  }
  return PortRange{lo, hi};
}

// `why` says what is wrong when there is no CIDR.
std::optional<Cidr> ParseCidr(absl::string_view s, std::string* why) {
  std::pair<absl::string_view, absl::string_view> ap = absl::StrSplit(s, absl::MaxSplits('/', 1));
  Cidr c;
  const std::string addr(ap.first);
  if (inet_pton(AF_INET, addr.c_str(), c.addr.data()) == 1) {
    c.family = AF_INET;
  } else if (inet_pton(AF_INET6, addr.c_str(), c.addr.data()) == 1) {
    c.family = AF_INET6;
  } else {
    *why = "not an IPv4 or IPv6 address";
    return std::nullopt;
  }
  const int bits = c.family == AF_INET ? 32 : 128;
  c.prefix_len = bits;
  if (absl::StrContains(s, '/')) {
    if (!IsDigits(ap.second) || ap.second.size() > 3 ||
        !absl::SimpleAtoi(ap.second, &c.prefix_len) || c.prefix_len > bits) {
      *why = absl::StrCat("prefix length must be 0-", bits);
      return std::nullopt;
    }
  }
  // Host bits set usually means a typo (10.0.0.1/8 for 10.0.0.1/32): refuse
  // instead of guessing which of the two was meant.
  for (int i = c.prefix_len; i < bits; ++i) {
    if (c.addr[i / 8] & (0x80 >> (i % 8))) {
      *why = "host bits are set after the prefix length";
      return std::nullopt;
    }
  }
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(c.family, c.addr.data(), buf, sizeof(buf));
  c.text = absl::StrCat(buf, "/", c.prefix_len);
  return c;
}

std::string LiteralPrefix(const std::string& glob) {
  return glob.substr(0, std::min(glob.find_first_of("*?[\\"), glob.size()));
}

// Same match fields, same id: renewing an entry (new expiry, new owner) keeps
// its usage history. Lists are sorted so their order does not matter.
std::string StableId(const ExceptionMatch& m) {
  std::vector<std::string> ports, remotes;
  for (const PortRange& p : m.ports) ports.push_back(absl::StrCat(p.lo, "-", p.hi));
  for (const Cidr& c : m.remotes) remotes.push_back(c.text);
  std::sort(ports.begin(), ports.end());
  std::sort(remotes.begin(), remotes.end());
  const std::string canon = absl::StrCat(
      "rule=", m.rule, "\nexe=", m.exe, "\nsha256=", m.sha256, "\nargv=", m.argv,
      "\nparent_exe=", m.parent_exe, "\ncontainer=", m.container, "\ndirection=", m.direction,
      "\nprotocol=", m.protocol, "\nport=", absl::StrJoin(ports, ","),
      "\nremote=", absl::StrJoin(remotes, ","), "\n");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(canon.data(), canon.size(), md, &len, EVP_sha256(), nullptr);
  std::string hex;
  for (int i = 0; i < 8; ++i) absl::StrAppend(&hex, absl::Hex(md[i], absl::kZeroPad2));
  return absl::StrCat("auto-", hex);
}

absl::Status Parser::ParseMatch(const Field& f, ExceptionMatch& m) const {
  if (f.value.IsNull()) return Error(f.line, "match: needs at least one field");
  auto fields = MapFields(f.value, f.line, "match",
                          {"exe", "sha256", "argv", "parent_exe", "container", "direction",
                           "protocol", "port", "remote", "rule"});
  if (!fields.ok()) return fields.status();
  if (fields->empty()) return Error(f.line, "match: needs at least one field");
  for (const auto& [key, field] : *fields) {
    const std::string what = absl::StrCat("match.", key);
    if (key == "port" || key == "remote") {
      auto items = OneOrMany(field, what);
      if (!items.ok()) return items.status();
      for (const auto& [text, line] : *items) {
        std::string why;
        if (key == "port") {
          auto p = ParsePortRange(text);
          if (!p) {
            return Error(line, absl::StrCat(what, ": bad port ", Quote(text),
                                            " (want 1-65535, or a range like 8000-8100)"));
          }
          m.ports.push_back(*p);
        } else {
          auto c = ParseCidr(text, &why);
          if (!c) return Error(line, absl::StrCat(what, ": bad CIDR ", Quote(text), ": ", why));
          m.remotes.push_back(*c);
        }
      }
      continue;
    }
    auto v = Scalar(field, what);
    if (!v.ok()) return v.status();
    std::string s = *v;
    if (key == "exe" || key == "parent_exe") {
      // Exe paths are canonical and absolute: anything else would never match.
      if (!absl::StrContains("/*?[", s[0]))
        return Error(field.line,
                     absl::StrCat(what, ": ", Quote(s), " is not an absolute path glob"));
      (key == "exe" ? m.exe_prefix : m.parent_exe_prefix) = LiteralPrefix(s);
      (key == "exe" ? m.exe : m.parent_exe) = s;
    } else if (key == "sha256") {
      if (s.size() != 64 || !IsHex(s))
        return Error(field.line, absl::StrCat(what, ": want 64 hex digits, got ", Quote(s)));
      m.sha256 = absl::AsciiStrToLower(s);
    } else if (key == "argv") {
      RE2::Options opts;
      opts.set_log_errors(false);  // the error goes into the Status instead
      auto re = std::make_shared<const RE2>(s, opts);
      if (!re->ok())
        return Error(field.line,
                     absl::StrCat(what, ": bad regex: ", EscapeForTerminal(re->error())));
      m.argv = s;
      m.argv_re = std::move(re);
    } else if (key == "container") {
      if (s.size() < 12 || s.size() > 64 || !IsHex(s)) {
        return Error(field.line, absl::StrCat(what,
                                              ": want a container id or a prefix of at "
                                              "least 12 hex digits, got ",
                                              Quote(s)));
      }
      m.container = absl::AsciiStrToLower(s);
    } else if (key == "direction" || key == "protocol") {
      s = absl::AsciiStrToLower(s);
      const bool dir = key == "direction";
      if (dir && (s == "outbound" || s == "inbound")) {
        m.direction = s == "outbound" ? v1::DIRECTION_OUTBOUND : v1::DIRECTION_INBOUND;
      } else if (!dir && (s == "tcp" || s == "udp")) {
        m.protocol = s == "tcp" ? v1::PROTOCOL_TCP : v1::PROTOCOL_UDP;
      } else {
        return Error(field.line,
                     absl::StrCat(what, ": want ", dir ? "outbound or inbound" : "tcp or udp",
                                  ", got ", Quote(*v)));
      }
    } else if (key == "rule") {
      if (std::find(std::begin(kRules), std::end(kRules), s) == std::end(kRules)) {
        return Error(field.line, absl::StrCat(what, ": unknown rule ", Quote(s),
                                              " (known: ", absl::StrJoin(kRules, ", "), ")"));
      }
      m.rule = s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ExceptionEntry> Parser::Entry(const YAML::Node& node, int line) const {
  auto fields = MapFields(node, line, "exception", {"id", "owner", "reason", "expires", "match"});
  if (!fields.ok()) return fields.status();
  ExceptionEntry e;
  e.line = line;
  bool has_expiry = false, has_match = false;
  for (const auto& [key, field] : *fields) {
    if (key == "match") {
      if (absl::Status st = ParseMatch(field, e.match); !st.ok()) return st;
      has_match = true;
      continue;
    }
    auto v = Scalar(field, key);
    if (!v.ok()) return v.status();
    if (absl::StripAsciiWhitespace(*v).empty())
      return Error(field.line, absl::StrCat(key, ": empty value"));
    if (key == "id") {
      const bool ok_chars = std::all_of(v->begin(), v->end(), [](char c) {
        return absl::ascii_isalnum(c) || absl::StrContains("._:/@+-", c);
      });
      if (!ok_chars || v->size() > 128) {
        return Error(field.line, absl::StrCat("id: ", Quote(*v),
                                              " may only use letters, digits "
                                              "and ._:/@+- (at most 128)"));
      }
      e.id = *v;
    } else if (key == "owner") {
      e.owner = *v;
    } else if (key == "reason") {
      e.reason = *v;
    } else if (key == "expires") {
      std::optional<absl::Time> t = ParseExpiry(*v);
      if (!t) {
        return Error(field.line, absl::StrCat("expires: bad date ", Quote(*v),
                                              " (want YYYY-MM-DD or RFC 3339 like "
                                              "2027-03-01T12:00:00Z)"));
      }
      e.expires = *t;
      has_expiry = true;
    }
  }
  for (auto [missing, name] :
       {std::pair{e.owner.empty(), "owner"}, std::pair{e.reason.empty(), "reason"},
        std::pair{!has_expiry, "expires"}, std::pair{!has_match, "match"}}) {
    if (missing) return Error(line, absl::StrCat("exception: missing required key '", name, "'"));
  }
  if (e.id.empty()) {
    e.id = StableId(e.match);
    e.id_generated = true;
  }
  return e;
}

// ---------------------------------------------------------------------------
// Matching.

bool GlobMatch(const std::string& glob, const std::string& prefix, const std::string& s) {
  // The literal-prefix test rejects most entries without calling fnmatch.
  return !s.empty() && absl::StartsWith(s, prefix) &&
         fnmatch(glob.c_str(), s.c_str(), kGlobFlags) == 0;
}

// Per-event work shared by all entries, done at most once and only if some
// entry needs it.
class FactsCache {
 public:
  explicit FactsCache(const ExceptionFacts& f) : f_(f) {}
  const std::string& JoinedArgv() {
    if (!argv_) argv_ = absl::StrJoin(f_.argv, " ");
    return *argv_;
  }
  // Family (0 when not an address) and bytes of remote_ip.
  int Remote(const uint8_t** addr) {
    if (remote_family_ < 0) {
      remote_family_ = 0;
      if (inet_pton(AF_INET, f_.remote_ip.c_str(), remote_.data()) == 1)
        remote_family_ = AF_INET;
      else if (inet_pton(AF_INET6, f_.remote_ip.c_str(), remote_.data()) == 1)
        remote_family_ = AF_INET6;
    }
    *addr = remote_.data();
    return remote_family_;
  }

 private:
  const ExceptionFacts& f_;
  std::optional<std::string> argv_;
  int remote_family_ = -1;
  std::array<uint8_t, 16> remote_{};
};

bool InCidr(const Cidr& c, int family, const uint8_t* a) {
  if (family != c.family) return false;
  const int full = c.prefix_len / 8, rest = c.prefix_len % 8;
  if (std::memcmp(a, c.addr.data(), full) != 0) return false;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xFF << (8 - rest));
  return (a[full] & mask) == (c.addr[full] & mask);
}

// Cheap tests first; the regex last.
bool Matches(const ExceptionMatch& m, const ExceptionFacts& f, FactsCache& cache) {
  if (!m.rule.empty() && m.rule != f.rule) return false;
  // A planted binary (deleted, memfd, hidden or world-writable directory) on
  // the network is never normalised by a general entry: only an entry that
  // names this rule can silence it.
  if (m.rule.empty() && f.rule == kSuspiciousRule) return false;
  if (m.direction != v1::DIRECTION_UNSPECIFIED && m.direction != f.direction) return false;
  if (m.protocol != v1::PROTOCOL_UNSPECIFIED && m.protocol != f.protocol) return false;
  if (!m.ports.empty() && std::none_of(m.ports.begin(), m.ports.end(), [&](const PortRange& p) {
        return f.port >= p.lo && f.port <= p.hi;
      })) {
    return false;
  }
  if (!m.container.empty() && !absl::StartsWithIgnoreCase(f.container_id, m.container))
    return false;
  if (!m.sha256.empty() && !absl::EqualsIgnoreCase(m.sha256, f.sha256)) return false;
  if (!m.exe.empty() && !GlobMatch(m.exe, m.exe_prefix, f.exe)) return false;
  if (!m.parent_exe.empty() && !GlobMatch(m.parent_exe, m.parent_exe_prefix, f.parent_exe))
    return false;
  if (!m.remotes.empty()) {
    const uint8_t* addr;
    const int family = cache.Remote(&addr);
    if (std::none_of(m.remotes.begin(), m.remotes.end(),
                     [&](const Cidr& c) { return InCidr(c, family, addr); })) {
      return false;
    }
  }
  if (m.argv_re != nullptr &&
      (f.argv.empty() || !RE2::PartialMatch(cache.JoinedArgv(), *m.argv_re))) {
    return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<ExceptionSet> ExceptionSet::Parse(absl::string_view yaml,
                                                 absl::string_view filename) {
  Parser p(filename);
  // yaml-cpp reports everything by throwing; nothing may escape this function.
  try {
    // A second document would otherwise be ignored without a word. Not
    // YAML::LoadAll: it never returns on some inputs (agent/yaml_docs.h).
    if (const int second = SecondYamlDocumentLine(yaml); second > 0)
      return p.Error(second, "more than one YAML document");
    YAML::Node doc;
    try {
      doc = YAML::Load(std::string(yaml));
    } catch (const YAML::ParserException& e) {
      return p.Error(e.mark.is_null() ? 1 : e.mark.line + 1,
                     absl::StrCat("YAML syntax error: ", EscapeForTerminal(e.msg)));
    }
    if (!doc.IsDefined() || doc.IsNull())
      return p.Error(1, "empty file: expected a map with the key 'exceptions'");
    auto top = p.MapFields(doc, LineOf(doc, 1), "top level", {"exceptions"});
    if (!top.ok()) return top.status();
    if (top->empty()) return p.Error(LineOf(doc, 1), "missing the key 'exceptions'");
    const Field& list = top->front().second;
    if (!list.value.IsSequence())
      return p.Error(list.line, "exceptions: expected a list (use [] for none)");

    ExceptionSet set;
    set.filename_ = std::string(filename);
    absl::flat_hash_map<std::string, int> id_lines;
    for (const YAML::Node& node : list.value) {
      const int line = LineOf(node, list.line);
      auto e = p.Entry(node, line);
      if (!e.ok()) return e.status();
      auto [it, fresh] = id_lines.emplace(e->id, line);
      if (!fresh) {
        return p.Error(line, e->id_generated
                                 ? absl::StrCat("duplicate exception: same match as the entry at "
                                                "line ",
                                                it->second, " (", e->id, ")")
                                 : absl::StrCat("duplicate id ", Quote(e->id), " (first at line ",
                                                it->second, ")"));
      }
      set.entries_.push_back(*std::move(e));
    }
    return set;
  } catch (const YAML::Exception& e) {
    return p.Error(e.mark.is_null() ? 1 : e.mark.line + 1, EscapeForTerminal(e.msg));
  } catch (const std::exception& e) {
    return p.Error(1, EscapeForTerminal(e.what()));
  }
}

absl::StatusOr<ExceptionSet> ExceptionSet::Load(const std::string& path) {
  const std::string shown = EscapeForTerminal(path);
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const std::string msg = absl::StrCat(shown, ": ", std::strerror(errno));
    return errno == ENOENT ? absl::NotFoundError(msg) : absl::UnavailableError(msg);
  }
  std::string text;
  struct stat st;
  absl::Status status;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    status = absl::InvalidArgumentError(absl::StrCat(shown, ": not a regular file"));
  } else if (static_cast<size_t>(st.st_size) > kMaxFileBytes) {
    status = absl::InvalidArgumentError(absl::StrCat(shown, ": larger than 16 MiB"));
  } else {
    char buf[65536];
    ssize_t n = 0;
    while (text.size() <= kMaxFileBytes && (n = read(fd, buf, sizeof(buf))) > 0)
      text.append(buf, n);
    if (n < 0) status = absl::UnavailableError(absl::StrCat(shown, ": ", std::strerror(errno)));
    if (text.size() > kMaxFileBytes)  // it grew while being read
      status = absl::InvalidArgumentError(absl::StrCat(shown, ": larger than 16 MiB"));
  }
  close(fd);
  if (!status.ok()) return status;
  return Parse(text, path);
}

const ExceptionEntry* ExceptionSet::Match(const ExceptionFacts& facts, absl::Time now) const {
  FactsCache cache(facts);
  for (const ExceptionEntry& e : entries_) {
    if (!e.Expired(now) && Matches(e.match, facts, cache)) return &e;
  }
  return nullptr;
}

std::vector<const ExceptionEntry*> ExceptionSet::Expired(absl::Time now) const {
  std::vector<const ExceptionEntry*> out;
  for (const ExceptionEntry& e : entries_)
    if (e.Expired(now)) out.push_back(&e);
  return out;
}

const ExceptionEntry* ExceptionSet::Find(absl::string_view id) const {
  for (const ExceptionEntry& e : entries_)
    if (e.id == id) return &e;
  return nullptr;
}

}  // namespace sockwatch
