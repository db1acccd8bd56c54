// The baseline-at-scale section of detect_bench (detect_bench_scale.cc).
#ifndef SOCKWATCH_TESTS_BENCH_DETECT_BENCH_SCALE_H_
#define SOCKWATCH_TESTS_BENCH_DETECT_BENCH_SCALE_H_

#include <cstdint>
#include <string>

namespace detect_bench_scale {
// Fills a baseline with `images` x 10 behaviours under dir, prints a table;
// false (after saying why) on failure.
bool Run(uint32_t images, const std::string& dir);
}  // namespace detect_bench_scale

#endif  // SOCKWATCH_TESTS_BENCH_DETECT_BENCH_SCALE_H_
