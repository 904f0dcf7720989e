#include "metrics/metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <bit>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>
#include <vector>

namespace raftkv::metrics {

int Histogram::BucketOf(uint64_t ns) {
  if (ns <= kFirstBoundNs) return 0;
  // Bound k is kFirstBoundNs << k: the first k with ns <= that bound.
  int k = std::bit_width((ns - 1) / kFirstBoundNs);
  return k > kBounds ? kBounds : k;
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  for (int i = 0; i <= kBounds; i++) {
    s.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
    s.count += s.buckets[i];
  }
  s.sum_seconds = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
  return s;
}

void AppendLabelValue(std::string* out, std::string_view v) {
  for (char c : v) {
    switch (c) {
      case '\\':
        *out += "\\\\";
        break;
      case '"':
        *out += "\\\"";
        break;
      case '\n':
        *out += "\\n";
        break;
      default:
        out->push_back(c);
    }
  }
}

void Writer::Family(std::string_view name, Type type, std::string_view help) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  // HELP text escapes backslash and newline only.
  for (char c : help) {
    if (c == '\\') {
      out_ += "\\\\";
    } else if (c == '\n') {
      out_ += "\\n";
    } else {
      out_.push_back(c);
    }
  }
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += type == Type::kCounter ? " counter\n"
          : type == Type::kGauge ? " gauge\n"
                                 : " histogram\n";
}

void Writer::Name(std::string_view name, Labels labels, std::string_view le) {
  out_ += name;
  if (labels.size() == 0 && le.empty()) return;
  out_ += '{';
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out_ += ',';
    first = false;
    out_ += k;
    out_ += "=\"";
    AppendLabelValue(&out_, v);
    out_ += '"';
  }
  if (!le.empty()) {
    if (!first) out_ += ',';
    out_ += "le=\"";
    out_ += le;
    out_ += '"';
  }
  out_ += '}';
}

void Writer::Value(double v) {
  out_ += ' ';
  if (std::isnan(v)) {
    out_ += "NaN";
  } else if (std::isinf(v)) {
    out_ += v > 0 ? "+Inf" : "-Inf";
  } else if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, static_cast<int64_t>(v));
    out_.append(buf, end);
  } else {
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out_.append(buf, end);
  }
  out_ += '\n';
}

void Writer::Sample(std::string_view name, Labels labels, double value) {
  Name(name, labels);
  Value(value);
}

void Writer::Histo(std::string_view name, Labels labels, const Histogram::Snapshot& h) {
  std::string bucket(name), sum(name), count(name);
  bucket += "_bucket";
  sum += "_sum";
  count += "_count";
  uint64_t cumulative = 0;
  for (int k = 0; k < Histogram::kBounds; k++) {
    cumulative += h.buckets[k];
    char le[32];
    // Fixed notation ("0.0001", not "1e-04"), as client libraries write bounds.
    auto [end, ec] =
        std::to_chars(le, le + sizeof le, Histogram::BoundSeconds(k), std::chars_format::fixed);
    Name(bucket, labels, std::string_view(le, end - le));
    Value(static_cast<double>(cumulative));
  }
  Name(bucket, labels, "+Inf");
  Value(static_cast<double>(h.count));
  Name(sum, labels);
  Value(h.sum_seconds);
  Name(count, labels);
  Value(static_cast<double>(h.count));
}

void Writer::Gauge(std::string_view name, std::string_view help, double value) {
  Family(name, Type::kGauge, help);
  Sample(name, value);
}

void Writer::Counter(std::string_view name, std::string_view help, double value) {
  Family(name, Type::kCounter, help);
  Sample(name, value);
}

namespace {

// The fields of /proc/self/stat after the command name (field 3 onwards).
bool ReadStatFields(std::vector<std::string>* fields) {
  std::ifstream f("/proc/self/stat");
  std::string line;
  if (!std::getline(f, line)) return false;
  size_t close = line.rfind(')');  // The command name may hold spaces and parentheses.
  if (close == std::string::npos) return false;
  std::istringstream rest(line.substr(close + 1));
  std::string field;
  while (rest >> field) fields->push_back(field);
  return fields->size() > 21;
}

// Seconds since the epoch at boot (btime in /proc/stat); 0 if unknown.
double BootTime() {
  std::ifstream f("/proc/stat");
  std::string key;
  double value = 0;
  while (f >> key) {
    if (key == "btime" && f >> value) return value;
    f.ignore(1 << 20, '\n');
  }
  return 0;
}

}  // namespace

void WriteProcessMetrics(Writer* w) {
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  std::vector<std::string> st;
  if (ReadStatFields(&st) && ticks > 0) {
    // Field numbers from proc(5), minus 3: utime 14, stime 15, starttime 22,
    // vsize 23, rss 24.
    double cpu = (std::stod(st[11]) + std::stod(st[12])) / ticks;
    w->Counter("process_cpu_seconds_total", "User and system CPU time spent in seconds.", cpu);
    if (double boot = BootTime(); boot > 0) {
      w->Gauge("process_start_time_seconds",
               "Start time of the process since unix epoch in seconds.",
               boot + std::stod(st[19]) / ticks);
    }
    w->Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", std::stod(st[20]));
    w->Gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
             std::stod(st[21]) * page);
  }
  if (DIR* d = opendir("/proc/self/fd")) {
    int n = 0;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') n++;
    }
    closedir(d);
    w->Gauge("process_open_fds", "Number of open file descriptors.", n - 1);  // Less this one.
  }
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    w->Gauge("process_max_fds", "Maximum number of open file descriptors.",
             static_cast<double>(rl.rlim_cur));
  }
}

}  // namespace raftkv::metrics
