// The peer transport's frames and the encoding of raft::Message
// (docs/wire-format.md section 4). Pure functions, safe on any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "raft/types.h"

namespace raftkv::transport {

// Every Message frame and a Hello without a cluster id (byte for byte what
// the release before cluster ids sends).
inline constexpr uint8_t kFrameVersion = 1;
// A Hello that carries the sender's (nonzero) cluster id.
inline constexpr uint8_t kHelloWithClusterVersion = 2;
inline constexpr size_t kFrameHeaderBytes = 16;

enum class FrameType : uint8_t { kHello = 1, kMessage = 2 };

struct Hello {
  raft::NodeId from = raft::kNoNode;
  raft::NodeId to = raft::kNoNode;  // kNoNode: the sender does not know whom it dials.
  std::string address;              // The sender's peer (--bind) address.
  // The sender's cluster id; 0: a cluster without an id (docs/wire-format.md
  // section 4, "The cluster id on the handshake").
  uint64_t cluster_id = 0;
  bool operator==(const Hello&) const = default;
};

// Appends a whole frame (header + payload) to *out. A Hello with cluster_id
// 0 is written as frame version 1, any other as version 2.
void AppendHelloFrame(const Hello& hello, std::string* out);
void AppendMessageFrame(const raft::Message& m, std::string* out);

// Payload encodings, exposed for tests.
void EncodeMessage(const raft::Message& m, std::string* out);
bool DecodeMessage(std::string_view payload, raft::Message* out);
// `version` is the frame's (FrameHeader::version): 1 decodes cluster_id as 0.
bool DecodeHello(std::string_view payload, uint8_t version, Hello* out);

struct FrameHeader {
  uint32_t length = 0;
  uint8_t version = kFrameVersion;
  FrameType type = FrameType::kMessage;
  uint64_t checksum = 0;
};

enum class HeaderCheck { kOk, kBadVersion, kBadType, kBadReserved, kTooLarge };
const char* HeaderCheckName(HeaderCheck c);

// Parses the first kFrameHeaderBytes of `bytes` (which must hold at least
// that many) and checks them against max_frame_bytes.
HeaderCheck ParseFrameHeader(std::string_view bytes, uint64_t max_frame_bytes, FrameHeader* out);
// True if `payload` matches the header's checksum.
bool VerifyPayload(const FrameHeader& header, std::string_view payload);

}  // namespace raftkv::transport
