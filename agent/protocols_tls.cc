// TLS: record layer and the first handshake message (ClientHello or
// ServerHello), RFC 8446 4-5 and RFC 5246 6-7. Only what the sample holds is
// checked: a 256-byte sample of a 517-byte ClientHello is normal, but every
// field that is present must be right.
#include <array>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/protocols_internal.h"

namespace sockwatch::protocols_internal {
namespace {

constexpr uint8_t kChangeCipherSpec = 0x14;
constexpr uint8_t kApplicationData = 0x17;
constexpr uint8_t kHandshake = 0x16;
constexpr uint8_t kClientHello = 1;
constexpr uint8_t kServerHello = 2;
constexpr size_t kRecordHeader = 5;
constexpr size_t kMaxRecord = (1 << 14) + 2048;  // TLSCiphertext limit, RFC 5246 6.2.3
// Handshake bytes reassembled across records; a hello's checked fields come
// well before this, and beyond it the sample counts as ended.
constexpr size_t kMaxHandshake = 4096;

uint32_t Be(const uint8_t* p, int n) {
  uint32_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

bool IsRecordType(uint8_t t) { return t >= kChangeCipherSpec && t <= kApplicationData; }

// What the bytes claim: a record header with major version 3; or a handshake
// record carrying a hello whose lengths agree, even with a wrong record
// version (that is TLS with a broken header, not something else). Random
// bytes meet the second rule with odds near 2^-31.
bool ClaimsTls(Bytes b) {
  if (b.size() < 2 || !IsRecordType(b[0])) return false;
  if (b[1] == 3) return true;
  if (b[0] != kHandshake || b.size() < 9 || (b[5] != kClientHello && b[5] != kServerHello))
    return false;
  const uint32_t record = Be(&b[3], 2);
  return record >= 4 && Be(&b[6], 3) + 4 == record;
}

// A hello's fields against two ends: `end`, the length the message declares
// (a field past it is malformed) and `avail`, what the sample holds (a field
// past it is simply not checked).
class Fields {
 public:
  Fields(const uint8_t* p, size_t avail, size_t end)
      : p_(p), avail_(std::min(avail, end)), end_(end) {}
  enum Fit { kFits, kShort, kOverrun };
  Fit Need(size_t n) const {
    if (pos_ + n > end_) return kOverrun;
    return pos_ + n > avail_ ? kShort : kFits;
  }
  // Reads (or skips) an n-byte field when it fits.
  Fit Read(size_t n, uint32_t* v) {
    const Fit fit = Need(n);
    if (fit == kFits) {
      *v = Be(p_ + pos_, static_cast<int>(n));
      pos_ += n;
    }
    return fit;
  }
  Fit Skip(size_t n) {
    const Fit fit = Need(n);
    if (fit == kFits) pos_ += n;
    return fit;
  }
  size_t pos() const { return pos_; }
  size_t end() const { return end_; }

 private:
  const uint8_t* p_;
  size_t pos_ = 0;
  size_t avail_;
  size_t end_;
};

// A field that did not fit: past the sample ends the checks (""), past the
// message is malformed.
std::string Stop(Fields::Fit fit, const char* name, absl::string_view what, size_t len) {
  if (fit == Fields::kShort) return "";
  return absl::StrCat(name, " ", what, " runs past its length ", len);
}

// "" when the hello is fine as far as the sample goes.
std::string CheckHello(const uint8_t* msg, size_t avail, size_t len, bool client) {
  const char* name = client ? "ClientHello" : "ServerHello";
  Fields f(msg, avail, len);
  uint32_t version = 0;
  if (const Fields::Fit fit = f.Read(2, &version); fit != Fields::kFits)
    return Stop(fit, name, "version", len);
  if (version < 0x0300 || version > 0x0304) return absl::StrCat(name, " version ", Hex(version, 4));
  if (const Fields::Fit fit = f.Skip(32); fit != Fields::kFits)
    return Stop(fit, name, "random", len);
  uint32_t sid = 0;
  if (const Fields::Fit fit = f.Read(1, &sid); fit != Fields::kFits)
    return Stop(fit, name, "session id length", len);
  if (sid > 32) return absl::StrCat(name, " session id length ", sid, " (over 32)");
  if (const Fields::Fit fit = f.Skip(sid); fit != Fields::kFits)
    return Stop(fit, name, "session id", len);
  if (client) {
    uint32_t suites = 0;
    if (const Fields::Fit fit = f.Read(2, &suites); fit != Fields::kFits)
      return Stop(fit, name, "cipher suites length", len);
    if (suites < 2 || suites % 2 != 0)
      return absl::StrCat("ClientHello cipher suites length ", suites);
    if (const Fields::Fit fit = f.Skip(suites); fit != Fields::kFits)
      return Stop(fit, name, "cipher suites", len);
    uint32_t methods = 0;
    if (const Fields::Fit fit = f.Read(1, &methods); fit != Fields::kFits)
      return Stop(fit, name, "compression methods length", len);
    if (methods < 1) return "ClientHello with no compression methods";
    if (const Fields::Fit fit = f.Skip(methods); fit != Fields::kFits)
      return Stop(fit, name, "compression methods", len);
  } else {
    if (const Fields::Fit fit = f.Skip(3); fit != Fields::kFits)
      return Stop(fit, name, "cipher suite and compression method", len);
  }
  // Extensions are optional (TLS 1.0 hellos end here); when present their
  // length must fill the message exactly.
  if (f.pos() == len) return "";
  uint32_t ext_len = 0;
  if (const Fields::Fit fit = f.Read(2, &ext_len); fit != Fields::kFits)
    return Stop(fit, name, "extensions length", len);
  if (f.pos() + ext_len != len) {
    return absl::StrCat(name, " extensions length ", ext_len, " with ", len - f.pos(),
                        " bytes left in the message");
  }
  while (f.pos() < len) {
    uint32_t type = 0;
    if (const Fields::Fit fit = f.Read(2, &type); fit != Fields::kFits)
      return Stop(fit, name, "extension type", len);
    uint32_t elen = 0;
    if (const Fields::Fit fit = f.Read(2, &elen); fit != Fields::kFits)
      return Stop(fit, name, "extension length", len);
    if (f.Need(elen) == Fields::kOverrun)
      return absl::StrCat(name, " extension ", Hex(type, 4), " length ", elen,
                          " runs past the extensions");
    if (const Fields::Fit fit = f.Skip(elen); fit != Fields::kFits)
      return Stop(fit, name, "extension", len);
  }
  return "";
}

std::string CheckTls(Bytes b, bool truncated) {
  (void)truncated;  // every check below already stops where the sample does
  std::array<uint8_t, kMaxHandshake> hs;
  size_t hs_len = 0;
  bool in_handshake = b[0] == kHandshake;  // still in the leading run of handshake records
  bool handshake_cut = false;              // that run was ended by another record type
  size_t pos = 0;
  while (pos < b.size()) {
    const size_t have = b.size() - pos;
    const uint8_t type = b[pos];
    if (!IsRecordType(type))
      return absl::StrCat("TLS record type ", Hex(type, 2), " at offset ", pos);
    if (have >= 3 && (b[pos + 1] != 3 || b[pos + 2] > 4))
      return absl::StrCat("TLS record version ", Hex(Be(&b[pos + 1], 2), 4));
    if (have >= 2 && b[pos + 1] != 3)
      return absl::StrCat("TLS record version major ", Hex(b[pos + 1], 2));
    if (have < kRecordHeader) break;
    const size_t len = Be(&b[pos + 3], 2);
    if (len == 0 && type != kApplicationData) return "TLS record length 0";  // RFC 8446 5.1
    if (len > kMaxRecord)
      return absl::StrCat("TLS record length ", len, " (over ", kMaxRecord, ")");
    const size_t body = std::min(len, have - kRecordHeader);
    if (in_handshake && type == kHandshake) {
      const size_t n = std::min(body, kMaxHandshake - hs_len);
      if (n > 0) memcpy(hs.data() + hs_len, b.data() + pos + kRecordHeader, n);
      hs_len += n;
    } else if (in_handshake) {
      in_handshake = false;
      handshake_cut = true;
    }
    pos += kRecordHeader + len;
  }
  if (b[0] != kHandshake || hs_len == 0) return "";
  const uint8_t msg = hs[0];
  if (msg != kClientHello && msg != kServerHello) {
    return absl::StrCat("TLS handshake starts with message type ", msg,
                        " (not ClientHello or ServerHello)");
  }
  if (hs_len < 4) return "";
  const size_t msg_len = Be(&hs[1], 3);
  // Handshake messages may span records but not be interleaved with other
  // record types (RFC 8446 5.1).
  if (handshake_cut && hs_len < 4 + msg_len && hs_len < kMaxHandshake)
    return absl::StrCat("TLS hello of ", msg_len, " bytes cut by another record type");
  return CheckHello(&hs[4], hs_len - 4, msg_len, msg == kClientHello);
}

}  // namespace

Verdict ClassifyTls(Bytes bytes, bool truncated) {
  if (!ClaimsTls(bytes)) return Verdict{};
  std::string why = CheckTls(bytes, truncated);
  return why.empty() ? Ok(Proto::kTls) : Bad(Proto::kTls, std::move(why));
}

}  // namespace sockwatch::protocols_internal
