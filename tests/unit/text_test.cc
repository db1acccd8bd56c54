#include "agent/text.h"

#include "gtest/gtest.h"

namespace sockwatch {
namespace {

TEST(TextTest, Utf8Validation) {
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xFF"));
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));          // cut short
  EXPECT_EQ(ValidUtf8("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(ValidUtf8("ok"), "ok");
}

TEST(TextTest, TerminalEscapesControls) {
  EXPECT_EQ(EscapeForTerminal("a\nb\tc"), "a\\nb\\tc");
  EXPECT_EQ(EscapeForTerminal("\x1b[31mred"), "\\x1b[31mred");
  EXPECT_EQ(EscapeForTerminal("\x7f"), "\\x7f");
  EXPECT_EQ(EscapeForTerminal("\xC2\x9B" "2J"), "\\u009b2J");  // C1 CSI
  EXPECT_EQ(EscapeForTerminal("\xFF"), "\\xff");
  EXPECT_EQ(EscapeForTerminal("back\\slash"), "back\\\\slash");
  EXPECT_EQ(EscapeForTerminal("caf\xC3\xA9"), "caf\xC3\xA9");
  for (int c = 0; c < 0x20; ++c) {
    const std::string out = EscapeForTerminal(std::string(1, static_cast<char>(c)));
    for (char o : out) EXPECT_GE(static_cast<unsigned char>(o), 0x20) << c;
  }
}

}  // namespace
}  // namespace sockwatch
