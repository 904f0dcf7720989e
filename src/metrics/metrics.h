// metrics: counters, gauges and latency histograms that any thread may update
// without a lock, and a writer of the Prometheus text exposition format 0.0.4
// (docs/metrics.md). No registry and no global state: each component owns
// its figures (the WAL its fsync histogram, the driver its Raft counters, the
// HTTP server its per-route table), and the /metrics handler reads them all
// and writes one page. Written by hand, as the design asks: Debian 12 has no
// Prometheus client library for C++, and the format is a page of text.
//
// Threads: Counter and Histogram are safe for any thread to
// update and read (relaxed atomics: a scrape may see one update and not
// another made at the same moment, never a torn value). Writer is not shared.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace raftkv::metrics {

// A monotonically increasing count.
class Counter {
 public:
  void Add(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Read() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// A latency histogram with the buckets every raftkv duration uses: upper
// bounds of 0.0001 * 2^k seconds for k = 0..16 (100 us to 6.55 s), then +Inf.
// Fixed buckets keep Observe to a few instructions and make histograms of
// different nodes and metrics add up in PromQL.
class Histogram {
 public:
  static constexpr int kBounds = 17;                 // Finite upper bounds.
  static constexpr uint64_t kFirstBoundNs = 100000;  // 0.0001 s.

  // The index of the bucket (0..kBounds, kBounds being +Inf) that holds a
  // duration of `ns` nanoseconds: the first whose bound is >= ns.
  static int BucketOf(uint64_t ns);
  // Upper bound of finite bucket k, in seconds.
  static double BoundSeconds(int k) { return 0.0001 * static_cast<double>(1u << k); }

  void ObserveNs(uint64_t ns) {
    buckets_[BucketOf(ns)].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(ns, std::memory_order_relaxed);
  }
  template <typename Rep, typename Period>
  void Observe(std::chrono::duration<Rep, Period> d) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    ObserveNs(ns > 0 ? static_cast<uint64_t>(ns) : 0);
  }

  struct Snapshot {
    std::array<uint64_t, kBounds + 1> buckets{};  // Per bucket, not cumulative.
    uint64_t count = 0;
    double sum_seconds = 0;
  };
  Snapshot Read() const;

 private:
  std::array<std::atomic<uint64_t>, kBounds + 1> buckets_{};
  std::atomic<uint64_t> sum_ns_{0};
};

// A label set: pairs of (name, value). Values are escaped by the Writer.
using Labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

// Writes one exposition page. Each metric family is opened with Family()
// (its HELP and TYPE lines) and followed by its samples; a family must not be
// opened twice.
class Writer {
 public:
  enum class Type { kCounter, kGauge, kHistogram };

  void Family(std::string_view name, Type type, std::string_view help);
  void Sample(std::string_view name, Labels labels, double value);
  void Sample(std::string_view name, double value) { Sample(name, {}, value); }
  // A histogram's _bucket (cumulative, with le), _sum and _count samples.
  void Histo(std::string_view name, Labels labels, const Histogram::Snapshot& h);

  // Family + one unlabelled sample.
  void Gauge(std::string_view name, std::string_view help, double value);
  void Counter(std::string_view name, std::string_view help, double value);

  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  void Name(std::string_view name, Labels labels, std::string_view le = {});
  void Value(double v);

  std::string out_;
};

// Escapes a label value (backslash, double quote, newline), as the format demands.
void AppendLabelValue(std::string* out, std::string_view v);

// process_* figures from procfs, as Prometheus's client libraries export
// them: process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_start_time_seconds. A figure that cannot be read is left out.
void WriteProcessMetrics(Writer* w);

}  // namespace raftkv::metrics
