// Who may ask the collector what: bearer tokens with a role, from a file.
//
//   # role   token                      name (for logs)
//   reader    3f9c...                    soc-dashboard
//   responder 8a01...                    alice
//   admin     c77e...                    ops
//
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

 private:
  struct Entry {
    std::string token;
    Principal who;
  };
  std::vector<Entry> entries_;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_AUTH_H_
