// Community ID v1 flow hash (https://github.com/corelight/community-id-spec),
// so sockwatch events join with Zeek and Suricata logs.
#ifndef SOCKWATCH_AGENT_COMMUNITY_ID_H_
#define SOCKWATCH_AGENT_COMMUNITY_ID_H_

#include <cstdint>
#include <string>

#include "absl/types/span.h"

namespace sockwatch {

// Addresses in network byte order, 4 bytes (IPv4) or 16 (IPv6); ports in host
// byte order. Returns "1:<base64 sha1>", or "" for mismatched address sizes.
std::string CommunityId(uint8_t ip_proto, absl::Span<const uint8_t> src_ip, uint16_t src_port,
                        absl::Span<const uint8_t> dst_ip, uint16_t dst_port, uint16_t seed = 0);

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_COMMUNITY_ID_H_
