#include "agent/transport.h"

#include <arpa/inet.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace sockwatch {

absl::StatusOr<std::string> HostOfAddress(absl::string_view address) {
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == absl::string_view::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port == 0 || port > 65535)
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "': expected HOST:PORT (port 1-65535)"));
  absl::string_view host = address.substr(0, colon);
  if (absl::ConsumePrefix(&host, "[") && !absl::ConsumeSuffix(&host, "]"))
    return absl::InvalidArgumentError(absl::StrCat("'", address, "': unclosed '[' in address"));
  if (host.empty()) return absl::InvalidArgumentError(absl::StrCat("'", address, "': no host"));
  return std::string(host);
}

bool IsLoopbackHost(absl::string_view host) {
  if (absl::AsciiStrToLower(host) == "localhost") return true;
  const std::string h(host);
  in_addr v4;
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

absl::StatusOr<std::string> ReadPem(absl::string_view path, absl::string_view flag) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat("--", flag, " is required for mTLS (or --insecure on loopback)"));
  std::ifstream in{std::string(path)};
  if (!in) return absl::NotFoundError(absl::StrCat("--", flag, "=", path, ": cannot read"));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string pem = ss.str();
  if (pem.find("-----BEGIN") == std::string::npos)
    return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", path, ": not a PEM file"));
  return pem;
}

namespace {

// The PEM contents of files; the CA only if need_ca.
struct Pems {
  std::string ca, cert, key;
};

absl::StatusOr<Pems> ReadPems(const TlsFiles& files, bool need_ca) {
  Pems p;
  if (need_ca) {
    auto ca = ReadPem(files.ca, "tls_ca");
    if (!ca.ok()) return ca.status();
    p.ca = *std::move(ca);
  }
  auto cert = ReadPem(files.cert, "tls_cert");
  if (!cert.ok()) return cert.status();
  auto key = ReadPem(files.key, "tls_key");
  if (!key.ok()) return key.status();
  p.cert = *std::move(cert);
  p.key = *std::move(key);
  return p;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientTls(const TlsFiles& files) {
  absl::StatusOr<Pems> pems = ReadPems(files, /*need_ca=*/true);
  if (!pems.ok()) return pems.status();
  grpc::SslCredentialsOptions opts;
  opts.pem_root_certs = std::move(pems->ca);
  opts.pem_cert_chain = std::move(pems->cert);
  opts.pem_private_key = std::move(pems->key);
  return grpc::SslCredentials(opts);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerTls(const TlsFiles& files,
                                                                   ClientCerts client_certs) {
  absl::StatusOr<Pems> pems = ReadPems(files, client_certs != ClientCerts::kNone);
  if (!pems.ok()) return pems.status();
  grpc::SslServerCredentialsOptions opts(
      client_certs == ClientCerts::kRequire
          ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
      : client_certs == ClientCerts::kVerifyIfPresent
          ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  opts.pem_root_certs = std::move(pems->ca);
  opts.pem_key_cert_pairs.push_back({std::move(pems->key), std::move(pems->cert)});
  return grpc::SslServerCredentials(opts);
}

std::string CertificateHostId(const grpc::AuthContext& auth) {
  if (!auth.IsPeerAuthenticated()) return "";
  const auto cn = auth.FindPropertyValues("x509_common_name");
  if (cn.size() != 1) return "";
  return std::string(cn[0].data(), cn[0].size());
}

}  // namespace sockwatch
