// DNS (RFC 1035 4): over UDP the raw message, over TCP a 2-byte length
// prefix and then the message. DNS has no magic bytes, so the header decides.
//
// The rule: the bytes are DNS when the 12-byte header is plausible: qdcount
// 1-4, a known opcode, the Z bit clear and the other counts in range for a
// query or a response (below). Random bytes pass with odds far below one in
// a million (qdcount alone needs a zero byte and 1-4: 4 in 65536), and text
// never does (its qdcount would need a NUL). Everything after a plausible
// header is syntax: a question that does not parse is malformed DNS. A short
// sample that breaks nothing is DNS, not malformed.
#include "absl/strings/str_cat.h"
#include "agent/protocols_internal.h"

namespace sockwatch::protocols_internal {
namespace {

constexpr size_t kHeader = 12;
constexpr uint32_t kMaxQuestions = 4;     // every resolver sends 1
constexpr uint32_t kMaxQueryRecords = 2;  // additional in a query: OPT, TSIG
constexpr uint32_t kMaxRecords = 4096;    // any section of a response (64 KiB over TCP)
constexpr size_t kMaxName = 255;          // octets on the wire, RFC 1035 2.3.4
constexpr size_t kMaxLabel = 63;

uint32_t Be16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }

bool PlausibleHeader(const uint8_t* h) {
  const uint32_t flags = Be16(h + 2);
  const uint32_t qd = Be16(h + 4), an = Be16(h + 6), ns = Be16(h + 8), ar = Be16(h + 10);
  const bool response = flags & 0x8000;
  const uint32_t opcode = (flags >> 11) & 0xf;
  const uint32_t rcode = flags & 0xf;
  // QUERY, IQUERY, STATUS, NOTIFY, UPDATE, DSO; 3 and 7-15 are unassigned.
  if (opcode == 3 || opcode > 6) return false;
  if ((flags & 0x0040) != 0 || qd < 1 || qd > kMaxQuestions) return false;
  if (response) return rcode <= 10 && an <= kMaxRecords && ns <= kMaxRecords && ar <= kMaxRecords;
  if (rcode != 0) return false;
  // Queries carry no answers; NOTIFY may carry one SOA, UPDATE its sections.
  if (opcode <= 2) return an == 0 && ns == 0 && ar <= kMaxQueryRecords;
  if (opcode == 4) return an <= 1 && ns == 0 && ar <= kMaxQueryRecords;
  return an <= kMaxRecords && ns <= kMaxRecords && ar <= kMaxRecords;
}

// Questions of a message: msg[0, avail) is in the sample, the message ends
// at `end` (>= avail) when `complete`, else somewhere past the sample.
class Questions {
 public:
  Questions(const uint8_t* msg, size_t avail, bool complete)
      : msg_(msg), avail_(avail), complete_(complete) {}

  // "" when fine as far as the sample goes.
  std::string Check(uint32_t count) {
    size_t pos = kHeader;
    for (uint32_t i = 0; i < count; ++i) {
      bool stop = false;
      std::string why = Name(&pos, i == 0, &stop);
      if (!why.empty() || stop) return why;
      if (pos + 4 > avail_) return complete_ ? "DNS question runs past the end of the message" : "";
      const uint32_t qtype = Be16(msg_ + pos), qclass = Be16(msg_ + pos + 2) & 0x7fff;
      pos += 4;
      if (qtype == 0) return "DNS question type 0";
      // IN, CH, HS, NONE, ANY; mDNS uses the top bit for unicast replies.
      if (qclass != 1 && qclass != 3 && qclass != 4 && qclass != 254 && qclass != 255)
        return absl::StrCat("DNS question class ", qclass);
    }
    return "";
  }

 private:
  // Walks the name at *pos, leaving *pos after it. Sets *stop when the
  // sample ends inside it.
  std::string Name(size_t* pos, bool first, bool* stop) {
    size_t at = *pos;
    size_t lowest = at;  // pointers must go below every offset seen: no loops
    size_t octets = 1;   // the root label
    bool jumped = false;
    for (;;) {
      if (at >= avail_) {
        *stop = true;
        return complete_ ? "DNS question runs past the end of the message" : "";
      }
      const uint8_t len = msg_[at];
      if (len == 0) {
        if (!jumped) *pos = at + 1;
        return "";
      }
      if ((len & 0xc0) == 0xc0) {
        if (first) return "DNS compression pointer in the first question name";
        if (at + 1 >= avail_) {
          *stop = true;
          return complete_ ? "DNS question runs past the end of the message" : "";
        }
        const size_t target = Be16(msg_ + at) & 0x3fff;
        if (target < kHeader || target >= lowest)
          return absl::StrCat("DNS compression pointer to offset ", target, " (not backwards)");
        if (!jumped) *pos = at + 2;
        jumped = true;
        at = lowest = target;
        continue;
      }
      if (len > kMaxLabel) return absl::StrCat("DNS label length ", len, " (over 63)");
      octets += 1 + len;
      if (octets > kMaxName) return "DNS name longer than 255 bytes";
      at += 1 + len;
    }
  }

  const uint8_t* msg_;
  size_t avail_;
  bool complete_;
};

}  // namespace

Verdict ClassifyDns(Bytes b, Transport transport, bool truncated) {
  const uint8_t* msg = b.data();
  size_t avail = b.size();
  bool complete = !truncated;  // a datagram is whole unless the capture cut it
  if (transport == Transport::kTcp) {
    if (b.size() < 2 + kHeader) return Verdict{};
    const size_t len = Be16(b.data());
    if (len < kHeader) return Verdict{};
    msg += 2;
    avail = std::min(len, b.size() - 2);
    // Only the first message is judged; pipelined ones may follow it.
    complete = b.size() - 2 >= len;
  } else if (b.size() < kHeader) {
    return Verdict{};
  }
  if (!PlausibleHeader(msg)) return Verdict{};
  std::string why = Questions(msg, avail, complete).Check(Be16(msg + 4));
  return why.empty() ? Ok(Proto::kDns) : Bad(Proto::kDns, std::move(why));
}

}  // namespace sockwatch::protocols_internal
