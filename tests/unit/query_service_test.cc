#include "collector/auth.h"
#include "collector/query_service.h"
#include "gtest/gtest.h"

namespace sockwatch {
namespace {

TEST(TokenAuthTest, ParsesRolesAndNamesTheBadLine) {
  auto ok = TokenAuth::FromText("# comment\n\nreader 0123456789abcdef soc\nadmin fedcba9876543210\n", "t");
  EXPECT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(TokenAuth::FromText("reader short\n", "tokens").status().message(),
            "tokens:1: token shorter than 16 characters");
  EXPECT_EQ(TokenAuth::FromText("\nroot 0123456789abcdef\n", "tokens").status().message(),
            "tokens:2: unknown role 'root' (reader, responder or admin)");
  EXPECT_EQ(TokenAuth::FromText("reader\n", "tokens").status().message(),
            "tokens:1: expected: ROLE TOKEN [NAME]");
  EXPECT_EQ(TokenAuth::FromText("reader 0123456789abcdef a\nadmin 0123456789abcdef b\n", "tokens")
                .status()
                .message(),
            "tokens:2: token listed twice");
  EXPECT_EQ(TokenAuth::FromText("# nothing\n", "tokens").status().message(), "tokens: no tokens");
  EXPECT_EQ(TokenAuth::FromFile("/nonexistent/tokens").status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenAuthTest, CertificateEntriesGiveRolesByCommonName) {
  auto auth = TokenAuth::FromText(
      "responder cert:bob@soc\nreader 0123456789abcdef dash\nreader cert:viewer\n", "t");
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE(auth->has_certificates());
  auto bob = auth->Check("", "bob@soc", Role::kResponder);
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_EQ(bob->name, "cert:bob@soc");
  EXPECT_EQ(auth->Check("", "viewer", Role::kResponder).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth->Check("", "web-01", Role::kReader).status().message(),
            "certificate CN 'web-01' has no role in the tokens file");
  EXPECT_EQ(auth->Check("", "", Role::kReader).status().code(),
            absl::StatusCode::kUnauthenticated);
  // A CN is not a token, nor a token a CN.
  EXPECT_EQ(auth->Check("Bearer bob@soc", "", Role::kReader).status().message(), "unknown token");
  EXPECT_EQ(auth->Check("", "0123456789abcdef", Role::kReader).status().code(),
            absl::StatusCode::kUnauthenticated);
  auto dash = auth->Check("Bearer 0123456789abcdef", "bob@soc", Role::kReader);
  ASSERT_TRUE(dash.ok()) << dash.status();
  EXPECT_EQ(dash->name, "dash");  // a token sent is the credential
  EXPECT_EQ(TokenAuth::FromText("reader cert:\n", "t").status().message(),
            "t:1: cert: needs a certificate Common Name");
  EXPECT_EQ(TokenAuth::FromText("reader cert:a\nadmin cert:a\n", "t").status().message(),
            "t:2: certificate listed twice");
  EXPECT_FALSE(TokenAuth::FromText("reader 0123456789abcdef\n", "t")->has_certificates());
}

TEST(ToEventQueryTest, AlertFiltersImplyAlertsAndAreChecked) {
  v1::EventsRequest req;
  req.mutable_filter()->set_alert_status("acked");
  auto q = ToEventQuery(req);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->kind, "alert");
  EXPECT_EQ(q->alert_status, "acked");
  req.mutable_filter()->set_alert_status("resolved");
  EXPECT_EQ(ToEventQuery(req).status().message(),
            "alert status \"resolved\": expected open, acked or closed");
  req = v1::EventsRequest();
  req.mutable_filter()->set_alert_id("x-1");
  req.mutable_filter()->set_kind("network");
  EXPECT_EQ(ToEventQuery(req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ToEventQueryTest, MapsFiltersAndPaging) {
  v1::EventsRequest req;
  req.mutable_filter()->set_host_id("web-01");
  req.mutable_filter()->set_remote("10.0.0.0/8");
  req.mutable_filter()->set_remote_port(22);
  req.mutable_filter()->set_protocol(v1::PROTOCOL_TCP);
  req.mutable_filter()->mutable_since()->set_seconds(1'800'000'000);
  req.set_page_size(50);
  req.set_page_token("150");
  auto q = ToEventQuery(req);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->host_id, "web-01");
  EXPECT_EQ(q->remote, "10.0.0.0/8");
  EXPECT_EQ(q->remote_port, 22u);
  EXPECT_EQ(q->protocol, v1::PROTOCOL_TCP);
  EXPECT_EQ(q->since, absl::FromUnixSeconds(1'800'000'000));
  EXPECT_EQ(q->until, absl::InfiniteFuture());
  EXPECT_EQ(q->limit, 51u);  // one more tells whether there is a next page
  EXPECT_EQ(q->offset, 150u);
}

TEST(ToEventQueryTest, RefusesBadRequests) {
  v1::EventsRequest req;
  req.mutable_filter()->set_remote("10.0.0.0/33");
  EXPECT_EQ(ToEventQuery(req).status().code(), absl::StatusCode::kInvalidArgument);
  req = v1::EventsRequest();
  req.set_page_size(kMaxPageSize + 1);
  EXPECT_EQ(ToEventQuery(req).status().message(), "page_size 10001 (max 10000)");
  req = v1::EventsRequest();
  req.set_page_token("abc");
  EXPECT_EQ(ToEventQuery(req).status().message(), "page_token is not one this collector gave");
  req = v1::EventsRequest();
  req.mutable_filter()->mutable_since()->set_seconds(20);
  req.mutable_filter()->mutable_until()->set_seconds(10);
  EXPECT_EQ(ToEventQuery(req).status().message(), "since is not before until");
  req = v1::EventsRequest();
  req.mutable_filter()->set_remote_port(70000);
  EXPECT_EQ(ToEventQuery(req).status().message(), "remote_port 70000 is not a port");
}

TEST(DecodedFiltersTest, CidrAndArgv) {
  v1::Envelope e;
  e.mutable_network()->set_remote_ip("fd00::5");
  e.mutable_network()->mutable_process()->add_argv("ssh");
  e.mutable_network()->mutable_process()->add_argv("admin@db");
  EventQuery q;
  q.remote = "fd00::/16";
  EXPECT_TRUE(MatchesDecodedFilters(q, e));
  q.remote = "fd01::/16";
  EXPECT_FALSE(MatchesDecodedFilters(q, e));
  q.remote = "10.0.0.0/8";  // other family
  EXPECT_FALSE(MatchesDecodedFilters(q, e));
  q.remote = "fd00::5";
  EXPECT_TRUE(MatchesDecodedFilters(q, e));
  q.remote = "";
  q.argv_contains = "ssh admin@";
  EXPECT_TRUE(MatchesDecodedFilters(q, e));
  q.argv_contains = "root@";
  EXPECT_FALSE(MatchesDecodedFilters(q, e));
  e.mutable_network()->set_remote_ip("10.200.3.4");
  q.argv_contains = "";
  q.remote = "10.192.0.0/10";
  EXPECT_TRUE(MatchesDecodedFilters(q, e));
  q.remote = "10.128.0.0/10";
  EXPECT_FALSE(MatchesDecodedFilters(q, e));
}

}  // namespace
}  // namespace sockwatch
