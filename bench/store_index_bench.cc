// Ordered-index benchmark for kv::Store (issue 11): which container holds the
// keys so that point lookups stay as fast as today's hash map and a prefix
// range of 100 keys on 1M keys costs microseconds.
//
//   store_index_bench [--keys=N] [benchmark flags]
//
// Candidates, each holding N keys of 16 bytes with 100-byte values (the
// bench's load) inserted in random order:
//   hash        today's boost::unordered_flat_map<string, Record>: no order,
//               so a range scans every key and sorts the matches;
//   hash+rb     one heap node per key, found through a
//               boost::unordered_flat_set of node pointers and ordered by a
//               Boost.Intrusive red-black tree whose hook lives in the node;
//   std::map    std::map<string, Record>: ordered only, every lookup walks
//               the tree.
// Reported per candidate: Get (random hit, copies the value), Update (an
// existing key's value), InsertErase (a new key in and out), Range100 (the
// 100 keys under one prefix, copied out in order) and, as counters, the heap
// bytes per key from jemalloc's stats.allocated.
#include <benchmark/benchmark.h>
#include <jemalloc/jemalloc.h>
#include <xxhash.h>

#include <algorithm>
#include <boost/intrusive/set.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <boost/unordered/unordered_flat_set.hpp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace {

size_t g_keys = 1000000;

struct Meta {
  uint64_t create_revision = 0, mod_revision = 0, version = 0, lease = 0;
};
struct Record {
  std::string value;
  Meta meta;
};

// Keys "p%07u/%07u": the first number is i / 100, so every prefix "p%07u/"
// holds exactly 100 keys.
std::string KeyOf(size_t i) {
  char b[32];
  std::snprintf(b, sizeof b, "p%07zu/%07zu", i / 100, i % 100);
  return b;
}
std::string PrefixOf(size_t group) {
  char b[32];
  std::snprintf(b, sizeof b, "p%07zu/", group);
  return b;
}

struct Hash {
  using is_transparent = void;
  using is_avalanching = void;
  size_t operator()(std::string_view s) const { return XXH3_64bits(s.data(), s.size()); }
};

uint64_t Allocated() {
  uint64_t epoch = 1;
  size_t sz = sizeof epoch;
  mallctl("epoch", &epoch, &sz, &epoch, sz);
  size_t allocated = 0;
  sz = sizeof allocated;
  mallctl("stats.allocated", &allocated, &sz, nullptr, 0);
  return allocated;
}

// --- Candidates -------------------------------------------------------------

// A map from key to Record: the hash map (no order: a range scans every key
// and sorts the matches) or std::map (ordered).
template <typename Map>
class MapCandidate {
 public:
  void Put(std::string_view k, std::string_view v) {
    auto it = map_.find(k);
    if (it == map_.end()) it = map_.emplace(std::string(k), Record{}).first;
    it->second.value.assign(v);
    it->second.meta.version++;
  }
  bool Get(std::string_view k, std::string* v) const {
    auto it = map_.find(k);
    if (it == map_.end()) return false;
    *v = it->second.value;
    return true;
  }
  void Erase(std::string_view k) {
    auto it = map_.find(k);
    if (it != map_.end()) map_.erase(it);
  }
  size_t Range(std::string_view prefix, size_t limit,
               std::vector<std::pair<std::string, std::string>>* out) const {
    out->clear();
    if constexpr (kOrdered) {
      for (auto it = map_.lower_bound(prefix); it != map_.end() && out->size() < limit; ++it) {
        if (!std::string_view(it->first).starts_with(prefix)) break;
        out->emplace_back(it->first, it->second.value);
      }
    } else {
      std::vector<const typename Map::value_type*> hits;
      for (const auto& kv : map_) {
        if (std::string_view(kv.first).starts_with(prefix)) hits.push_back(&kv);
      }
      std::sort(hits.begin(), hits.end(), [](auto* a, auto* b) { return a->first < b->first; });
      for (size_t i = 0; i < hits.size() && i < limit; i++) {
        out->emplace_back(hits[i]->first, hits[i]->second.value);
      }
    }
    return out->size();
  }

 private:
  static constexpr bool kOrdered = std::is_same_v<Map, std::map<std::string, Record, std::less<>>>;
  Map map_;
};

using HashOnly =
    MapCandidate<boost::unordered_flat_map<std::string, Record, Hash, std::equal_to<>>>;
using TreeOnly = MapCandidate<std::map<std::string, Record, std::less<>>>;

class HashPlusTree {
 public:
  struct Node : boost::intrusive::set_base_hook<boost::intrusive::optimize_size<true>> {
    std::string key;
    Record rec;
  };
  struct KeyOfNode {
    using type = std::string_view;
    std::string_view operator()(const Node& n) const { return n.key; }
  };
  struct NodeHash {
    using is_transparent = void;
    using is_avalanching = void;
    size_t operator()(const Node* n) const { return Hash{}(n->key); }
    size_t operator()(std::string_view s) const { return Hash{}(s); }
  };
  struct NodeEq {
    using is_transparent = void;
    bool operator()(const Node* a, const Node* b) const { return a->key == b->key; }
    bool operator()(std::string_view a, const Node* b) const { return a == b->key; }
    bool operator()(const Node* a, std::string_view b) const { return a->key == b; }
  };
  using Tree = boost::intrusive::set<Node, boost::intrusive::key_of_value<KeyOfNode>>;

  ~HashPlusTree() {
    tree_.clear();
    for (Node* n : set_) delete n;
  }
  void Put(std::string_view k, std::string_view v) {
    auto it = set_.find(k);
    Node* n;
    if (it == set_.end()) {
      n = new Node;
      n->key.assign(k);
      set_.insert(n);
      tree_.insert(*n);
    } else {
      n = *it;
    }
    n->rec.value.assign(v);
    n->rec.meta.version++;
  }
  bool Get(std::string_view k, std::string* v) const {
    auto it = set_.find(k);
    if (it == set_.end()) return false;
    *v = (*it)->rec.value;
    return true;
  }
  void Erase(std::string_view k) {
    auto it = set_.find(k);
    if (it == set_.end()) return;
    Node* n = *it;
    set_.erase(it);
    tree_.erase(tree_.iterator_to(*n));
    delete n;
  }
  size_t Range(std::string_view prefix, size_t limit,
               std::vector<std::pair<std::string, std::string>>* out) const {
    out->clear();
    for (auto it = tree_.lower_bound(prefix); it != tree_.end() && out->size() < limit; ++it) {
      if (!std::string_view(it->key).starts_with(prefix)) break;
      out->emplace_back(it->key, it->rec.value);
    }
    return out->size();
  }

 private:
  boost::unordered_flat_set<Node*, NodeHash, NodeEq> set_;
  Tree tree_;
};

// One loaded container per candidate, built on first use and kept for every
// benchmark of that candidate (loading 1M keys takes seconds).
template <typename C>
struct Loaded {
  std::unique_ptr<C> c;
  double bytes_per_key = 0;
  static Loaded& Get() {
    static Loaded l;
    if (!l.c) {
      std::vector<size_t> order(g_keys);
      for (size_t i = 0; i < g_keys; i++) order[i] = i;
      std::shuffle(order.begin(), order.end(), std::mt19937_64(1));
      std::string value(100, 'v');
      uint64_t before = Allocated();
      l.c = std::make_unique<C>();
      for (size_t i : order) l.c->Put(KeyOf(i), value);
      l.bytes_per_key = double(Allocated() - before) / double(g_keys);
    }
    return l;
  }
};

template <typename C>
void BM_Get(benchmark::State& state) {
  auto& l = Loaded<C>::Get();
  std::vector<std::string> keys;
  std::mt19937_64 rng(2);
  for (int i = 0; i < 4096; i++) keys.push_back(KeyOf(rng() % g_keys));
  std::string v;
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(l.c->Get(keys[i++ & 4095], &v));
  }
  state.counters["heap_bytes_per_key"] = l.bytes_per_key;
}

template <typename C>
void BM_Update(benchmark::State& state) {
  auto& l = Loaded<C>::Get();
  std::vector<std::string> keys;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 4096; i++) keys.push_back(KeyOf(rng() % g_keys));
  std::string value(100, 'w');
  size_t i = 0;
  for (auto _ : state) l.c->Put(keys[i++ & 4095], value);
}

template <typename C>
void BM_InsertErase(benchmark::State& state) {
  auto& l = Loaded<C>::Get();
  std::vector<std::string> keys;
  std::mt19937_64 rng(4);
  // Absent keys spread over the key space ("p.../" + a suffix past 99).
  for (int i = 0; i < 4096; i++) keys.push_back(PrefixOf(rng() % (g_keys / 100)) + "x00001");
  std::string value(100, 'n');
  size_t i = 0;
  for (auto _ : state) {
    const std::string& k = keys[i++ & 4095];
    l.c->Put(k, value);
    l.c->Erase(k);
  }
}

template <typename C>
void BM_Range100(benchmark::State& state) {
  auto& l = Loaded<C>::Get();
  std::vector<std::string> prefixes;
  std::mt19937_64 rng(5);
  for (int i = 0; i < 256; i++) prefixes.push_back(PrefixOf(rng() % (g_keys / 100)));
  std::vector<std::pair<std::string, std::string>> out;
  size_t i = 0;
  for (auto _ : state) {
    size_t n = l.c->Range(prefixes[i++ & 255], 1000, &out);
    if (n != 100) state.SkipWithError("a prefix did not hold 100 keys");
  }
}

}  // namespace

BENCHMARK(BM_Get<HashOnly>)->Name("hash/Get");
BENCHMARK(BM_Get<HashPlusTree>)->Name("hash+rb/Get");
BENCHMARK(BM_Get<TreeOnly>)->Name("std::map/Get");
BENCHMARK(BM_Update<HashOnly>)->Name("hash/Update");
BENCHMARK(BM_Update<HashPlusTree>)->Name("hash+rb/Update");
BENCHMARK(BM_Update<TreeOnly>)->Name("std::map/Update");
BENCHMARK(BM_InsertErase<HashOnly>)->Name("hash/InsertErase");
BENCHMARK(BM_InsertErase<HashPlusTree>)->Name("hash+rb/InsertErase");
BENCHMARK(BM_InsertErase<TreeOnly>)->Name("std::map/InsertErase");
BENCHMARK(BM_Range100<HashOnly>)
    ->Name("hash/Range100")
    ->Unit(benchmark::kMicrosecond)
    ->Iterations(20);
BENCHMARK(BM_Range100<HashPlusTree>)->Name("hash+rb/Range100")->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Range100<TreeOnly>)->Name("std::map/Range100")->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  std::vector<char*> rest;
  for (int i = 0; i < argc; i++) {
    if (std::strncmp(argv[i], "--keys=", 7) == 0) {
      g_keys = std::strtoull(argv[i] + 7, nullptr, 10);
      if (g_keys < 100 || g_keys % 100 != 0) {
        std::fprintf(stderr, "store_index_bench: --keys must be a positive multiple of 100\n");
        return 2;
      }
    } else {
      rest.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
