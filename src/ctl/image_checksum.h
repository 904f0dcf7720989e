// Checking a snapshot image as it streams in (docs/wire-format.md §3): its
// last 8 bytes are the XXH3-64, little-endian, of every byte before them,
// and GET /v1/snapshot repeats that value in X-Raftkv-Checksum. Pure: no
// I/O; one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace raftkv::ctl {

// The checksum of an image fed in pieces, holding back the last 8 bytes
// seen (the trailer) so that the whole image is never in memory.
class ImageChecksum {
 public:
  ImageChecksum();
  ~ImageChecksum();
  ImageChecksum(const ImageChecksum&) = delete;
  ImageChecksum& operator=(const ImageChecksum&) = delete;

  // The next bytes of the image.
  void Update(std::string_view bytes);
  uint64_t size() const { return size_; }
  // Once every byte went through Update: the XXH3-64 of all but the last 8
  // bytes, and those 8 bytes read as a little-endian number. False (and
  // nothing set) when fewer than 8 bytes came.
  bool Finish(uint64_t* computed, uint64_t* trailer) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
  std::string tail_;  // The last bytes seen, at most 8: not hashed yet.
  uint64_t size_ = 0;
};

// "xxh3-64=<16 lower-case hex digits>", as X-Raftkv-Checksum.
std::string FormatChecksum(uint64_t sum);
// The value of an X-Raftkv-Checksum header; nullopt if it is not that form
// (upper-case hex digits are accepted).
std::optional<uint64_t> ParseChecksum(std::string_view header);

}  // namespace raftkv::ctl
