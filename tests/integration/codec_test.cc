// Unit tests of the peer transport's frames and message encoding.
#include "transport/codec.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include "kv/encoding.h"
#include "transport/transport.h"

namespace raftkv::transport {
namespace {

raft::Message FullMessage() {
  raft::Message m;
  m.type = raft::MessageType::kSnap;
  m.from = 0x1111222233334444ULL;
  m.to = 5;
  m.term = 6;
  m.log_term = 7;
  m.index = 8;
  m.commit = 9;
  m.reject = true;
  m.reject_hint = 10;
  m.read_round = 11;
  m.force = true;
  m.context = std::string("ctx\0x", 5);
  m.snap_meta.index = 12;
  m.snap_meta.term = 13;
  m.snap_meta.conf.members = {raft::Member{1, raft::MemberRole::kVoter, false, "{\"id\":\"a\"}"},
                              raft::Member{2, raft::MemberRole::kLearner, true, ""}};
  m.snap_offset = 14;
  m.snap_data = std::string(1000, 's');
  m.snap_done = true;
  m.entries = {raft::Entry{3, 15, raft::EntryType::kNormal, "data"},
               raft::Entry{3, 16, raft::EntryType::kConfChange, std::string(3, '\0')}};
  return m;
}

void ExpectSame(const raft::Message& a, const raft::Message& b) {
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.from, b.from);
  EXPECT_EQ(a.to, b.to);
  EXPECT_EQ(a.term, b.term);
  EXPECT_EQ(a.log_term, b.log_term);
  EXPECT_EQ(a.index, b.index);
  EXPECT_EQ(a.commit, b.commit);
  EXPECT_EQ(a.reject, b.reject);
  EXPECT_EQ(a.reject_hint, b.reject_hint);
  EXPECT_EQ(a.read_round, b.read_round);
  EXPECT_EQ(a.force, b.force);
  EXPECT_EQ(a.context, b.context);
  EXPECT_EQ(a.snap_meta, b.snap_meta);
  EXPECT_EQ(a.snap_offset, b.snap_offset);
  EXPECT_EQ(a.snap_data, b.snap_data);
  EXPECT_EQ(a.snap_done, b.snap_done);
  EXPECT_EQ(a.entries, b.entries);
}

TEST(CodecTest, EveryMessageFieldRoundTrips) {
  raft::Message m = FullMessage();
  std::string payload;
  EncodeMessage(m, &payload);
  raft::Message out;
  ASSERT_TRUE(DecodeMessage(payload, &out));
  ExpectSame(m, out);
  // And every message type.
  for (int t = 0; t <= static_cast<int>(raft::MessageType::kReadIndexResp); t++) {
    raft::Message small;
    small.type = static_cast<raft::MessageType>(t);
    small.term = t;
    payload.clear();
    EncodeMessage(small, &payload);
    ASSERT_TRUE(DecodeMessage(payload, &out)) << t;
    ExpectSame(small, out);
  }
}

TEST(CodecTest, TruncatedOrPaddedMessagesAreRejected) {
  std::string payload;
  EncodeMessage(FullMessage(), &payload);
  raft::Message out;
  for (size_t n = 0; n < payload.size(); n += 7) {
    EXPECT_FALSE(DecodeMessage(payload.substr(0, n), &out)) << n;
  }
  EXPECT_FALSE(DecodeMessage(payload + "x", &out));
  std::string bad = payload;
  bad[0] = 99;  // Unknown type.
  EXPECT_FALSE(DecodeMessage(bad, &out));
  bad = payload;
  bad[1] = static_cast<char>(0x80);  // Unknown flag.
  EXPECT_FALSE(DecodeMessage(bad, &out));
}

TEST(CodecTest, HugeCountsDoNotAllocate) {
  raft::Message m;
  std::string payload;
  EncodeMessage(m, &payload);
  // The entry count is the last u32: claim four billion entries.
  for (size_t i = payload.size() - 4; i < payload.size(); i++) payload[i] = '\xff';
  raft::Message out;
  EXPECT_FALSE(DecodeMessage(payload, &out));
}

TEST(CodecTest, FramesCarryVersionTypeLengthAndChecksum) {
  std::string frames;
  AppendHelloFrame(Hello{1, 2, "127.0.0.1:7001"}, &frames);
  size_t hello_len = frames.size();
  AppendMessageFrame(FullMessage(), &frames);
  FrameHeader h;
  ASSERT_EQ(ParseFrameHeader(frames, 1 << 20, &h), HeaderCheck::kOk);
  EXPECT_EQ(h.type, FrameType::kHello);
  EXPECT_EQ(h.length + kFrameHeaderBytes, hello_len);
  std::string_view payload = std::string_view(frames).substr(kFrameHeaderBytes, h.length);
  EXPECT_TRUE(VerifyPayload(h, payload));
  Hello hello;
  ASSERT_TRUE(DecodeHello(payload, h.version, &hello));
  EXPECT_EQ(hello, (Hello{1, 2, "127.0.0.1:7001"}));

  std::string_view second = std::string_view(frames).substr(hello_len);
  ASSERT_EQ(ParseFrameHeader(second, 1 << 20, &h), HeaderCheck::kOk);
  EXPECT_EQ(h.type, FrameType::kMessage);
  payload = second.substr(kFrameHeaderBytes, h.length);
  EXPECT_TRUE(VerifyPayload(h, payload));
  // A flipped payload bit fails the checksum; so does a changed type.
  std::string flipped(payload);
  flipped[5] ^= 1;
  EXPECT_FALSE(VerifyPayload(h, flipped));
  FrameHeader as_hello = h;
  as_hello.type = FrameType::kHello;
  EXPECT_FALSE(VerifyPayload(as_hello, payload));
  // Header checks.
  EXPECT_EQ(ParseFrameHeader(second, 100, &h), HeaderCheck::kTooLarge);
  std::string bad(second.substr(0, kFrameHeaderBytes));
  bad[4] = 2;
  EXPECT_EQ(ParseFrameHeader(bad, 1 << 20, &h), HeaderCheck::kBadVersion);
  bad = std::string(second.substr(0, kFrameHeaderBytes));
  bad[5] = 3;
  EXPECT_EQ(ParseFrameHeader(bad, 1 << 20, &h), HeaderCheck::kBadType);
  bad = std::string(second.substr(0, kFrameHeaderBytes));
  bad[6] = 1;
  EXPECT_EQ(ParseFrameHeader(bad, 1 << 20, &h), HeaderCheck::kBadReserved);
}

// Decodes the one Hello frame in `frame`, checking its header.
Hello DecodeHelloFrame(std::string_view frame, uint8_t want_version) {
  FrameHeader h;
  EXPECT_EQ(ParseFrameHeader(frame, 1 << 20, &h), HeaderCheck::kOk);
  EXPECT_EQ(h.type, FrameType::kHello);
  EXPECT_EQ(h.version, want_version);
  EXPECT_EQ(h.length + kFrameHeaderBytes, frame.size());
  std::string_view payload = frame.substr(kFrameHeaderBytes);
  EXPECT_TRUE(VerifyPayload(h, payload));
  Hello out;
  EXPECT_TRUE(DecodeHello(payload, h.version, &out));
  return out;
}

TEST(CodecTest, HelloWithClusterIdRoundTripsAsVersion2) {
  const Hello hello{1, 2, "127.0.0.1:7001", 0xfedcba9876543210ULL};
  std::string frame;
  AppendHelloFrame(hello, &frame);
  EXPECT_EQ(DecodeHelloFrame(frame, kHelloWithClusterVersion), hello);
  // The id is the last 8 bytes of the payload: cut or padded, it is malformed.
  std::string_view payload = std::string_view(frame).substr(kFrameHeaderBytes);
  Hello out;
  EXPECT_FALSE(DecodeHello(payload.substr(0, payload.size() - 1), 2, &out));
  EXPECT_FALSE(DecodeHello(std::string(payload) + "x", 2, &out));
  // A version 2 Hello exists to carry an id: zero there is malformed.
  std::string zero(payload);
  for (size_t i = zero.size() - 8; i < zero.size(); i++) zero[i] = 0;
  EXPECT_FALSE(DecodeHello(zero, 2, &out));
  EXPECT_FALSE(DecodeHello(payload, 3, &out));
}

TEST(CodecTest, HelloWithoutClusterIdIsTheEarlierReleasesBytes) {
  // The frame the release before cluster ids sends, written out by hand:
  // version 1, type 1, payload from, to, address.
  std::string payload;
  kv::PutU64(&payload, 1);
  kv::PutU64(&payload, 2);
  kv::PutBytes(&payload, "127.0.0.1:7001");
  std::string old_frame;
  kv::PutU32(&old_frame, static_cast<uint32_t>(payload.size()));
  kv::PutU8(&old_frame, 1);
  kv::PutU8(&old_frame, 1);
  kv::PutU16(&old_frame, 0);
  kv::PutU64(&old_frame, XXH3_64bits_withSeed(payload.data(), payload.size(), 1));
  old_frame += payload;
  // It decodes as a Hello from a cluster without an id...
  EXPECT_EQ(DecodeHelloFrame(old_frame, kFrameVersion), (Hello{1, 2, "127.0.0.1:7001", 0}));
  // ...and a node without an id still sends exactly it.
  std::string frame;
  AppendHelloFrame(Hello{1, 2, "127.0.0.1:7001", 0}, &frame);
  EXPECT_EQ(frame, old_frame);
  // Version 2 is for Hellos only.
  std::string msg;
  AppendMessageFrame(FullMessage(), &msg);
  msg[4] = static_cast<char>(kHelloWithClusterVersion);
  FrameHeader h;
  EXPECT_EQ(ParseFrameHeader(msg, 1 << 20, &h), HeaderCheck::kBadVersion);
}

TEST(CodecTest, SplitHostPort) {
  std::string host;
  uint16_t port = 0;
  EXPECT_TRUE(SplitHostPort("127.0.0.1:7001", &host, &port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 7001);
  EXPECT_TRUE(SplitHostPort("[::1]:80", &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_TRUE(SplitHostPort("node1:4001", &host, &port));
  for (const char* bad : {"", "nocolon", ":80", "h:", "h:0", "h:65536", "h:12x"}) {
    EXPECT_FALSE(SplitHostPort(bad, &host, &port)) << bad;
  }
}

}  // namespace
}  // namespace raftkv::transport
