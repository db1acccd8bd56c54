// libFuzzer target for ProtocolTable::Parse: no exception may escape (a
// yaml-cpp exception would abort), errors are InvalidArgument with a
// printable message, and a parsed table finds every rule it holds.
#include <cstddef>
#include <cstdint>
#include <string>

#include "agent/protocol_table.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view yaml(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<sockwatch::ProtocolTable> t =
      sockwatch::ProtocolTable::Parse(yaml, "fuzz.yaml");
  if (!t.ok()) {
    if (t.status().code() != absl::StatusCode::kInvalidArgument) __builtin_trap();
    for (char c : t.status().message()) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f)
        __builtin_trap();
    }
    return 0;
  }
  for (const sockwatch::PortRule& r : t->rules()) {
    if (t->Find(r.port, r.transport) == nullptr || r.expect.empty()) __builtin_trap();
  }
  return 0;
}
