#include "image_checksum.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace raftkv::ctl {

struct ImageChecksum::State {
  State() : xxh(XXH3_createState()) {
    // Out of memory for a few hundred bytes: nothing sensible is left to do.
    if (xxh == nullptr) {
      std::fputs("raftkvctl: XXH3_createState: out of memory\n", stderr);
      std::abort();
    }
    XXH3_64bits_reset(xxh);
  }
  ~State() { XXH3_freeState(xxh); }
  XXH3_state_t* xxh;
};

ImageChecksum::ImageChecksum() : state_(std::make_unique<State>()) {}

ImageChecksum::~ImageChecksum() = default;

void ImageChecksum::Update(std::string_view bytes) {
  size_ += bytes.size();
  const size_t total = tail_.size() + bytes.size();
  if (total <= 8) {
    tail_.append(bytes);
    return;
  }
  // Everything but the last 8 bytes of tail_ + bytes is image body: hash it.
  const size_t body = total - 8;
  const size_t from_tail = std::min(body, tail_.size());
  XXH3_64bits_update(state_->xxh, tail_.data(), from_tail);
  XXH3_64bits_update(state_->xxh, bytes.data(), body - from_tail);
  std::string rest = tail_.substr(from_tail);
  rest.append(bytes.substr(body - from_tail));
  tail_ = std::move(rest);
}

bool ImageChecksum::Finish(uint64_t* computed, uint64_t* trailer) const {
  if (tail_.size() < 8) return false;
  *computed = XXH3_64bits_digest(state_->xxh);
  uint64_t t = 0;
  for (int i = 7; i >= 0; i--) t = (t << 8) | static_cast<unsigned char>(tail_[i]);
  *trailer = t;
  return true;
}

std::string FormatChecksum(uint64_t sum) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "xxh3-64=%016llx", static_cast<unsigned long long>(sum));
  return buf;
}

std::optional<uint64_t> ParseChecksum(std::string_view header) {
  constexpr std::string_view kPrefix = "xxh3-64=";
  if (!header.starts_with(kPrefix) || header.size() != kPrefix.size() + 16) return std::nullopt;
  uint64_t sum = 0;
  for (char c : header.substr(kPrefix.size())) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    sum = (sum << 4) | static_cast<uint64_t>(digit);
  }
  return sum;
}

}  // namespace raftkv::ctl
