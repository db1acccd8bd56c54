#include "collector/store.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "collector/sqlite_store.h"

namespace sockwatch {

namespace {

// Listed in every scheme error, so a typo tells the operator what works.
constexpr absl::string_view kAcceptedSchemes =
    "accepted: \"sqlite:PATH\" (ClickHouse is not supported yet)";

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> OpenStore(absl::string_view url) {
  const size_t colon = url.find(':');
  if (colon == absl::string_view::npos || colon == 0)
    return absl::InvalidArgumentError(
        absl::StrCat("store URL \"", url, "\" has no scheme; ", kAcceptedSchemes));
  // Schemes are case-insensitive (RFC 3986); the path is taken as written.
  const std::string scheme = absl::AsciiStrToLower(url.substr(0, colon));
  const absl::string_view rest = url.substr(colon + 1);
  if (scheme == "sqlite") {
    if (rest.empty())
      return absl::InvalidArgumentError(
          absl::StrCat("store URL \"", url, "\" names no file; expected \"sqlite:PATH\""));
    SqliteStoreOptions options;
    options.path = std::string(rest);
    absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(options);
    if (!store.ok()) return store.status();
    return std::unique_ptr<Store>(std::move(*store));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("store URL \"", url, "\": unknown scheme \"", scheme, "\"; ", kAcceptedSchemes));
}

absl::string_view EnvelopeKind(const v1::Envelope& env) {
  switch (env.event_case()) {
    case v1::Envelope::kExec:
      return "exec";
    case v1::Envelope::kFork:
      return "fork";
    case v1::Envelope::kExit:
      return "exit";
    case v1::Envelope::kNetwork:
      return "network";
    case v1::Envelope::kLoss:
      return "loss";
    case v1::Envelope::kCoverage:
      return "coverage";
    case v1::Envelope::kAlert:
      return "alert";
    case v1::Envelope::kLearning:
      return "learning";
    case v1::Envelope::EVENT_NOT_SET:
      break;
  }
  return "";
}

}  // namespace sockwatch
