#include "collector/validate.h"

#include <string>

#include "absl/time/time.h"
#include "agent/transport.h"
#include "gtest/gtest.h"

namespace sockwatch {
namespace {

v1::Hello Hello(const std::string& host) {
  v1::Hello h;
  h.set_host_id(host);
  h.set_agent_instance("0123abcd");
  return h;
}

v1::Batch Batch(const std::string& host, int n, uint64_t spool_seq) {
  v1::Batch b;
  b.set_spool_seq(spool_seq);
  for (int i = 1; i <= n; ++i) {
    v1::Envelope* e = b.add_envelopes();
    e->set_host_id(host);
    e->set_agent_instance("0123abcd");
    e->set_seq(i);
    e->mutable_time()->set_seconds(1'800'000'000);
    e->mutable_network()->set_remote_port(443);
  }
  return b;
}

TEST(ValidateHelloTest, AcceptsTheCertificateHostOnly) {
  EXPECT_TRUE(ValidateHello(Hello("web-01"), "web-01").ok());
  EXPECT_TRUE(ValidateHello(Hello("web-01"), "").ok());  // --insecure: no certificate
  absl::Status s = ValidateHello(Hello("web-02"), "web-01");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), "certificate is for host 'web-01', hello claims host 'web-02'");
}

TEST(ValidateHelloTest, RefusesEmptyLongAndControlIds) {
  EXPECT_EQ(ValidateHello(Hello(""), "").message(), "hello.host_id is empty");
  EXPECT_EQ(ValidateHello(Hello(std::string(256, 'a')), "").message(),
            "hello.host_id is 256 bytes (max 255)");
  EXPECT_EQ(ValidateHello(Hello("a\nb"), "").message(),
            "hello.host_id has a byte 0xa (printable ASCII only)");
  v1::Hello h = Hello("web-01");
  h.set_agent_instance("");
  EXPECT_EQ(ValidateHello(h, "").code(), absl::StatusCode::kInvalidArgument);
}

TEST(ValidateBatchTest, AcceptsAWellFormedBatch) {
  EXPECT_TRUE(ValidateBatch(Batch("web-01", 3, 3), Hello("web-01"), 0).ok());
}

TEST(ValidateBatchTest, NamesTheBadEnvelopeAndTheRule) {
  v1::Batch b = Batch("web-01", 3, 3);
  b.mutable_envelopes(1)->set_seq(0);
  EXPECT_EQ(ValidateBatch(b, Hello("web-01"), 0).message(),
            "envelope 1 (seq 0): seq is 0 (sequence numbers start at 1)");
  b = Batch("web-01", 3, 3);
  b.mutable_envelopes(1)->set_agent_instance("a b");
  EXPECT_EQ(ValidateBatch(b, Hello("web-01"), 0).message(),
            "envelope 1 (seq 2): agent_instance has a byte 0x20 (printable ASCII only)");
  b = Batch("web-01", 3, 3);
  b.mutable_envelopes(2)->set_host_id("web-02");
  EXPECT_EQ(ValidateBatch(b, Hello("web-01"), 0).code(), absl::StatusCode::kPermissionDenied);
}

// Content the collector cannot store is no reason to refuse the batch: its
// agent would resend it forever, and everything after it would wait.
TEST(ValidateBatchTest, UnstorableEnvelopesBecomeLossesUnderTheirKeys) {
  v1::Batch b = Batch("web-01", 4, 4);
  b.mutable_envelopes(0)->clear_network();  // a kind from a newer agent
  b.mutable_envelopes(0)->set_hostname("web-01.example");
  b.mutable_envelopes(1)->mutable_time()->set_nanos(1'000'000'000);
  b.mutable_envelopes(3)->clear_time();
  ASSERT_TRUE(ValidateBatch(b, Hello("web-01"), 0).ok());
  const absl::Time now = absl::FromUnixSeconds(1'900'000'000) + absl::Milliseconds(250);
  std::string first;
  EXPECT_EQ(ReplaceUnstorable(b, now, &first), 3u);
  EXPECT_EQ(first,
            "envelope 0 (seq 1): no event this collector knows (an agent newer than the "
            "collector?)");
  struct Want {
    const char* reason;
    int64_t seconds;
    int32_t nanos;
  };
  const Want want[] = {{"collector_refused_unknown_event", 1'800'000'000, 0},
                       {"collector_refused_time_out_of_range", 1'900'000'000, 250'000'000},
                       {nullptr, 1'800'000'000, 0},
                       {"collector_refused_no_time", 1'900'000'000, 250'000'000}};
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    const v1::Envelope& e = b.envelopes(i);
    EXPECT_EQ(e.host_id(), "web-01");
    EXPECT_EQ(e.agent_instance(), "0123abcd");
    EXPECT_EQ(e.seq(), static_cast<uint64_t>(i + 1));  // the same key: exactly once still holds
    EXPECT_EQ(e.time().seconds(), want[i].seconds);
    EXPECT_EQ(e.time().nanos(), want[i].nanos);
    if (want[i].reason == nullptr) {
      EXPECT_EQ(e.network().remote_port(), 443u);  // left alone
      continue;
    }
    ASSERT_TRUE(e.has_loss());
    EXPECT_EQ(e.loss().reason(), want[i].reason);
    EXPECT_EQ(e.loss().count(), 1u);
    EXPECT_EQ(e.loss().first_time().seconds(), want[i].seconds);
    EXPECT_EQ(e.loss().last_time().nanos(), want[i].nanos);
  }
  EXPECT_EQ(b.envelopes(0).hostname(), "web-01.example");
  // A sound batch is left as it is.
  v1::Batch good = Batch("web-01", 3, 3);
  const std::string before = good.SerializeAsString();
  EXPECT_EQ(ReplaceUnstorable(good, now, nullptr), 0u);
  EXPECT_EQ(good.SerializeAsString(), before);
}

TEST(ValidateBatchTest, RefusesEmptyOversizedAndBackwardBatches) {
  EXPECT_EQ(ValidateBatch(v1::Batch(), Hello("h"), 0).message(), "batch has no envelopes");
  EXPECT_EQ(ValidateBatch(Batch("h", kMaxBatchEnvelopes + 1, 1), Hello("h"), 0).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ValidateBatch(Batch("h", 1, 5), Hello("h"), 5).message(),
            "batch.spool_seq 5 not above the previous 5");
}

TEST(TransportTest, AddressesAndLoopback) {
  EXPECT_EQ(*HostOfAddress("collector.example.net:7443"), "collector.example.net");
  EXPECT_EQ(*HostOfAddress("[::1]:7443"), "::1");
  EXPECT_FALSE(HostOfAddress("collector").ok());
  EXPECT_FALSE(HostOfAddress("collector:0").ok());
  EXPECT_FALSE(HostOfAddress("collector:70000").ok());
  EXPECT_FALSE(HostOfAddress("[::1:7443").ok());
  EXPECT_FALSE(HostOfAddress(":7443").ok());
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.3.2.1"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_TRUE(IsLoopbackHost("LocalHost"));
  EXPECT_FALSE(IsLoopbackHost("10.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("::"));
  EXPECT_FALSE(IsLoopbackHost("localhost.evil.example"));
}

TEST(TransportTest, PemErrorsNameTheFlagAndPath) {
  EXPECT_EQ(ReadPem("", "tls_ca").status().message(),
            "--tls_ca is required for mTLS (or --insecure on loopback)");
  EXPECT_EQ(ReadPem("/nonexistent.pem", "tls_cert").status().message(),
            "--tls_cert=/nonexistent.pem: cannot read");
  EXPECT_EQ(ReadPem("/etc/passwd", "tls_key").status().message(),
            "--tls_key=/etc/passwd: not a PEM file");
}

}  // namespace
}  // namespace sockwatch
