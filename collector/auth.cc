#include "collector/auth.h"

#include <openssl/crypto.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/transport.h"

namespace sockwatch {

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kReader:
      return "reader";
    case Role::kResponder:
      return "responder";
    case Role::kAdmin:
      return "admin";
  }
  return "?";
}

absl::StatusOr<TokenAuth> TokenAuth::FromFile(absl::string_view path) {
  std::ifstream in{std::string(path)};
  if (!in) return absl::NotFoundError(absl::StrCat("--tokens=", path, ": cannot read"));
  std::stringstream ss;
  ss << in.rdbuf();
  return FromText(ss.str(), absl::StrCat("--tokens=", path));
}

absl::StatusOr<TokenAuth> TokenAuth::FromText(absl::string_view text, absl::string_view origin) {
  TokenAuth auth;
  int n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++n;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ":", n, ": ", why));
    };
    if (f.size() < 2 || f.size() > 3) return bad("expected: ROLE TOKEN [NAME]");
    Entry e;
    if (f[0] == "reader")
      e.who.role = Role::kReader;
    else if (f[0] == "responder")
      e.who.role = Role::kResponder;
    else if (f[0] == "admin")
      e.who.role = Role::kAdmin;
    else
      return bad(absl::StrCat("unknown role '", f[0], "' (reader, responder or admin)"));
    absl::string_view cred = f[1];
    if (absl::ConsumePrefix(&cred, "cert:")) {
      if (cred.empty()) return bad("cert: needs a certificate Common Name");
      if (f.size() == 3) return bad("expected: ROLE cert:COMMON_NAME (the CN is the name)");
      e.cert = true;
      e.who.name = absl::StrCat("cert:", cred);
    } else {
      if (cred.size() < 16) return bad("token shorter than 16 characters");
      e.who.name = f.size() == 3 ? std::string(f[2]) : absl::StrCat("token on line ", n);
    }
    e.token = std::string(cred);
    for (const Entry& other : auth.entries_)
      if (other.cert == e.cert && other.token == e.token)
        return bad(e.cert ? "certificate listed twice" : "token listed twice");
    auth.entries_.push_back(std::move(e));
  }
  if (auth.entries_.empty()) return absl::InvalidArgumentError(absl::StrCat(origin, ": no tokens"));
  return auth;
}

bool TokenAuth::has_certificates() const {
  for (const Entry& e : entries_)
    if (e.cert) return true;
  return false;
}

absl::StatusOr<Principal> TokenAuth::Check(const grpc::CallbackServerContext& ctx, Role need) const {
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  const absl::string_view authorization =
      it == md.end() ? absl::string_view() : absl::string_view(it->second.data(), it->second.size());
  std::string cn;
  if (authorization.empty() && has_certificates()) {
    if (std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context())
      cn = CertificateHostId(*auth);
  }
  return Check(authorization, cn, need);
}

absl::StatusOr<Principal> TokenAuth::Check(absl::string_view authorization,
                                           absl::string_view cert_cn, Role need) const {
  auto allowed = [need](const Principal& who) -> absl::StatusOr<Principal> {
    if (static_cast<int>(who.role) < static_cast<int>(need))
      return absl::PermissionDeniedError(absl::StrCat(
          "'", who.name, "' has role ", RoleName(who.role), "; this needs ", RoleName(need)));
    return who;
  };
  if (authorization.empty()) {
    if (!cert_cn.empty()) {
      for (const Entry& e : entries_)
        if (e.cert && e.token == cert_cn) return allowed(e.who);
      return absl::UnauthenticatedError(
          absl::StrCat("certificate CN '", cert_cn, "' has no role in the tokens file"));
    }
    return absl::UnauthenticatedError(
        "no credentials: send 'authorization: Bearer TOKEN' or a client certificate");
  }
  absl::string_view value = authorization;
  if (!absl::ConsumePrefix(&value, "Bearer ") && !absl::ConsumePrefix(&value, "bearer "))
    return absl::UnauthenticatedError("authorization is not a Bearer token");
  for (const Entry& e : entries_) {
    // Constant time in the token's bytes.
    if (!e.cert && e.token.size() == value.size() &&
        CRYPTO_memcmp(e.token.data(), value.data(), value.size()) == 0)
      return allowed(e.who);
  }
  return absl::UnauthenticatedError("unknown token");
}

}  // namespace sockwatch
