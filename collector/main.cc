// sockwatch-collector: receives the agents' streams and stores them.
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/transport.h"
#include "collector/auth.h"
#include "collector/ingest_service.h"
#include "collector/query_service.h"
#include "collector/store.h"
#include "collector/writer.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:7443", "Address to serve agents on (HOST:PORT)");
ABSL_FLAG(std::string, store, "sqlite:/var/lib/sockwatch/collector.db",
          "Where events go: sqlite:PATH (one machine) or clickhouse://HOST:8123/DB (ClickHouse "
          "HTTP interface; the database is created if missing)");
ABSL_FLAG(std::string, tls_ca, "", "CA that signs agent certificates (PEM)");
ABSL_FLAG(std::string, tls_cert, "", "The collector's certificate (PEM)");
ABSL_FLAG(std::string, tls_key, "", "The collector's private key (PEM)");
ABSL_FLAG(bool, insecure, false,
          "Plaintext without client certificates; only with a loopback --listen address");
ABSL_FLAG(std::string, query_listen, "",
          "Address of the query service for the sockwatch CLI (HOST:PORT; empty: off). TLS with "
          "--tls_cert/--tls_key; client certificates (verified with --tls_ca) are asked for when "
          "--tokens gives one a role; plaintext with --insecure on loopback");
ABSL_FLAG(std::string, tokens, "",
          "Query credentials: lines 'ROLE TOKEN [NAME]' or 'ROLE cert:COMMON_NAME' (a client "
          "certificate signed by --tls_ca with that subject CN), ROLE reader|responder|admin "
          "(required with --query_listen)");
ABSL_FLAG(int, max_in_flight, 4, "Batches per stream queued for the store before reads pause");
ABSL_FLAG(uint64_t, group_envelopes, 50000, "Most envelopes written in one transaction");
ABSL_FLAG(absl::Duration, stats_interval, absl::Seconds(60),
          "Log ingest counters this often (0: never)");
ABSL_FLAG(bool, log_streams, true, "Log each agent stream's start and end");

namespace {

// Set by SIGINT/SIGTERM and polled by main: a mutex (absl::Notification)
// is not async-signal-safe.
volatile sig_atomic_t g_stop = 0;

void OnSignal(int) { g_stop = 1; }

int Fail(absl::string_view msg) {
  fprintf(stderr, "sockwatch-collector: %.*s\n", static_cast<int>(msg.size()), msg.data());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::FlagsUsageConfig cfg;
  cfg.contains_help_flags = [](absl::string_view f) { return absl::StrContains(f, "collector/main.cc"); };
  cfg.contains_helpshort_flags = cfg.contains_help_flags;
  cfg.normalize_filename = [](absl::string_view f) { return std::string(f); };
  absl::SetFlagsUsageConfig(cfg);
  absl::SetProgramUsageMessage(
      "receives sockwatch agents' event streams over gRPC (mTLS)\n"
      "and stores every event once.\n\n"
      "Usage: sockwatch-collector --listen=ADDR:PORT --store=sqlite:PATH|clickhouse://H:8123/DB \\\n"
      "         --tls_ca=ca.pem --tls_cert=collector.pem --tls_key=collector.key\n"
      "       sockwatch-collector --listen=127.0.0.1:PORT --insecure ...   (loopback only)\n"
      "An agent may write only as the host named (CN) in its client certificate.\n"
      "Incoming alerts are stamped with their fleet prevalence. With --query_listen and\n"
      "--tokens it also answers the sockwatch CLI (events, alerts and their triage, host\n"
      "history, fleet prevalence).");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) return Fail(absl::StrCat("unexpected argument '", rest[1], "' (see --help)"));

  const std::string listen = absl::GetFlag(FLAGS_listen);
  auto host = sockwatch::HostOfAddress(listen);
  if (!host.ok()) return Fail(absl::StrCat("--listen: ", host.status().message()));
  const bool insecure = absl::GetFlag(FLAGS_insecure);
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (insecure) {
    if (!sockwatch::IsLoopbackHost(*host))
      return Fail(absl::StrCat("--insecure: plaintext is allowed only on loopback, not '", *host,
                               "' (give --tls_ca, --tls_cert and --tls_key for mTLS)"));
    creds = grpc::InsecureServerCredentials();
  } else {
    auto tls = sockwatch::ServerTls({absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert),
                                     absl::GetFlag(FLAGS_tls_key)});
    if (!tls.ok()) return Fail(tls.status().message());
    creds = *std::move(tls);
  }
  if (absl::GetFlag(FLAGS_max_in_flight) < 1) return Fail("--max_in_flight must be at least 1");

  auto store = sockwatch::OpenStore(absl::GetFlag(FLAGS_store));
  if (!store.ok()) return Fail(absl::StrCat("--store: ", store.status().message()));
  auto writer = std::make_unique<sockwatch::StoreWriter>(store->get(),
                                                         absl::GetFlag(FLAGS_group_envelopes));
  sockwatch::IngestOptions iopts;
  iopts.require_certificate = !insecure;
  iopts.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  iopts.log_streams = absl::GetFlag(FLAGS_log_streams);
  sockwatch::IngestService service(writer.get(), iopts);

  // The query service listens on its own port: agents present client
  // certificates, people and dashboards present tokens.
  const std::string query_listen = absl::GetFlag(FLAGS_query_listen);
  std::shared_ptr<grpc::ServerCredentials> query_creds;
  std::optional<sockwatch::TokenAuth> tokens;
  if (!query_listen.empty()) {
    auto qhost = sockwatch::HostOfAddress(query_listen);
    if (!qhost.ok()) return Fail(absl::StrCat("--query_listen: ", qhost.status().message()));
    if (absl::GetFlag(FLAGS_tokens).empty())
      return Fail("--query_listen needs --tokens (query access needs credentials)");
    auto t = sockwatch::TokenAuth::FromFile(absl::GetFlag(FLAGS_tokens));
    if (!t.ok()) return Fail(t.status().message());
    tokens = *std::move(t);
    if (insecure) {
      if (!sockwatch::IsLoopbackHost(*qhost))
        return Fail(absl::StrCat("--insecure: plaintext queries only on loopback, not '", *qhost, "'"));
      query_creds = grpc::InsecureServerCredentials();
    } else {
      // Certificates are asked for (and verified against --tls_ca) only when
      // the tokens file gives a certificate a role.
      const bool certs = tokens->has_certificates();
      auto tls = sockwatch::ServerTls(
          {certs ? absl::GetFlag(FLAGS_tls_ca) : "", absl::GetFlag(FLAGS_tls_cert),
           absl::GetFlag(FLAGS_tls_key)},
          certs ? sockwatch::ClientCerts::kVerifyIfPresent : sockwatch::ClientCerts::kNone);
      if (!tls.ok()) return Fail(tls.status().message());
      query_creds = *std::move(tls);
    }
  }
  std::unique_ptr<sockwatch::QueryService> query;
  if (tokens) query = std::make_unique<sockwatch::QueryService>(store->get(), &*tokens);

  grpc::ServerBuilder builder;
  int port = 0, query_port = 0;
  builder.AddListeningPort(listen, creds, &port);
  if (query) builder.AddListeningPort(query_listen, query_creds, &query_port);
  builder.RegisterService(&service);
  if (query) builder.RegisterService(query.get());
  builder.SetMaxReceiveMessageSize(sockwatch::kMaxMessageBytes);
  builder.SetMaxSendMessageSize(sockwatch::kMaxMessageBytes);
  builder.SetDefaultCompressionAlgorithm(GRPC_COMPRESS_GZIP);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return Fail(absl::StrCat("cannot listen on ", listen));
  if (query && query_port == 0) return Fail(absl::StrCat("cannot listen on ", query_listen));
  if (query) fprintf(stderr, "sockwatch-collector: queries on %s\n", query_listen.c_str());
  fprintf(stderr, "sockwatch-collector: listening on %s (%s), store %s\n", listen.c_str(),
          insecure ? "plaintext, loopback" : "mTLS", absl::GetFlag(FLAGS_store).c_str());

  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const absl::Duration every = absl::GetFlag(FLAGS_stats_interval);
  auto log_stats = [&] {
    const sockwatch::WriterStats w = writer->stats();
    const sockwatch::IngestCounters& c = service.counters();
    fprintf(stderr,
            "sockwatch-collector: streams %llu (refused %llu), batches %llu, envelopes %llu "
            "(stored as losses %llu): stored %llu, duplicates %llu; commits %llu (failed %llu)\n",
            (unsigned long long)c.streams.load(), (unsigned long long)c.refused.load(),
            (unsigned long long)c.batches.load(), (unsigned long long)c.envelopes.load(),
            (unsigned long long)c.replaced.load(),
            (unsigned long long)w.stored, (unsigned long long)w.duplicates,
            (unsigned long long)w.commits, (unsigned long long)w.failed_commits);
  };
  absl::Time next_stats = absl::Now() + every;
  while (!g_stop) {
    absl::SleepFor(absl::Milliseconds(100));
    if (every > absl::ZeroDuration() && absl::Now() >= next_stats) {
      log_stats();
      next_stats = absl::Now() + every;
    }
  }
  fprintf(stderr, "sockwatch-collector: stopping\n");
  // Streams get a moment to finish; what is queued is committed before exit.
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  writer->Close();
  log_stats();
  return 0;
}
