// Who may ask the collector what: bearer tokens with a role, from a file.
//
//   # role   token                      name (for logs)
//   reader    3f9c...                    soc-dashboard
//   responder 8a01...                    alice
//   admin     c77e...                    ops
//   responder cert:bob@soc
//
// A `cert:CN` entry gives the role to a caller whose TLS client certificate
// (verified against the collector's --tls_ca) has subject Common Name CN;
// a bearer token, when sent, is checked first.
// reader: queries; responder: queries + triage; admin: everything.
#ifndef SOCKWATCH_COLLECTOR_AUTH_H_
#define SOCKWATCH_COLLECTOR_AUTH_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"

namespace sockwatch {

enum class Role { kReader = 1, kResponder = 2, kAdmin = 3 };

absl::string_view RoleName(Role role);

struct Principal {
  std::string name;
  Role role = Role::kReader;
};

class TokenAuth {
 public:
  // Parses a tokens file; errors name the line. Tokens shorter than 16
  // characters are refused (guessable).
  static absl::StatusOr<TokenAuth> FromFile(absl::string_view path);
  static absl::StatusOr<TokenAuth> FromText(absl::string_view text, absl::string_view origin);

  // The caller of ctx, if its "authorization: Bearer TOKEN" is known and its
  // role is at least `need`: Unauthenticated (no or unknown token) or
  // PermissionDenied (role too low) otherwise.
  absl::StatusOr<Principal> Check(const grpc::CallbackServerContext& ctx, Role need) const;
  // The same for a caller already identified: a token (may be empty) and a
  // verified certificate CN (may be empty).
  absl::StatusOr<Principal> Check(absl::string_view authorization, absl::string_view cert_cn,
                                  Role need) const;

  // Whether some entry names a certificate (the server must ask for them).
  bool has_certificates() const;

 private:
  struct Entry {
    std::string token;  // or, with cert, the certificate's CN
    bool cert = false;
    Principal who;
  };
  std::vector<Entry> entries_;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_AUTH_H_
