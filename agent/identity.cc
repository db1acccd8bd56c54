#include "agent/identity.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/text.h"

namespace sockwatch {
namespace {

using Args = absl::Span<const std::string>;

// Inline code is evidence, not storage: 4 KiB shows what ran without letting
// one giant argv bloat every alert that carries it.
constexpr size_t kMaxInlineBytes = 4096;
constexpr absl::string_view kEllipsis = "\xE2\x80\xA6";  // …

bool IsOneOf(absl::string_view s, absl::Span<const absl::string_view> set) {
  return std::find(set.begin(), set.end(), s) != set.end();
}

// Valid UTF-8, at most kMaxInlineBytes plus "…", cut on a character boundary.
std::string Capped(absl::string_view raw) {
  if (raw.size() <= kMaxInlineBytes) return ValidUtf8(raw);
  // Back off to a sequence start so the cut does not itself make a U+FFFD.
  size_t cut = kMaxInlineBytes;
  while (cut > kMaxInlineBytes - 3 && (static_cast<uint8_t>(raw[cut]) & 0xC0) == 0x80) --cut;
  std::string s = ValidUtf8(raw.substr(0, cut));
  if (s.size() > kMaxInlineBytes) {  // mending grew it: cut again, now on valid UTF-8
    cut = kMaxInlineBytes;
    while (cut > 0 && (static_cast<uint8_t>(s[cut]) & 0xC0) == 0x80) --cut;
    s.resize(cut);
  }
  s.append(kEllipsis.data(), kEllipsis.size());
  return s;
}

// Lexical: symlinks are not resolved (the file may be gone, or in another
// mount namespace), only ".", ".." and repeated slashes.
std::string NormalizeAbsolute(absl::string_view path) {
  std::vector<absl::string_view> parts;
  for (absl::string_view p : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (p == ".") continue;
    if (p == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(p);
  }
  return absl::StrCat("/", absl::StrJoin(parts, "/"));
}

std::string ResolveScript(absl::string_view script, absl::string_view cwd) {
  if (absl::StartsWith(script, "/")) return NormalizeAbsolute(script);
  if (absl::StartsWith(cwd, "/")) return NormalizeAbsolute(absl::StrCat(cwd, "/", script));
  return std::string(script);
}

// ---- Interpreter command lines ------------------------------------------

enum class Family { kNone, kPython, kPerl, kRuby, kNode, kShell, kBash, kPhp, kJava };

// \d*(\.\d+)*: "", "3", "3.11", "5.36.0".
bool IsVersionSuffix(absl::string_view s) {
  size_t i = 0;
  while (i < s.size() && absl::ascii_isdigit(s[i])) ++i;
  while (i < s.size()) {
    if (s[i] != '.' || i + 1 >= s.size() || !absl::ascii_isdigit(s[i + 1])) return false;
    ++i;
    while (i < s.size() && absl::ascii_isdigit(s[i])) ++i;
  }
  return true;
}

absl::string_view Basename(absl::string_view exe) {
  // A package upgrade leaves running interpreters with "(deleted)" exes; they
  // still run the same kind of program.
  absl::ConsumeSuffix(&exe, " (deleted)");
  const size_t slash = exe.rfind('/');
  return slash == absl::string_view::npos ? exe : exe.substr(slash + 1);
}

Family FamilyOf(absl::string_view base) {
  auto versioned = [base](absl::string_view name) {
    return absl::StartsWith(base, name) && IsVersionSuffix(base.substr(name.size()));
  };
  if (versioned("python")) return Family::kPython;
  if (versioned("perl")) return Family::kPerl;
  if (versioned("ruby")) return Family::kRuby;
  if (versioned("php")) return Family::kPhp;
  if (base == "node" || base == "nodejs") return Family::kNode;
  if (base == "bash") return Family::kBash;
  if (IsOneOf(base, {"sh", "dash", "zsh", "ksh"})) return Family::kShell;
  if (base == "java") return Family::kJava;
  return Family::kNone;
}

// What an interpreter command line runs.
struct Parsed {
  enum Kind { kNothing, kStdin, kName, kPath, kInline } kind = kStdin;
  std::string value;  // kName: module/class; kPath: script file; kInline: code
  std::string flag;   // kInline: the option that carried the code
};

Parsed Stdin() { return {}; }
Parsed Nothing() { return {Parsed::kNothing, "", ""}; }
Parsed Name(std::string v) { return {Parsed::kName, std::move(v), ""}; }
Parsed Path(std::string v) { return {Parsed::kPath, std::move(v), ""}; }
Parsed Inline(std::string flag, std::string code) {
  return {Parsed::kInline, std::move(code), std::move(flag)};
}

// Repeated -e options add lines (perl, ruby); the first flag names the key.
void AddCode(Parsed* p, absl::string_view flag, const std::string& code) {
  if (p->kind != Parsed::kInline) *p = Inline(std::string(flag), "");
  if (!p->value.empty()) p->value += '\n';
  p->value += code;
}

// The value of the short option at args[*i][j]: the rest of that argument
// when attached, else the next argument (consumed).
std::string TakeValue(Args args, size_t* i, size_t j) {
  const std::string& a = args[*i];
  if (j + 1 < a.size()) return a.substr(j + 1);
  if (*i + 1 < args.size()) return args[++*i];
  return "";
}

// The common tail: code wins, then the first operand at i, else stdin.
Parsed Operand(Parsed inline_code, Args args, size_t i) {
  if (inline_code.kind == Parsed::kInline) return inline_code;
  if (i < args.size() && args[i] != "-") return Path(args[i]);
  return Stdin();
}

Parsed ParsePython(Args args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-") return Stdin();
    if (a == "--") return Operand({}, args, i + 1);
    if (a.size() < 2 || a[0] != '-') return Path(a);
    if (a[1] == '-') {
      if (a == "--check-hash-based-pycs") ++i;
      continue;
    }
    for (size_t j = 1; j < a.size(); ++j) {
      const char c = a[j];
      if (c == 'c') return Inline("-c", TakeValue(args, &i, j));
      if (c == 'm') return Name("-m " + TakeValue(args, &i, j));
      if (c == 'W' || c == 'X' || c == 'Q') {
        TakeValue(args, &i, j);
        break;
      }
    }
  }
  return Stdin();
}

// Perl and ruby share a shape: clustered switches, repeatable -e, and the
// first operand is the script unless -e gave the code.
Parsed ParsePerlRuby(Args args, bool ruby) {
  Parsed code;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-") break;
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || a[0] != '-') break;
    if (a[1] == '-') {
      if (ruby && a.find('=') == std::string::npos &&
          IsOneOf(a, {"--enable", "--disable", "--encoding", "--external-encoding",
                      "--internal-encoding"}))
        ++i;
      continue;
    }
    for (size_t j = 1; j < a.size(); ++j) {
      const char c = a[j];
      if (c == 'e' || (c == 'E' && !ruby)) {
        AddCode(&code, absl::StrCat("-", std::string(1, c)), TakeValue(args, &i, j));
        break;
      }
      if (c == 'I' || (ruby && (c == 'r' || c == 'C' || c == 'E'))) {
        TakeValue(args, &i, j);
        break;
      }
      if (c == '0' || (c == 'l' && !ruby)) {  // -l0, -0777, -0xHH: digits only
        bool hex = c == '0' && j + 1 < a.size() && (a[j + 1] == 'x' || a[j + 1] == 'X');
        if (hex) ++j;
        while (j + 1 < a.size() &&
               (hex ? absl::ascii_isxdigit(a[j + 1]) : (a[j + 1] >= '0' && a[j + 1] <= '7')))
          ++j;
        continue;
      }
      // These take the rest of the argument as their value.
      if (absl::StrContains(ruby ? "xWTKFi" : "MmxidDVFC", c)) break;
    }
  }
  return Operand(std::move(code), args, i);
}

// Node options whose value may be the next argument.
// clang-format off
constexpr absl::string_view kNodeValued[] = {
    "-r", "--require", "--import", "--loader", "--experimental-loader", "-C", "--conditions",
    "--input-type", "--title", "--env-file", "--env-file-if-exists", "--watch-path",
    "--test-reporter", "--test-reporter-destination", "--test-name-pattern", "--test-skip-pattern",
    "--redirect-warnings", "--report-dir", "--report-directory", "--report-filename",
    "--diagnostic-dir", "--dns-result-order", "--unhandled-rejections", "--openssl-config",
    "--icu-data-dir", "--cpu-prof-dir", "--cpu-prof-name", "--heap-prof-dir", "--heap-prof-name",
    "--heapsnapshot-signal", "--secure-heap", "--secure-heap-min", "--tls-cipher-list",
    "--tls-keylog", "--trace-event-categories", "--trace-event-file-pattern",
    "--experimental-policy", "--policy-integrity", "--disable-proto", "--disable-warning",
    "--max-http-header-size", "--inspect-port", "--debug-port", "--inspect-publish-uid",
    "--use-largepages", "--localstorage-file", "--experimental-sea-config"};
// clang-format on

Parsed ParseNode(Args args) {
  Parsed code;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-") break;
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || a[0] != '-') break;
    const size_t eq = a.find('=');
    const absl::string_view name = absl::string_view(a).substr(0, eq);
    auto value = [&]() -> std::string {
      if (eq != std::string::npos) return a.substr(eq + 1);
      return i + 1 < args.size() ? args[++i] : std::string();
    };
    if (name == "-e" || name == "--eval") {
      AddCode(&code, "-e", value());
    } else if (name == "-p" || name == "--print" || name == "-pe") {
      // "-p -e CODE" is print with the code in -e.
      const bool eval_next = eq == std::string::npos && i + 1 < args.size() &&
                             (args[i + 1] == "-e" || args[i + 1] == "--eval");
      AddCode(&code, "-p", eval_next ? std::string() : value());
    } else if (IsOneOf(name, kNodeValued)) {
      value();
    }
  }
  return Operand(std::move(code), args, i);
}

Parsed ParseShell(Args args, bool bash) {
  bool command = false, read_stdin = false;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-" || a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || (a[0] != '-' && a[0] != '+')) break;
    if (a[0] == '-' && a[1] == '-') {  // bash long options
      if (a == "--rcfile" || a == "--init-file") ++i;
      continue;
    }
    for (size_t j = 1; j < a.size(); ++j) {
      const char c = a[j];
      if (a[0] == '-' && c == 'c') command = true;
      if (a[0] == '-' && c == 's') read_stdin = true;
      // -o NAME / +o NAME (and bash's -O/+O shopt) take the next argument.
      if ((c == 'o' || (bash && c == 'O')) && i + 1 < args.size()) ++i;
    }
  }
  // With -c the first operand is the command, later ones are $0, $1...
  if (command) return Inline("-c", i < args.size() ? args[i] : std::string());
  if (read_stdin || i >= args.size()) return Stdin();
  return Path(args[i]);
}

// PHP long options taking a value, as their short option ('x': reflection
// options, whose value does not matter here).
// clang-format off
constexpr std::pair<absl::string_view, char> kPhpLong[] = {
    {"run", 'r'}, {"file", 'f'}, {"php-ini", 'c'}, {"define", 'd'}, {"zend-extension", 'z'},
    {"process-begin", 'B'}, {"process-code", 'R'}, {"process-file", 'F'}, {"process-end", 'E'},
    {"server", 'S'}, {"docroot", 't'}, {"rf", 'x'}, {"rfunction", 'x'}, {"rc", 'x'},
    {"rclass", 'x'}, {"re", 'x'}, {"rextension", 'x'}, {"rz", 'x'}, {"rzendextension", 'x'},
    {"ri", 'x'}, {"rextinfo", 'x'}};
// clang-format on

Parsed ParsePhp(Args args) {
  Parsed code;
  std::string file;
  bool server = false, end_of_options = false;
  size_t i = 0;
  auto handle = [&](char c, std::string value) {
    if (c == 'r' || c == 'B' || c == 'R' || c == 'E') AddCode(&code, std::string("-") + c, value);
    if (c == 'f' || c == 'F') file = std::move(value);
    if (c == 'S') server = true;
  };
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--" || a == "-") {  // the script comes from stdin
      end_of_options = true;
      break;
    }
    if (a.size() < 2 || a[0] != '-') break;
    if (a[1] == '-') {
      const size_t eq = a.find('=');
      const absl::string_view name = absl::string_view(a).substr(0, eq).substr(2);
      const auto* it = std::find_if(std::begin(kPhpLong), std::end(kPhpLong),
                                    [name](const auto& o) { return o.first == name; });
      if (it == std::end(kPhpLong)) continue;
      if (eq != std::string::npos) {
        handle(it->second, a.substr(eq + 1));
      } else {
        handle(it->second, i + 1 < args.size() ? args[++i] : std::string());
      }
      continue;
    }
    for (size_t j = 1; j < a.size(); ++j) {
      if (absl::StrContains("rfcdzBRFESt", a[j])) {
        const char c = a[j];
        handle(c, TakeValue(args, &i, j));
        break;
      }
    }
  }
  if (code.kind == Parsed::kInline) return code;
  if (!file.empty()) return Path(file);
  if (!end_of_options && i < args.size()) return Path(args[i]);
  if (server) return Name("-S");  // built-in web server without a router script
  return Stdin();
}

Parsed ParseJava(Args args) {
  const size_t n = args.size();
  for (size_t i = 0; i < n; ++i) {
    const std::string& a = args[i];
    if (a.empty() || a[0] == '@') continue;  // @argfiles: their contents are not ours to read
    if (a[0] != '-') return absl::EndsWith(a, ".java") ? Path(a) : Name(a);
    if (a == "-jar") return i + 1 < n ? Path(args[i + 1]) : Nothing();
    if (a == "-m" || a == "--module") return i + 1 < n ? Name("-m " + args[i + 1]) : Nothing();
    if (absl::StartsWith(a, "--module=")) return Name("-m " + a.substr(9));
    if (IsOneOf(
            a, {"-cp", "-classpath", "--class-path", "-p", "--module-path", "--upgrade-module-path",
                "--add-modules", "--limit-modules", "--add-reads", "--add-exports", "--add-opens",
                "--patch-module", "--source", "--enable-native-access", "-d", "--describe-module"}))
      ++i;
  }
  return Nothing();
}

Parsed Parse(Family family, Args args) {
  switch (family) {
    case Family::kPython:
      return ParsePython(args);
    case Family::kPerl:
      return ParsePerlRuby(args, /*ruby=*/false);
    case Family::kRuby:
      return ParsePerlRuby(args, /*ruby=*/true);
    case Family::kNode:
      return ParseNode(args);
    case Family::kShell:
      return ParseShell(args, /*bash=*/false);
    case Family::kBash:
      return ParseShell(args, /*bash=*/true);
    case Family::kPhp:
      return ParsePhp(args);
    case Family::kJava:
      return ParseJava(args);
    case Family::kNone:
      break;
  }
  return Nothing();
}

}  // namespace

bool IsInterpreter(absl::string_view exe) { return FamilyOf(Basename(exe)) != Family::kNone; }

v1::ImageIdentity ClassifyImage(absl::string_view exe, absl::Span<const std::string> argv,
                                absl::string_view cwd) {
  v1::ImageIdentity id;
  const std::string exe_utf8 = ValidUtf8(exe);
  id.set_exe(exe_utf8);
  const absl::string_view base = Basename(exe);
  const Family family = FamilyOf(base);
  if (family == Family::kNone) {
    id.set_key(exe_utf8);
    return id;
  }
  id.set_interpreter(ValidUtf8(base));
  const Args args = argv.empty() ? argv : argv.subspan(1);
  const Parsed p = Parse(family, args);
  switch (p.kind) {
    case Parsed::kNothing:
      id.set_key(exe_utf8);
      break;
    case Parsed::kStdin:
      id.set_inline_code("-");
      id.set_key(exe_utf8 + "|-");
      break;
    case Parsed::kName:
    case Parsed::kPath:
      id.set_script(Capped(p.kind == Parsed::kPath ? ResolveScript(p.value, cwd) : p.value));
      id.set_key(absl::StrCat(exe_utf8, "|", id.script()));
      break;
    case Parsed::kInline:
      id.set_inline_code(Capped(p.value));
      id.set_key(absl::StrCat(exe_utf8, "|", p.flag));
      break;
  }
  return id;
}

// ---- Suspicious marks ---------------------------------------------------

std::optional<mode_t> StatMode(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return std::nullopt;
  return st.st_mode;
}

std::optional<mode_t> StatModeCache::operator()(const std::string& path) {
  const absl::Time now = absl::Now();
  auto it = entries_.find(path);
  if (it != entries_.end() && it->second.second > now) return it->second.first;
  if (entries_.size() >= max_entries_) entries_.clear();
  std::optional<mode_t> mode = StatMode(path);
  entries_[path] = {mode, now + ttl_};
  return mode;
}

std::vector<std::string> SuspiciousMarks(absl::string_view exe, bool exe_deleted,
                                         const StatModeFn& stat_mode) {
  std::vector<std::string> marks;
  // memfd "files" are always unlinked; "deleted" would say nothing more.
  if (absl::StartsWith(exe, "/memfd:")) return {"memfd"};
  if (exe_deleted) marks.push_back("deleted");
  if (!absl::StartsWith(exe, "/")) return marks;
  bool world_writable = false, hidden = false;
  auto check = [&](const std::string& dir) {
    // stat, not lstat: a symlinked directory is as writable as its target.
    const std::optional<mode_t> mode = stat_mode(dir);
    if (mode && (*mode & S_IWOTH)) world_writable = true;
  };
  check("/");
  const absl::string_view dirs = exe.substr(0, exe.rfind('/'));
  std::string dir;
  for (absl::string_view c : absl::StrSplit(dirs, '/', absl::SkipEmpty())) {
    if (c == "." || c == "..") continue;
    if (c[0] == '.') hidden = true;
    absl::StrAppend(&dir, "/", c);
    check(dir);
  }
  if (world_writable) marks.push_back("world_writable_dir");
  if (hidden) marks.push_back("hidden_dir");
  return marks;
}

}  // namespace sockwatch
