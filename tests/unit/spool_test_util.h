// Shared fixture and helpers of the spool unit tests (spool_test.cc: the
// spool's behaviour; spool_damage_test.cc: damage on disk and the format).
#ifndef SOCKWATCH_TESTS_UNIT_SPOOL_TEST_UTIL_H_
#define SOCKWATCH_TESTS_UNIT_SPOOL_TEST_UTIL_H_

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/spool.h"
#include "gtest/gtest.h"

namespace sockwatch::spool_test {

namespace fs = std::filesystem;

constexpr size_t kSegHeader = 24;  // file header, as documented in spool_format.h
constexpr size_t kRecHeader = 32;  // record header
constexpr size_t kPayload = 300;
constexpr size_t kRecord = kRecHeader + kPayload;
// A 4 KiB segment holds 12 records of 300 bytes: 24 + 12 * 332 = 4008.
constexpr uint64_t kPerSegment = 12;

// Distinct, checkable payload for each record number.
inline std::string Payload(uint64_t n, size_t size = kPayload) {
  std::string p = absl::StrCat("rec-", n, "-");
  while (p.size() < size) p.push_back(static_cast<char>('a' + (n + p.size()) % 26));
  p.resize(size);
  return p;
}

// Event times near now, one second apart, so they are ordered like real ones.
inline const absl::Time kBase = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()) - 3600);
inline absl::Time T(uint64_t n) { return kBase + absl::Seconds(static_cast<int64_t>(n)); }

// Bitwise CRC-32C, independent of the spool's table/SSE4.2 code.
inline uint32_t Crc32c(absl::string_view data, uint32_t crc = 0) {
  crc = ~crc;
  for (char ch : data) {
    crc ^= static_cast<uint8_t>(ch);
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

template <typename T>
T Get(const std::string& s, size_t off) {
  T v;
  memcpy(&v, s.data() + off, sizeof(v));
  return v;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void OverwriteByte(const std::string& path, uint64_t off) {
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  char c;
  ASSERT_EQ(pread(fd, &c, 1, static_cast<off_t>(off)), 1);
  c ^= 0x5a;
  ASSERT_EQ(pwrite(fd, &c, 1, static_cast<off_t>(off)), 1);
  close(fd);
}

inline std::vector<uint64_t> Seqs(const std::vector<SpoolRecord>& recs) {
  std::vector<uint64_t> seqs;
  for (const SpoolRecord& r : recs) seqs.push_back(r.seq);
  return seqs;
}

inline std::vector<uint64_t> Range(uint64_t from, uint64_t to) {
  std::vector<uint64_t> v;
  for (uint64_t i = from; i <= to; ++i) v.push_back(i);
  return v;
}

class SpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/spool_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/spool";
  }
  void TearDown() override { fs::remove_all(root_); }

  SpoolOptions Options(uint64_t segment_bytes = 4096, uint64_t max_bytes = 1 << 20) const {
    SpoolOptions o;
    o.dir = dir_;
    o.segment_bytes = segment_bytes;
    o.max_bytes = max_bytes;
    o.fsync = SpoolFsync::kNever;
    return o;
  }

  std::unique_ptr<Spool> MustOpen(const SpoolOptions& o) {
    absl::StatusOr<std::unique_ptr<Spool>> s = Spool::Open(o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // Appends records from..to (payload and time by number), checking each seq.
  void AppendRange(Spool& s, uint64_t from, uint64_t to, uint64_t first_seq = 0) {
    for (uint64_t n = from; n <= to; ++n) {
      absl::StatusOr<uint64_t> seq = s.Append(Payload(n), T(n));
      ASSERT_TRUE(seq.ok()) << seq.status();
      if (first_seq != 0) {
        ASSERT_EQ(*seq, first_seq + (n - from));
      }
    }
  }

  // Everything after `after`, in batches, as the exporter reads it.
  std::vector<SpoolRecord> ReadAll(Spool& s, uint64_t after = 0, size_t batch = 7) {
    std::vector<SpoolRecord> all, part;
    for (;;) {
      absl::Status st = s.Read(after, batch, 1 << 20, &part);
      EXPECT_TRUE(st.ok()) << st;
      if (!st.ok() || part.empty()) return all;
      after = part.back().seq;
      std::move(part.begin(), part.end(), std::back_inserter(all));
    }
  }

  // Checks that each record holds the payload it was appended with, where
  // record n was appended as seq n.
  void ExpectPayloads(const std::vector<SpoolRecord>& recs) {
    for (const SpoolRecord& r : recs) ASSERT_EQ(r.payload, Payload(r.seq)) << r.seq;
  }

  std::vector<std::string> SegmentFiles() const {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.path().filename().string().rfind("seg-", 0) == 0) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    return files;
  }

  std::string root_;
  std::string dir_;
};

}  // namespace sockwatch::spool_test

#endif  // SOCKWATCH_TESTS_UNIT_SPOOL_TEST_UTIL_H_
