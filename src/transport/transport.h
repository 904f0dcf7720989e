// Transport: Raft messages between nodes over TCP (Boost.Asio).
//
// One persistent outbound connection per peer, opened on first use and
// reopened with exponential backoff after a failure; frames are
// length-prefixed, versioned and checksummed (docs/wire-format.md section 4).
// Each connection starts with a Hello naming the sender, its address and its
// cluster id, so that a node which does not know the membership yet (a
// joiner) can answer the leader that contacted it, and so that a node of
// another cluster is refused before any of its messages is read (the
// connection is closed, logged with both cluster ids and counted). Sending is best effort: messages
// past the per-peer queue bound, or sent while a peer is backing off, are dropped and counted (Raft
// retransmits). A bad inbound frame closes that connection and nothing else.
//
// Threads: all socket work runs on the io_context handed in (any number of
// threads; each connection is serialized by a strand). Send, SetPeers and
// Stats may be called from any thread. `deliver` is called on an io thread
// with every message decoded from one read, in arrival order.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "raft/status.h"
#include "raft/types.h"

namespace raftkv::transport {

struct Options {
  // Frames larger than this are refused by the receiver (and not sent).
  uint64_t max_frame_bytes = 16 << 20;
  // Encoded bytes waiting to be written to one peer; past it, drop.
  uint64_t max_queue_bytes = 64 << 20;
  // Reconnect backoff: doubles from min to max after each failure.
  std::chrono::milliseconds min_backoff{20};
  std::chrono::milliseconds max_backoff{1000};
};

struct Stats {
  uint64_t sent_msgs = 0;
  uint64_t dropped_msgs = 0;
  uint64_t received_msgs = 0;
  uint64_t bad_frames = 0;  // Inbound connections closed for a bad frame.
  uint64_t connects = 0;    // Outbound connections established.
  // Inbound connections closed because their Hello named another cluster.
  uint64_t refused_other_cluster = 0;
};

// Per peer, for /metrics: bytes sent to it and received from it (frames,
// hellos included), sends that failed (a connect or write error, each
// followed by a reconnect with backoff), and bytes queued for it now.
struct PeerStats {
  raft::NodeId id = raft::kNoNode;
  uint64_t sent_bytes = 0;
  uint64_t received_bytes = 0;
  uint64_t send_failures = 0;
  uint64_t queue_bytes = 0;
};

// "host:port" -> (host, port). False if malformed (no colon, empty host, or
// a port that is not 1..65535).
bool SplitHostPort(const std::string& address, std::string* host, uint16_t* port);

// Resolves "host:port" and makes `acceptor` listen on it (with
// SO_REUSEADDR). Shared by the peer transport and the HTTP server.
raft::Status Listen(boost::asio::io_context& io, boost::asio::ip::tcp::acceptor* acceptor,
                    const std::string& address);

class Transport {
 public:
  using Deliver = std::function<void(std::vector<raft::Message>)>;

  // `self_address` is advertised in Hellos (the --bind address). Only peers
  // whose Hello names `cluster_id` are accepted; 0 is a cluster without an id
  // and accepts only peers without one (docs/wire-format.md section 4).
  Transport(boost::asio::io_context& io, raft::NodeId self, uint64_t cluster_id,
            std::string self_address, Options options, Deliver deliver);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Binds and listens on `address` (synchronously, so that a taken port is
  // reported at startup), then starts accepting. Call once, before Send.
  raft::Status Listen(const std::string& address);
  // Closes the listener and every connection. Pending messages are dropped.
  void Stop();

  // Sets every peer's address (from the replicated membership). Peers not
  // named keep an address learned from their Hello, if any. A changed
  // address reconnects.
  void SetPeers(const std::map<raft::NodeId, std::string>& addresses);
  // Queues messages for their destinations (m.to).
  void Send(std::vector<raft::Message> msgs);

  Stats stats() const;
  // Every peer this node has sent to or heard from, by id.
  std::vector<PeerStats> peer_stats() const;

 private:
  class Peer;
  class Inbound;
  struct Counters;
  struct PeerCounters;

  // mu_ held by the caller.
  std::shared_ptr<PeerCounters> PeerCountersFor(raft::NodeId id);

  void Accept();
  void Learn(raft::NodeId id, const std::string& address);
  // Whether a refusal of (node, cluster) is logged as a warning: the first,
  // then at most one a minute (a refused node keeps reconnecting).
  bool LogRefusalLoudly(raft::NodeId from, uint64_t cluster_id);
  std::shared_ptr<Peer> PeerFor(raft::NodeId id);

  boost::asio::io_context& io_;
  const raft::NodeId self_;
  const uint64_t cluster_id_;
  const std::string self_address_;
  const Options options_;
  const Deliver deliver_;
  std::shared_ptr<Counters> counters_;
  boost::asio::ip::tcp::acceptor acceptor_;

  mutable std::mutex mu_;
  bool stopped_ = false;
  std::map<raft::NodeId, std::string> configured_;  // From the membership.
  std::map<raft::NodeId, std::string> learned_;     // From Hellos.
  // When a refusal of (node, cluster) was last logged as a warning.
  std::map<std::pair<raft::NodeId, uint64_t>, std::chrono::steady_clock::time_point>
      refusals_logged_;
  std::map<raft::NodeId, std::shared_ptr<Peer>> peers_;
  std::map<raft::NodeId, std::shared_ptr<PeerCounters>> peer_counters_;
  std::set<std::shared_ptr<Inbound>> inbound_;
};

}  // namespace raftkv::transport
