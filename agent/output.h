// --print: one line per envelope, as proto JSON (field names as in the
// .proto) or as text for people.
#ifndef SOCKWATCH_AGENT_OUTPUT_H_
#define SOCKWATCH_AGENT_OUTPUT_H_

#include <string>

#include "absl/status/statusor.h"
#include "sockwatch/v1/event.pb.h"

namespace sockwatch {

enum class PrintFormat { kNone, kJson, kText };

absl::StatusOr<PrintFormat> ParsePrintFormat(absl::string_view s);

// One line, no trailing newline.
std::string EnvelopeToJson(const v1::Envelope& env);
std::string EnvelopeToText(const v1::Envelope& env);
// "kernel=… btf=… process=… | blind spot: …", for the start-up log too.
std::string CoverageToText(const v1::Coverage& c);

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_OUTPUT_H_
