// Little-endian integer and length-prefixed byte helpers shared by the kv
// formats (docs/wire-format.md). Header-only; internal to src/kv and
// src/transport.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace raftkv::kv {

inline void PutU8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }

inline void PutU16(std::string* out, uint16_t v) {
  char b[2] = {static_cast<char>(v & 0xff), static_cast<char>(v >> 8)};
  out->append(b, 2);
}

inline void PutU32(std::string* out, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; i++) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(b, 4);
}

inline void PutU64(std::string* out, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; i++) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(b, 8);
}

// u32 length + bytes. Callers keep lengths under 4 GiB (limits are far lower).
inline void PutBytes(std::string* out, std::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s.data(), s.size());
}

inline uint64_t LoadLE(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v |= uint64_t(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

// Bounds-checked sequential reader. Every method returns false (and leaves
// the reader failed) when the input is too short.
class Reader {
 public:
  explicit Reader(std::string_view data) : p_(data.data()), left_(data.size()) {}

  bool U8(uint8_t* v) { return Fixed(v, 1); }
  bool U16(uint16_t* v) { return Fixed(v, 2); }
  bool U32(uint32_t* v) { return Fixed(v, 4); }
  bool U64(uint64_t* v) { return Fixed(v, 8); }
  bool Bytes(std::string_view* v) {
    uint32_t n = 0;
    if (!U32(&n) || n > left_) return Fail();
    *v = std::string_view(p_, n);
    p_ += n;
    left_ -= n;
    return true;
  }
  bool Bytes(std::string* v) {
    std::string_view s;
    if (!Bytes(&s)) return false;
    v->assign(s.data(), s.size());
    return true;
  }
  size_t left() const { return left_; }
  bool done() const { return ok_ && left_ == 0; }
  bool ok() const { return ok_; }

 private:
  template <typename T>
  bool Fixed(T* v, int bytes) {
    if (!ok_ || left_ < static_cast<size_t>(bytes)) return Fail();
    *v = static_cast<T>(LoadLE(p_, bytes));
    p_ += bytes;
    left_ -= bytes;
    return true;
  }
  bool Fail() {
    ok_ = false;
    left_ = 0;
    return false;
  }

  const char* p_;
  size_t left_;
  bool ok_ = true;
};

}  // namespace raftkv::kv
