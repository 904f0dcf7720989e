// Unit tests of the streamed snapshot checksum (src/ctl/image_checksum.h).
#include "image_checksum.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <random>

namespace raftkv::ctl {
namespace {

// An image of `n` random bytes followed by its little-endian XXH3-64.
std::string Image(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string body(n, '\0');
  for (char& c : body) c = static_cast<char>(rng());
  uint64_t sum = XXH3_64bits(body.data(), body.size());
  for (int i = 0; i < 8; i++) body.push_back(static_cast<char>(sum >> (8 * i)));
  return body;
}

TEST(ImageChecksum, MatchesTheTrailerHoweverTheBytesArrive) {
  for (size_t n : {0u, 1u, 7u, 8u, 9u, 100u, 70000u}) {
    const std::string image = Image(n, static_cast<uint32_t>(n));
    const uint64_t want = XXH3_64bits(image.data(), n);
    for (size_t piece : {1u, 3u, 8u, 9u, 16384u, 1000000u}) {
      ImageChecksum sum;
      for (size_t at = 0; at < image.size(); at += piece) {
        sum.Update(std::string_view(image).substr(at, piece));
      }
      uint64_t computed = 0, trailer = 0;
      ASSERT_TRUE(sum.Finish(&computed, &trailer)) << n << " " << piece;
      EXPECT_EQ(sum.size(), image.size());
      EXPECT_EQ(computed, want) << n << " bytes in pieces of " << piece;
      EXPECT_EQ(trailer, want) << n << " bytes in pieces of " << piece;
    }
  }
}

TEST(ImageChecksum, ADamagedByteOrTrailerNoLongerMatches) {
  std::string image = Image(5000, 7);
  image[1234] ^= 0x01;
  ImageChecksum body;
  body.Update(image);
  uint64_t computed = 0, trailer = 0;
  ASSERT_TRUE(body.Finish(&computed, &trailer));
  EXPECT_NE(computed, trailer);

  image = Image(5000, 7);
  image.back() ^= 0x80;
  ImageChecksum tail;
  tail.Update(image);
  ASSERT_TRUE(tail.Finish(&computed, &trailer));
  EXPECT_NE(computed, trailer);
}

TEST(ImageChecksum, FewerThanEightBytesIsNoImage) {
  ImageChecksum sum;
  sum.Update("1234567");
  uint64_t computed = 0, trailer = 0;
  EXPECT_FALSE(sum.Finish(&computed, &trailer));
}

TEST(Checksum, FormatsAndParsesTheHeader) {
  EXPECT_EQ(FormatChecksum(0x0123456789abcdefULL), "xxh3-64=0123456789abcdef");
  EXPECT_EQ(FormatChecksum(0), "xxh3-64=0000000000000000");
  EXPECT_EQ(ParseChecksum("xxh3-64=0123456789abcdef"), 0x0123456789abcdefULL);
  EXPECT_EQ(ParseChecksum("xxh3-64=0123456789ABCDEF"), 0x0123456789abcdefULL);
  for (const char* bad : {"", "xxh3-64=", "xxh3-64=0123456789abcde", "xxh3-64=0123456789abcdef0",
                          "crc32=01234567", "xxh3-64=0123456789abcdeg", "0123456789abcdef"}) {
    EXPECT_FALSE(ParseChecksum(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace raftkv::ctl
