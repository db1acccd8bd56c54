#include "collector/clickhouse_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <utility>

#include "absl/base/call_once.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace sockwatch::clickhouse {

namespace {

constexpr absl::string_view kUrlForm = "clickhouse://[USER[:PASSWORD]@]HOST[:PORT]/DB";
// Enough of an error body to read ClickHouse's message; the rest is noise.
constexpr size_t kMaxErrorBytes = 1000;
// Idle handles kept for reuse: the writer and a few query threads.
constexpr size_t kMaxIdleHandles = 8;

absl::Status BadUrl(absl::string_view url, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("store URL \"", url, "\": ", why, "; expected \"", kUrlForm, "\""));
}

bool IsIdentifier(absl::string_view s) {
  if (s.empty() || absl::ascii_isdigit(static_cast<unsigned char>(s[0]))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

// A server's error text, fit for a log line: printable ASCII, one line,
// bounded. ClickHouse 18's messages end with a redundant "e.what()" part.
std::string Printable(absl::string_view body) {
  body = absl::StripTrailingAsciiWhitespace(body);
  body = absl::StripSuffix(body, ", e.what() = DB::Exception");
  std::string out;
  for (size_t i = 0; i < body.size() && i < kMaxErrorBytes; ++i) {
    const auto c = static_cast<unsigned char>(body[i]);
    if (c == '\n' || c == '\r' || c == '\t') {
      out.push_back(' ');
    } else if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    }
  }
  if (body.size() > kMaxErrorBytes) absl::StrAppend(&out, "... (", body.size(), " bytes)");
  return out;
}

// ClickHouse's error code ("Code: 60, ..."), or -1.
int ErrorCode(absl::string_view body) {
  int code = -1;
  if (!absl::ConsumePrefix(&body, "Code: ")) return code;
  const size_t end = body.find_first_not_of("0123456789");
  if (!absl::SimpleAtoi(body.substr(0, end), &code)) return -1;
  return code;
}

absl::StatusCode HttpStatusCode(long http, int clickhouse_code) {
  // Unknown user, wrong password, no access (18.x and current codes).
  if (http == 401 || http == 403 || clickhouse_code == 192 || clickhouse_code == 193 ||
      clickhouse_code == 194 || clickhouse_code == 497 || clickhouse_code == 516)
    return absl::StatusCode::kPermissionDenied;
  if (http == 404) return absl::StatusCode::kNotFound;
  if (http == 503) return absl::StatusCode::kUnavailable;
  return absl::StatusCode::kInternal;
}

absl::once_flag curl_init_once;

}  // namespace

std::string Endpoint::Name() const { return absl::StrCat(host, ":", port); }

absl::StatusOr<Endpoint> ParseUrl(absl::string_view url) {
  absl::string_view rest = url;
  const size_t scheme_end = rest.find("://");
  if (scheme_end == absl::string_view::npos ||
      !absl::EqualsIgnoreCase(rest.substr(0, scheme_end), "clickhouse"))
    return BadUrl(url, "not a clickhouse:// URL");
  rest.remove_prefix(scheme_end + 3);
  if (rest.find_first_of("?#") != absl::string_view::npos)
    return BadUrl(url, "query strings and fragments are not supported");
  const size_t slash = rest.find('/');
  if (slash == absl::string_view::npos) return BadUrl(url, "no database");
  absl::string_view authority = rest.substr(0, slash);
  const absl::string_view database = rest.substr(slash + 1);
  Endpoint ep;
  if (const size_t at = authority.rfind('@'); at != absl::string_view::npos) {
    const absl::string_view userinfo = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    const size_t colon = userinfo.find(':');
    ep.user = std::string(userinfo.substr(0, colon));
    if (colon != absl::string_view::npos) ep.password = std::string(userinfo.substr(colon + 1));
    if (ep.user.empty()) return BadUrl(url, "empty user name");
  }
  // [v6 address]:port, or name:port; the port is optional.
  absl::string_view port;
  if (absl::StartsWith(authority, "[")) {
    const size_t close = authority.find(']');
    if (close == absl::string_view::npos) return BadUrl(url, "unterminated [IPv6 address]");
    ep.host = std::string(authority.substr(0, close + 1));
    absl::string_view after = authority.substr(close + 1);
    if (!after.empty() && !absl::ConsumePrefix(&after, ":"))
      return BadUrl(url, "junk after the [IPv6 address]");
    port = after;
    if (after.empty() && authority.size() > close + 1) return BadUrl(url, "empty port");
  } else {
    const size_t colon = authority.find(':');
    ep.host = std::string(authority.substr(0, colon));
    if (colon != absl::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return BadUrl(url, "empty port");
    }
  }
  if (ep.host.empty() || ep.host == "[]") return BadUrl(url, "no host");
  if (!port.empty() && (!absl::SimpleAtoi(port, &ep.port) || ep.port < 1 || ep.port > 65535))
    return BadUrl(url, absl::StrCat("port \"", port, "\" is not a number from 1 to 65535"));
  if (database.empty()) return BadUrl(url, "no database");
  if (!IsIdentifier(database))
    return BadUrl(url, absl::StrCat("database \"", database,
                                    "\" is not a plain name (letters, digits, _; not a digit "
                                    "first)"));
  ep.database = std::string(database);
  return ep;
}

std::string Quote(absl::string_view s) {
  std::string out = "'";
  out.reserve(s.size() + 2);
  for (char c : s) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\'':
        out += "\\'";
        break;
      case '\0':
        out += "\\0";
        break;
      default:
        out.push_back(c);
    }
  }
  out.push_back('\'');
  return out;
}

absl::Status ForEachJoined(absl::Span<const std::string> terms, absl::string_view sep,
                           absl::FunctionRef<absl::Status(absl::string_view)> run) {
  constexpr size_t max_bytes = 128 << 10;
  std::string joined;
  for (size_t i = 0; i < terms.size(); ++i) {
    if (!joined.empty()) joined.append(sep.data(), sep.size());
    joined += terms[i];
    const bool last = i + 1 == terms.size();
    if (last || joined.size() + sep.size() + terms[i + 1].size() > max_bytes) {
      if (absl::Status s = run(joined); !s.ok()) return s;
      joined.clear();
    }
  }
  return absl::OkStatus();
}

std::string LimitClause(size_t offset, size_t limit) {
  constexpr size_t kMax = size_t{1} << 62;
  if (offset == 0 && limit == 0) return "";
  return absl::StrCat(" LIMIT ", std::min(offset, kMax), ", ",
                      limit == 0 ? kMax : std::min(limit, kMax));
}

// One HTTP exchange: what to send, and where the answer goes.
struct Client::Request {
  std::string url;
  absl::string_view body;
  absl::string_view what;
  // For Select: the result's column types, and what to call per row.
  absl::Span<const int> columns;
  RowFn* row = nullptr;

  // Filled while the answer arrives.
  void* handle = nullptr;
  long http = 0;
  std::string pending;  // bytes of a row not complete yet
  std::string error_body;
  bool stopped = false;  // row asked to stop: the transfer is cut on purpose
  absl::Status row_error;
  std::vector<absl::string_view> values;

  // Cuts complete rows off the front of pending and hands them to row.
  // Returns false to cut the transfer (stop or error).
  bool DrainRows();
  static size_t OnData(char* data, size_t size, size_t n, void* self);
};

bool Client::Request::DrainRows() {
  absl::string_view in = pending;
  size_t done = 0;  // bytes of pending consumed by complete rows
  for (;;) {
    values.clear();
    size_t at = done;
    for (const int width : columns) {
      size_t len = static_cast<size_t>(width);
      if (width == kString) {
        uint64_t n = 0;
        int shift = 0;
        for (;;) {
          if (at >= in.size() || shift > 63) {
            len = SIZE_MAX;  // incomplete (or absurd): wait for more
            break;
          }
          const auto byte = static_cast<unsigned char>(in[at++]);
          n |= uint64_t{byte & 0x7fu} << shift;
          shift += 7;
          if ((byte & 0x80) == 0) break;
        }
        if (len == SIZE_MAX) break;
        len = n;
      }
      if (len > in.size() - at) break;
      values.push_back(in.substr(at, len));
      at += len;
    }
    if (values.size() < columns.size()) break;
    absl::StatusOr<bool> more = (*row)(values);
    done = at;
    if (!more.ok() || !*more) {
      if (!more.ok()) row_error = more.status();
      stopped = true;
      return false;
    }
  }
  pending.erase(0, done);
  return true;
}

size_t Client::Request::OnData(char* data, size_t size, size_t n, void* self) {
  auto* r = static_cast<Request*>(self);
  const size_t bytes = size * n;
  if (r->http == 0) curl_easy_getinfo(r->handle, CURLINFO_RESPONSE_CODE, &r->http);
  if (r->http != 200) {
    // An error: keep the start of ClickHouse's message.
    const size_t room = kMaxErrorBytes * 2 - std::min(r->error_body.size(), kMaxErrorBytes * 2);
    r->error_body.append(data, std::min(bytes, room));
    return bytes;
  }
  if (r->row == nullptr) return bytes;
  r->pending.append(data, bytes);
  return r->DrainRows() ? bytes : 0;
}

Client::Client(Endpoint endpoint, ClientOptions options, std::string who)
    : endpoint_(std::move(endpoint)),
      options_(options),
      who_(std::move(who)),
      // wait_end_of_query: the server buffers the result and sends the
      // status line last, so an error found mid-query is an HTTP error, not
      // a 200 with the message appended to half a result.
      base_url_(absl::StrCat("http://", endpoint_.Name(), "/?wait_end_of_query=1")) {
  absl::call_once(curl_init_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

Client::~Client() {
  absl::MutexLock lock(&mu_);
  for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* Client::TakeHandle() {
  {
    absl::MutexLock lock(&mu_);
    if (!idle_.empty()) {
      void* h = idle_.back();
      idle_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void Client::GiveHandle(void* handle) {
  absl::MutexLock lock(&mu_);
  if (idle_.size() < kMaxIdleHandles) {
    idle_.push_back(handle);
    return;
  }
  curl_easy_cleanup(static_cast<CURL*>(handle));
}

absl::Status Client::Perform(Request& r) {
  const std::string where =
      absl::StrCat(who_, " ", endpoint_.Name(), endpoint_.database.empty() ? "" : "/",
                   endpoint_.database, ": ", r.what);
  CURL* h = static_cast<CURL*>(TakeHandle());
  if (h == nullptr)
    return absl::ResourceExhaustedError(absl::StrCat(where, ": cannot create a curl handle"));
  r.handle = h;
  char errbuf[CURL_ERROR_SIZE] = {};
  // "Expect:" off: curl would wait for a 100 Continue before a large body.
  curl_slist* headers = curl_slist_append(nullptr, "Expect:");
  headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
  curl_easy_setopt(h, CURLOPT_URL, r.url.c_str());
  curl_easy_setopt(h, CURLOPT_POST, 1L);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, r.body.data());
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &Request::OnData);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // many threads: no SIGALRM for timeouts
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  // A database connection: http_proxy and friends are meant for browsers.
  curl_easy_setopt(h, CURLOPT_PROXY, "");
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(options_.connect_timeout)));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(options_.timeout)));
  if (!endpoint_.user.empty()) {
    curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(h, CURLOPT_USERNAME, endpoint_.user.c_str());
    curl_easy_setopt(h, CURLOPT_PASSWORD, endpoint_.password.c_str());
  }
  const CURLcode rc = curl_easy_perform(h);
  if (r.http == 0) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.http);
  const std::string detail = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
  // Nothing of this call (buffers, headers) stays behind in the idle handle.
  // A transfer cut short leaves a half-read connection, which curl closes.
  curl_easy_reset(h);
  curl_slist_free_all(headers);
  GiveHandle(h);
  if (r.stopped) return r.row_error;
  if (rc != CURLE_OK) return absl::UnavailableError(absl::StrCat(where, ": ", detail));
  if (r.http != 200)
    return absl::Status(HttpStatusCode(r.http, ErrorCode(r.error_body)),
                        absl::StrCat(where, ": HTTP ", r.http, ": ", Printable(r.error_body)));
  if (!r.pending.empty())
    return absl::DataLossError(
        absl::StrCat(where, ": the result ends inside a row (", r.pending.size(), " bytes left)"));
  return absl::OkStatus();
}

absl::Status Client::Execute(absl::string_view sql, absl::string_view what) {
  Request r;
  r.url = base_url_;
  r.body = sql;
  r.what = what;
  return Perform(r);
}

absl::Status Client::Insert(absl::string_view into, absl::string_view rows,
                            absl::string_view what) {
  // The statement goes in the URL, so the body is nothing but data.
  const std::string sql = absl::StrCat("INSERT INTO ", into, " FORMAT RowBinary");
  Request r;
  char* escaped = curl_easy_escape(nullptr, sql.data(), static_cast<int>(sql.size()));
  if (escaped == nullptr) return absl::ResourceExhaustedError("clickhouse: cannot escape a URL");
  // Each INSERT is one block already (far below max_insert_block_size rows):
  // no squashing, which would copy every column once more.
  r.url = absl::StrCat(base_url_, "&min_insert_block_size_rows=0&min_insert_block_size_bytes=0",
                       "&query=", escaped);
  curl_free(escaped);
  r.body = rows;
  r.what = what;
  return Perform(r);
}

absl::Status Client::Select(absl::string_view sql, absl::Span<const int> columns,
                            absl::string_view what, RowFn row) {
  const std::string full = absl::StrCat(sql, " FORMAT RowBinary");
  Request r;
  r.url = base_url_;
  r.body = full;
  r.what = what;
  r.columns = columns;
  r.row = &row;
  return Perform(r);
}

}  // namespace sockwatch::clickhouse
