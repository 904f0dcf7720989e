#include "kv/command.h"

#include "kv/encoding.h"

namespace raftkv::kv {

namespace {
constexpr size_t kHeaderBytes = 1 + 1 + 8 + 8 + 1;
constexpr uint8_t kPutFields = 2;
}  // namespace

std::string EncodePut(RequestId id, std::string_view key, std::string_view value) {
  std::string out;
  out.reserve(kHeaderBytes + 8 + key.size() + value.size());
  out.push_back(static_cast<char>(kCommandFormatVersion));
  out.push_back(static_cast<char>(Op::kPut));
  PutU64(&out, id.client);
  PutU64(&out, id.seq);
  out.push_back(static_cast<char>(kPutFields));
  PutBytes(&out, key);
  PutBytes(&out, value);
  return out;
}

bool DecodeCommand(std::string_view data, CommandView* out) {
  Reader r(data);
  uint8_t version = 0, op = 0, fields = 0;
  if (!r.U8(&version) || version != kCommandFormatVersion) return false;
  if (!r.U8(&op) || !r.U64(&out->id.client) || !r.U64(&out->id.seq) || !r.U8(&fields)) {
    return false;
  }
  switch (op) {
    case static_cast<uint8_t>(Op::kPut):
      out->op = Op::kPut;
      if (fields != kPutFields || !r.Bytes(&out->key) || !r.Bytes(&out->value)) return false;
      break;
    default:
      return false;
  }
  return r.done();
}

}  // namespace raftkv::kv
