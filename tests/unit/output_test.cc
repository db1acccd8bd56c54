#include "agent/output.h"

#include <google/protobuf/util/json_util.h>

#include "gtest/gtest.h"

namespace sockwatch {
namespace {

// Nothing a terminal would act on: C0 controls, DEL, and C1 (U+0080..U+009F).
bool HasTerminalControls(const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return true;
    if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) < 0xA0) return true;
  }
  return false;
}

v1::Envelope Hostile() {
  v1::Envelope e;
  e.set_seq(7);
  v1::NetworkEvent* n = e.mutable_network();
  n->set_kind(v1::NETWORK_KIND_CONNECT);
  n->set_protocol(v1::PROTOCOL_TCP);
  n->set_ip_version(4);
  n->set_direction(v1::DIRECTION_OUTBOUND);
  n->set_outcome(v1::OUTCOME_REFUSED);
  n->set_local_ip("10.0.0.1");
  n->set_local_port(40000);
  n->set_remote_ip("fd00::2");
  n->set_remote_port(443);
  v1::Process* p = n->mutable_process();
  p->set_pid(42);
  p->set_exe("/tmp/\x1b]0;evil\x07/bin");
  p->add_argv("sh");
  p->add_argv("-c");
  p->add_argv("echo \x1b[2J\xC2\x9B" "31m\x7f\r\nmore\ttab");
  return e;
}

TEST(OutputTest, JsonIsOneLineWithProtoFieldNamesAndRoundTrips) {
  const v1::Envelope e = Hostile();
  const std::string json = EnvelopeToJson(e);
  EXPECT_EQ(json.find('\n'), std::string::npos);
  EXPECT_FALSE(HasTerminalControls(json)) << json;
  EXPECT_NE(json.find("\"remote_port\":443"), std::string::npos) << json;
  EXPECT_NE(json.find("\"direction\":\"DIRECTION_OUTBOUND\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"argv\":[\"sh\",\"-c\""), std::string::npos) << json;
  v1::Envelope back;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &back).ok());
  EXPECT_EQ(back.network().process().argv(2), e.network().process().argv(2));  // nothing lost
}

TEST(OutputTest, TextEscapesEveryControlCharacter) {
  const std::string text = EnvelopeToText(Hostile());
  EXPECT_FALSE(HasTerminalControls(text)) << text;
  EXPECT_NE(text.find("CONNECT tcp4 10.0.0.1:40000 -> [fd00::2]:443 refused"), std::string::npos) << text;
  EXPECT_NE(text.find("\\x1b[2J\\u009b31m\\x7f\\r\\nmore\\ttab"), std::string::npos) << text;
  EXPECT_NE(text.find("exe=/tmp/\\x1b]0;evil\\x07/bin"), std::string::npos) << text;
}

TEST(OutputTest, PrintFormats) {
  EXPECT_EQ(*ParsePrintFormat("json"), PrintFormat::kJson);
  EXPECT_EQ(*ParsePrintFormat("text"), PrintFormat::kText);
  EXPECT_EQ(*ParsePrintFormat("none"), PrintFormat::kNone);
  EXPECT_FALSE(ParsePrintFormat("xml").ok());
}

}  // namespace
}  // namespace sockwatch
