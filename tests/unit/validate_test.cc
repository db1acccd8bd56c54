#include "collector/validate.h"

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
  b.mutable_envelopes(2)->mutable_time()->set_nanos(1'000'000'000);
  EXPECT_EQ(ValidateBatch(b, Hello("web-01"), 0).message(), "envelope 2 (seq 3): time out of range");
  b = Batch("web-01", 3, 3);
  b.mutable_envelopes(0)->clear_network();
  EXPECT_EQ(ValidateBatch(b, Hello("web-01"), 0).message(), "envelope 0 (seq 1): no event");
  b = Batch("web-01", 3, 3);
  b.mutable_envelopes(2)->set_host_id("web-02");
  EXPECT_EQ(ValidateBatch(b, Hello("web-01"), 0).code(), absl::StatusCode::kPermissionDenied);
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
