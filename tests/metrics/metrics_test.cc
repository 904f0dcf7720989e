#include "metrics/metrics.h"

#include <gtest/gtest.h>

#include <chrono>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace raftkv::metrics {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

TEST(HistogramTest, EachDurationLandsInTheFirstBucketWhoseBoundHoldsIt) {
  EXPECT_EQ(Histogram::BucketOf(0), 0);
  EXPECT_EQ(Histogram::BucketOf(100000), 0);  // 100 us: on the first bound (le is inclusive).
  EXPECT_EQ(Histogram::BucketOf(100001), 1);
  EXPECT_EQ(Histogram::BucketOf(200000), 1);
  EXPECT_EQ(Histogram::BucketOf(200001), 2);
  EXPECT_EQ(Histogram::BucketOf(100000ull << 16), 16);  // 6.5536 s, the last finite bound.
  EXPECT_EQ(Histogram::BucketOf((100000ull << 16) + 1), Histogram::kBounds);  // +Inf.
  EXPECT_EQ(Histogram::BucketOf(UINT64_MAX), Histogram::kBounds);
  // Against the bounds themselves, for every bucket.
  for (int k = 0; k < Histogram::kBounds; k++) {
    const auto bound_ns = static_cast<uint64_t>(Histogram::BoundSeconds(k) * 1e9 + 0.5);
    EXPECT_EQ(Histogram::BucketOf(bound_ns), k) << k;
    EXPECT_EQ(Histogram::BucketOf(bound_ns + 1), k + 1) << k;
  }
}

TEST(HistogramTest, ReadGivesCountsSumAndCount) {
  Histogram h;
  h.Observe(microseconds(50));
  h.Observe(microseconds(150));
  h.Observe(milliseconds(10));
  h.Observe(std::chrono::seconds(100));
  Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.count, 4u);
  EXPECT_EQ(s.buckets[0], 1u);
  EXPECT_EQ(s.buckets[1], 1u);
  EXPECT_EQ(s.buckets[Histogram::BucketOf(10000000)], 1u);
  EXPECT_EQ(s.buckets[Histogram::kBounds], 1u);
  EXPECT_NEAR(s.sum_seconds, 100.01020, 1e-9);
}

TEST(HistogramTest, ConcurrentObserversLoseNothing) {
  Histogram h;
  Counter c;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&h, &c, t] {
      for (int i = 0; i < 20000; i++) {
        h.ObserveNs(static_cast<uint64_t>(t) * 300000 + static_cast<uint64_t>(i));
        c.Add();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(h.Read().count, 80000u);
  EXPECT_EQ(c.Read(), 80000u);
}

TEST(WriterTest, WritesFamiliesSamplesAndEscapedLabels) {
  Writer w;
  w.Family("x_requests_total", Writer::Type::kCounter, "Requests.\nBy route \\ code.");
  w.Sample("x_requests_total", {{"route", "/v1/kv/{key}"}, {"code", "200"}}, 12);
  w.Sample("x_requests_total", {{"route", "a\"b\\c\nd"}}, 1.5);
  w.Gauge("x_up", "Up.", 1);
  EXPECT_EQ(w.text(),
            "# HELP x_requests_total Requests.\\nBy route \\\\ code.\n"
            "# TYPE x_requests_total counter\n"
            "x_requests_total{route=\"/v1/kv/{key}\",code=\"200\"} 12\n"
            "x_requests_total{route=\"a\\\"b\\\\c\\nd\"} 1.5\n"
            "# HELP x_up Up.\n"
            "# TYPE x_up gauge\n"
            "x_up 1\n");
}

TEST(WriterTest, HistogramBucketsAreCumulativeAndEndWithInf) {
  Histogram h;
  h.Observe(microseconds(80));
  h.Observe(microseconds(80));
  h.Observe(microseconds(300));
  h.Observe(std::chrono::seconds(20));
  Writer w;
  w.Family("x_seconds", Writer::Type::kHistogram, "Durations.");
  w.Histo("x_seconds", {{"to", "n2"}}, h.Read());
  std::istringstream in(w.text());
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(in, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), 2u + Histogram::kBounds + 1 + 2);
  EXPECT_EQ(lines[2], "x_seconds_bucket{to=\"n2\",le=\"0.0001\"} 2");
  EXPECT_EQ(lines[3], "x_seconds_bucket{to=\"n2\",le=\"0.0002\"} 2");
  EXPECT_EQ(lines[4], "x_seconds_bucket{to=\"n2\",le=\"0.0004\"} 3");
  EXPECT_EQ(lines[2 + 16], "x_seconds_bucket{to=\"n2\",le=\"6.5536\"} 3");
  EXPECT_EQ(lines[2 + 17], "x_seconds_bucket{to=\"n2\",le=\"+Inf\"} 4");
  EXPECT_EQ(lines[2 + 18].rfind("x_seconds_sum{to=\"n2\"} 20.00046", 0), 0u) << lines[2 + 18];
  EXPECT_EQ(lines[2 + 19], "x_seconds_count{to=\"n2\"} 4");
}

TEST(ProcessMetricsTest, ReadsProcfs) {
  Writer w;
  WriteProcessMetrics(&w);
  const std::string& t = w.text();
  for (const char* name :
       {"process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds ",
        "process_max_fds ", "process_start_time_seconds ", "process_virtual_memory_bytes "}) {
    EXPECT_NE(t.find(std::string("\n") + name), std::string::npos) << name << " in\n" << t;
  }
  // The start time is in the past and after 2020.
  size_t at = t.find("\nprocess_start_time_seconds ");
  double start = std::stod(t.substr(at + 28));
  EXPECT_GT(start, 1.5e9);
  EXPECT_LE(start, static_cast<double>(std::time(nullptr)) + 1);
}

}  // namespace
}  // namespace raftkv::metrics
