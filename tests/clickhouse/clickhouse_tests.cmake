# The throwaway ClickHouse server of the tests, as a CTest fixture, so plain
# `ctest` needs nothing running: clickhouse_start (tests/clickhouse/start.sh)
# runs before the first test that needs it, clickhouse_stop after the last.
#
#   include(${PROJECT_SOURCE_DIR}/tests/clickhouse/clickhouse_tests.cmake)
#   sockwatch_discover_clickhouse_tests(my_tests [PROPERTY VALUE ...])
#
# discovers my_tests' GoogleTest cases (gtest_discover_tests) with
# SOCKWATCH_TEST_CLICKHOUSE=http://127.0.0.1:PORT in their environment and
# the fixture required; the extra arguments are more test properties.
# SOCKWATCH_TEST_CLICKHOUSE set at configure time names a server to use
# instead (say, a current ClickHouse release), and no fixture is made.
# GoogleTest first: its discovery script variable is per directory, and the
# guard below skips this whole file in the second directory that includes it.
include(GoogleTest)
include_guard(GLOBAL)

if(DEFINED ENV{SOCKWATCH_TEST_CLICKHOUSE})
  set(SOCKWATCH_TEST_CLICKHOUSE_URL "$ENV{SOCKWATCH_TEST_CLICKHOUSE}" CACHE INTERNAL "")
  set(SOCKWATCH_TEST_CLICKHOUSE_FIXTURE "" CACHE INTERNAL "")
else()
  # A port of its own per build tree (derived from its path), so the plain
  # and the sanitizer build can test at the same time.
  string(MD5 build_hash "${CMAKE_BINARY_DIR}")
  string(SUBSTRING "${build_hash}" 0 4 build_hash)
  math(EXPR default_port "20000 + (0x${build_hash} % 20000)")
  set(SOCKWATCH_TEST_CLICKHOUSE_PORT "${default_port}" CACHE STRING
    "HTTP port of the throwaway ClickHouse server of the tests (127.0.0.1)")
  set(SOCKWATCH_TEST_CLICKHOUSE_URL "http://127.0.0.1:${SOCKWATCH_TEST_CLICKHOUSE_PORT}"
    CACHE INTERNAL "")
  set(SOCKWATCH_TEST_CLICKHOUSE_FIXTURE FIXTURES_REQUIRED clickhouse CACHE INTERNAL "")
  set(dir "${CMAKE_BINARY_DIR}/tests/clickhouse-server")
  add_test(NAME clickhouse_start
    COMMAND ${PROJECT_SOURCE_DIR}/tests/clickhouse/start.sh ${dir} ${SOCKWATCH_TEST_CLICKHOUSE_PORT})
  add_test(NAME clickhouse_stop COMMAND ${PROJECT_SOURCE_DIR}/tests/clickhouse/stop.sh ${dir})
  set_tests_properties(clickhouse_start PROPERTIES FIXTURES_SETUP clickhouse TIMEOUT 120)
  set_tests_properties(clickhouse_stop PROPERTIES FIXTURES_CLEANUP clickhouse TIMEOUT 120)
endif()

function(sockwatch_discover_clickhouse_tests target)
  gtest_discover_tests(${target} PROPERTIES
    ENVIRONMENT "SOCKWATCH_TEST_CLICKHOUSE=${SOCKWATCH_TEST_CLICKHOUSE_URL}"
    ${SOCKWATCH_TEST_CLICKHOUSE_FIXTURE} ${ARGN})
endfunction()
