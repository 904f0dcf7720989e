// Rng: a small seeded generator (SplitMix64). The core owns one, seeded from
// Config::seed, so that its choices replay exactly from the seed; it never
// touches a global generator. Its output is the same on every platform.
#pragma once

#include <cstdint>

namespace raftkv::raft {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n > 0.
  uint64_t Uniform(uint64_t n) { return Next() % n; }
  // True with probability num/den.
  bool Chance(uint64_t num, uint64_t den) { return Uniform(den) < num; }

 private:
  uint64_t state_;
};

}  // namespace raftkv::raft
