#include "server/log_store.h"

namespace raftkv::server {

void MemoryLogStore::Persist(const raft::Ready& rd, Done done) {
  if (rd.snapshot) storage_.ApplySnapshot(*rd.snapshot);
  storage_.Append(rd.entries);
  if (rd.hard_state) storage_.SetHardState(*rd.hard_state);
  done(raft::Status::Ok());
}

raft::Status MemoryLogStore::SaveSnapshot(raft::Index index, const raft::ConfState& conf,
                                          std::string data, raft::Index compact_to) {
  raft::Status s = storage_.CreateSnapshot(index, conf, std::move(data));
  if (!s.ok()) return s;
  if (compact_to > 0) return storage_.Compact(std::min(compact_to, index));
  return raft::Status::Ok();
}

}  // namespace raftkv::server
