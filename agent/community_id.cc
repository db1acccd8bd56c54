#include "agent/community_id.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace sockwatch {

std::string CommunityId(uint8_t ip_proto, absl::Span<const uint8_t> src_ip, uint16_t src_port,
                        absl::Span<const uint8_t> dst_ip, uint16_t dst_port, uint16_t seed) {
  if (src_ip.size() != dst_ip.size() || (src_ip.size() != 4 && src_ip.size() != 16)) return "";
  // The flow is ordered so both directions hash the same: smaller endpoint first.
  const bool swap =
      std::lexicographical_compare(dst_ip.begin(), dst_ip.end(), src_ip.begin(), src_ip.end()) ||
      (std::equal(src_ip.begin(), src_ip.end(), dst_ip.begin()) && dst_port < src_port);
  if (swap) {
    std::swap(src_ip, dst_ip);
    std::swap(src_port, dst_port);
  }
  std::vector<uint8_t> buf;
  buf.reserve(2 + 32 + 2 + 4);
  buf.push_back(seed >> 8);
  buf.push_back(seed & 0xff);
  buf.insert(buf.end(), src_ip.begin(), src_ip.end());
  buf.insert(buf.end(), dst_ip.begin(), dst_ip.end());
  buf.push_back(ip_proto);
  buf.push_back(0);
  buf.push_back(src_port >> 8);
  buf.push_back(src_port & 0xff);
  buf.push_back(dst_port >> 8);
  buf.push_back(dst_port & 0xff);
  // Fetched once: OpenSSL 3's SHA1() looks the algorithm up, under a lock,
  // on every call.
  static EVP_MD* const kSha1 = EVP_MD_fetch(nullptr, "SHA1", nullptr);
  unsigned char digest[SHA_DIGEST_LENGTH];
  unsigned int len = 0;
  if (!kSha1 || !EVP_Digest(buf.data(), buf.size(), digest, &len, kSha1, nullptr)) return "";
  return absl::StrCat(
      "1:", absl::Base64Escape(absl::string_view(reinterpret_cast<char*>(digest), sizeof(digest))));
}

}  // namespace sockwatch
