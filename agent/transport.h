// What the agent and the collector share about the wire: TLS material from
// files, the loopback rule for plaintext, and the certificate identity.
#ifndef SOCKWATCH_AGENT_TRANSPORT_H_
#define SOCKWATCH_AGENT_TRANSPORT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace sockwatch {

// PEM files of one side of mTLS.
struct TlsFiles {
  std::string ca;    // CA that signed the peer's certificate
  std::string cert;  // our certificate
  std::string key;   // our private key
};

// Largest message either side accepts (a batch of envelopes).
inline constexpr int kMaxMessageBytes = 16 << 20;
// Most envelopes in one batch.
inline constexpr int kMaxBatchEnvelopes = 10000;

// "HOST:PORT" or "[V6]:PORT" -> host (without brackets). Clear error otherwise.
absl::StatusOr<std::string> HostOfAddress(absl::string_view address);

// True for localhost, 127.0.0.0/8 and ::1 (plaintext is allowed only there).
bool IsLoopbackHost(absl::string_view host);

// Reads a whole file (PEM); error names the path and the flag it came from.
absl::StatusOr<std::string> ReadPem(absl::string_view path, absl::string_view flag);

// Client side: mTLS with our certificate, verifying the collector against ca.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientTls(const TlsFiles& files);

// What a server asks of its clients' certificates.
enum class ClientCerts {
  kRequire,          // required and verified against ca (the agents' port)
  kVerifyIfPresent,  // optional; verified against ca when presented (the
                     // query port when people may use certificates)
  kNone,             // not asked for; ca may be empty (query port, tokens only)
};

// Server side TLS with the given client certificate policy.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerTls(
    const TlsFiles& files, ClientCerts client_certs = ClientCerts::kRequire);

// The host id a verified client certificate allows: its subject Common Name.
// Empty if the connection carries no verified certificate.
std::string CertificateHostId(const grpc::AuthContext& auth);

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_TRANSPORT_H_
