// A small client of ClickHouse's HTTP interface, on libcurl: what
// ClickHouseStore (and its tests) need and no more.
//
// Data goes both ways in RowBinary (little-endian fixed-width numbers,
// LEB128-length-prefixed strings): no text escaping or parsing per value,
// which is most of the per-row cost of the text formats at 500k rows/s.
//
// Threads: a Client may be used from any number of threads. Each call takes
// a curl handle from a small pool (a handle keeps its connection alive, so
// the next call skips the TCP handshake) and gives it back when done.
#ifndef SOCKWATCH_COLLECTOR_CLICKHOUSE_CLIENT_H_
#define SOCKWATCH_COLLECTOR_CLICKHOUSE_CLIENT_H_

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace sockwatch::clickhouse {

static_assert(std::endian::native == std::endian::little,
              "RowBinary is little-endian; values are copied as they lie in memory");

// Where the server is: clickhouse://[USER[:PASSWORD]@]HOST[:PORT]/DB.
struct Endpoint {
  std::string host;  // as written; an IPv6 address keeps its brackets
  int port = 8123;
  std::string database;
  std::string user;  // empty: the server's default user, no credentials sent
  std::string password;

  // "host:port", for messages.
  std::string Name() const;
};
// Parses url; InvalidArgument naming what is wrong and the expected form.
// The database must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*): it is
// spliced into SQL.
absl::StatusOr<Endpoint> ParseUrl(absl::string_view url);

// s as a ClickHouse string literal, quotes included.
std::string Quote(absl::string_view s);

// Appends RowBinary values to a buffer. A String is its length (LEB128)
// and its bytes: PutLength then the bytes is one too.
inline void PutLength(std::string& out, uint64_t n) {
  do {
    const auto byte = static_cast<char>((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    out.push_back(byte);
    n >>= 7;
  } while (n != 0);
}
inline void PutString(std::string& out, absl::string_view s) {
  PutLength(out, s.size());
  out.append(s.data(), s.size());
}
template <typename T>
void PutFixed(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(v));
}

// The column types of a RowBinary result, for splitting it into rows:
// kString, or the width in bytes of a fixed-size number.
inline constexpr int kString = 0;
// A fixed-size column value, as cut out by Client::Select.
template <typename T>
T Fixed(absl::string_view v) {
  T out{};
  if (v.size() == sizeof(T)) std::memcpy(&out, v.data(), sizeof(T));
  return out;
}

// Calls run with terms joined by sep, as many per call as fit in 128 KiB
// (at least one): how a long IN list or OR of conditions stays under the
// server's max_query_size (256 KiB by default). Stops at the first error.
absl::Status ForEachJoined(absl::Span<const std::string> terms, absl::string_view sep,
                           absl::FunctionRef<absl::Status(absl::string_view)> run);

// " LIMIT offset, n" ("" for everything): at most limit rows (0: no
// bound) after skipping offset. Bounds are capped at 2^62: 18.16 fails
// on LIMIT m, n where m + n passes 2^63.
std::string LimitClause(size_t offset, size_t limit);

struct ClientOptions {
  absl::Duration connect_timeout = absl::Seconds(5);
  // The longest a single request may take (0: no bound).
  absl::Duration timeout = absl::Minutes(10);
};

class Client {
 public:
  // who starts every error message, before "HOST:PORT/DB: what: ...".
  Client(Endpoint endpoint, ClientOptions options, std::string who = "clickhouse");
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const Endpoint& endpoint() const { return endpoint_; }

  // Runs a statement that returns nothing worth reading (DDL).
  absl::Status Execute(absl::string_view sql, absl::string_view what);
  // Runs `INSERT INTO <into> FORMAT RowBinary` with rows as its data.
  // ClickHouse writes one block into one part per partition before it
  // answers (see ClickHouseStore on what that guarantees).
  absl::Status Insert(absl::string_view into, absl::string_view rows, absl::string_view what);
  // Runs a SELECT whose result is RowBinary with these column types, and
  // calls row with each row's values (strings as they are, fixed-size
  // numbers for Fixed<T>). The result streams: memory holds about one
  // network read, however large it is. row returns false to stop early,
  // or an error, which ends the call with it.
  using RowFn = absl::FunctionRef<absl::StatusOr<bool>(absl::Span<const absl::string_view>)>;
  absl::Status Select(absl::string_view sql, absl::Span<const int> columns, absl::string_view what,
                      RowFn row);

 private:
  struct Request;
  absl::Status Perform(Request& request);
  void* TakeHandle();
  void GiveHandle(void* handle);

  const Endpoint endpoint_;
  const ClientOptions options_;
  const std::string who_;
  const std::string base_url_;
  absl::Mutex mu_;
  std::vector<void*> idle_ ABSL_GUARDED_BY(mu_);  // CURL*, kept out of this header
};

}  // namespace sockwatch::clickhouse

#endif  // SOCKWATCH_COLLECTOR_CLICKHOUSE_CLIENT_H_
