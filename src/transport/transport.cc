#include "transport/transport.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <charconv>

#include "transport/codec.h"

namespace raftkv::transport {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

struct Transport::Counters {
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> dropped{0};
  std::atomic<uint64_t> received{0};
  std::atomic<uint64_t> bad_frames{0};
  std::atomic<uint64_t> connects{0};
  std::atomic<uint64_t> refused_other_cluster{0};
};

struct Transport::PeerCounters {
  std::atomic<uint64_t> sent_bytes{0};
  std::atomic<uint64_t> received_bytes{0};
  std::atomic<uint64_t> send_failures{0};
  std::atomic<uint64_t> queue_bytes{0};
};

bool SplitHostPort(const std::string& address, std::string* host, uint16_t* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) return false;
  std::string h = address.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  unsigned p = 0;
  const char* first = address.data() + colon + 1;
  const char* last = address.data() + address.size();
  auto [ptr, ec] = std::from_chars(first, last, p);
  if (ec != std::errc() || ptr != last || p == 0 || p > 65535 || h.empty()) return false;
  *host = h;
  *port = static_cast<uint16_t>(p);
  return true;
}

// ---------------------------------------------------------------------------
// Outbound connection to one peer. Everything runs on strand_.

class Transport::Peer : public std::enable_shared_from_this<Transport::Peer> {
 public:
  Peer(asio::io_context& io, const Hello& hello, std::string address, const Options& options,
       std::shared_ptr<Counters> counters, std::shared_ptr<PeerCounters> peer_counters)
      : strand_(asio::make_strand(io)),
        socket_(strand_),
        resolver_(strand_),
        timer_(strand_),
        hello_(hello),
        address_(std::move(address)),
        options_(options),
        backoff_(options.min_backoff),
        counters_(std::move(counters)),
        peer_counters_(std::move(peer_counters)) {}

  void Enqueue(std::vector<raft::Message> msgs) {
    asio::post(strand_, [self = shared_from_this(), msgs = std::move(msgs)]() mutable {
      self->DoEnqueue(msgs);
    });
  }

  void SetAddress(std::string address) {
    asio::post(strand_, [self = shared_from_this(), address = std::move(address)]() mutable {
      if (self->state_ == State::kStopped || address == self->address_) return;
      spdlog::info("peer {:x}: address {} -> {}", self->hello_.to, self->address_, address);
      self->address_ = std::move(address);
      self->Reset();
      self->state_ = State::kIdle;
      self->backoff_ = self->options_.min_backoff;
    });
  }

  void Close() {
    asio::post(strand_, [self = shared_from_this()] {
      self->Reset();
      self->state_ = State::kStopped;
    });
  }

 private:
  enum class State { kIdle, kConnecting, kConnected, kBackoff, kStopped };

  void DoEnqueue(std::vector<raft::Message>& msgs) {
    if (state_ == State::kStopped || state_ == State::kBackoff) {
      counters_->dropped += msgs.size();
      return;
    }
    for (const raft::Message& m : msgs) {
      if (pending_.size() >= options_.max_queue_bytes) {
        counters_->dropped++;
        continue;
      }
      size_t before = pending_.size();
      AppendMessageFrame(m, &pending_);
      if (pending_.size() - before - kFrameHeaderBytes > options_.max_frame_bytes) {
        // The receiver would refuse it; Raft limits should make this impossible.
        spdlog::error("peer {:x}: dropping a {} message of {} bytes (over --max-frame-bytes)",
                      hello_.to, raft::MessageTypeName(m.type), pending_.size() - before);
        pending_.resize(before);
        counters_->dropped++;
        continue;
      }
      pending_msgs_++;
    }
    if (state_ == State::kIdle) {
      Connect();
    } else {
      MaybeWrite();
    }
    NoteQueue();
  }

  void NoteQueue() {
    peer_counters_->queue_bytes.store(pending_.size() + out_.size(), std::memory_order_relaxed);
  }

  // Cancels whatever the current connection is doing; handlers of the old
  // generation then find gen_ changed and do nothing.
  void Reset() {
    gen_++;
    error_code ignored;
    socket_.close(ignored);
    resolver_.cancel();
    timer_.cancel();
    pending_.clear();
    pending_msgs_ = 0;
    NoteQueue();
  }

  void Connect() {
    state_ = State::kConnecting;
    std::string host;
    uint16_t port = 0;
    if (!SplitHostPort(address_, &host, &port)) {
      Fail("bad address '" + address_ + "'");
      return;
    }
    uint64_t gen = gen_;
    // A connect that hangs (a host that drops SYNs) must not stall the peer.
    timer_.expires_after(std::chrono::seconds(1));
    timer_.async_wait([self = shared_from_this(), gen](error_code ec) {
      if (ec || gen != self->gen_ || self->state_ != State::kConnecting) return;
      self->Fail("connect timed out");
    });
    resolver_.async_resolve(
        host, std::to_string(port),
        [self = shared_from_this(), gen](error_code ec, tcp::resolver::results_type results) {
          if (gen != self->gen_) return;
          if (ec) {
            self->Fail("resolve: " + ec.message());
            return;
          }
          asio::async_connect(self->socket_, results,
                              [self, gen](error_code ec, const tcp::endpoint&) {
                                if (gen != self->gen_) return;
                                if (ec) {
                                  self->Fail("connect: " + ec.message());
                                  return;
                                }
                                self->OnConnected();
                              });
        });
  }

  void OnConnected() {
    timer_.cancel();
    state_ = State::kConnected;
    connected_at_ = std::chrono::steady_clock::now();
    counters_->connects++;
    error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
    socket_.set_option(asio::socket_base::keep_alive(true), ignored);
    if ((failures_ > 0 && short_lived_ == 0) || !ever_connected_) {
      spdlog::info("peer {:x}: connected to {}", hello_.to, address_);
    }
    ever_connected_ = true;
    // failures_ and backoff_ are reset by Fail once this connection has
    // lasted: a peer that closes every connection at once (a node of another
    // cluster refusing our Hello) is retried with a growing back-off, not
    // every min_backoff.

    std::string hello;
    AppendHelloFrame(hello_, &hello);
    pending_.insert(0, hello);
    // The peer never writes on this connection: a completed read means it
    // closed (or reset) it, which we want to learn before the next write.
    uint64_t gen = gen_;
    socket_.async_read_some(asio::buffer(discard_), [self = shared_from_this(), gen](error_code ec,
                                                                                     size_t) {
      if (gen != self->gen_) return;
      self->Fail(ec ? "connection lost: " + ec.message() : "peer wrote on an outbound connection");
    });
    MaybeWrite();
  }

  void MaybeWrite() {
    if (state_ != State::kConnected || writing_ || pending_.empty()) return;
    writing_ = true;
    out_.swap(pending_);
    pending_.clear();
    uint64_t msgs = pending_msgs_;
    pending_msgs_ = 0;
    uint64_t gen = gen_;
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this(), gen, msgs](error_code ec, size_t n) {
                        self->writing_ = false;
                        self->peer_counters_->sent_bytes.fetch_add(n, std::memory_order_relaxed);
                        self->out_.clear();
                        if (gen != self->gen_) {
                          // A new connection may have data waiting for us.
                          self->MaybeWrite();
                          return;
                        }
                        if (ec) {
                          self->counters_->dropped += msgs;
                          self->Fail("write: " + ec.message());
                          return;
                        }
                        self->counters_->sent += msgs;
                        self->MaybeWrite();
                        self->NoteQueue();
                      });
  }

  void Fail(const std::string& why) {
    if (state_ == State::kStopped) return;
    if (state_ == State::kConnected) {
      if (std::chrono::steady_clock::now() - connected_at_ >= options_.max_backoff) {
        failures_ = 0;
        short_lived_ = 0;
        backoff_ = options_.min_backoff;
      } else {
        short_lived_++;
      }
    }
    if (failures_ == 0) {
      spdlog::info("peer {:x} ({}): {}; reconnecting with backoff", hello_.to, address_, why);
    } else {
      spdlog::debug("peer {:x} ({}): {}", hello_.to, address_, why);
    }
    failures_++;
    peer_counters_->send_failures.fetch_add(1, std::memory_order_relaxed);
    counters_->dropped += pending_msgs_;
    Reset();
    state_ = State::kBackoff;
    uint64_t gen = gen_;
    timer_.expires_after(backoff_);
    backoff_ = std::min(backoff_ * 2, options_.max_backoff);
    timer_.async_wait([self = shared_from_this(), gen](error_code ec) {
      if (ec || gen != self->gen_ || self->state_ != State::kBackoff) return;
      // Stay idle until there is something to send.
      self->state_ = State::kIdle;
      self->Connect();
    });
  }

  asio::strand<asio::io_context::executor_type> strand_;
  tcp::socket socket_;
  tcp::resolver resolver_;
  asio::steady_timer timer_;
  const Hello hello_;
  std::string address_;
  const Options options_;
  std::chrono::milliseconds backoff_;
  std::shared_ptr<Counters> counters_;
  std::shared_ptr<PeerCounters> peer_counters_;

  State state_ = State::kIdle;
  uint64_t gen_ = 0;
  std::string pending_;  // Encoded frames not yet handed to the socket.
  uint64_t pending_msgs_ = 0;
  std::string out_;  // Frames being written.
  bool writing_ = false;
  bool ever_connected_ = false;
  uint64_t failures_ = 0;     // Since the last connection that lasted.
  uint64_t short_lived_ = 0;  // Connections closed within max_backoff, in a row.
  std::chrono::steady_clock::time_point connected_at_;
  std::array<char, 64> discard_;
};

// ---------------------------------------------------------------------------
// Inbound connection from one peer. Only one operation (a read) is ever
// outstanding, so no strand is needed beyond the socket's executor.

class Transport::Inbound : public std::enable_shared_from_this<Transport::Inbound> {
 public:
  Inbound(Transport* transport, tcp::socket socket)
      : transport_(transport), socket_(std::move(socket)) {
    buf_.resize(64 << 10);
  }

  void Start() {
    error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
    remote_ = socket_.remote_endpoint(ignored);
    Read();
  }

  void Close() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      error_code ignored;
      self->socket_.close(ignored);
    });
  }

 private:
  void Read() {
    if (begin_ > 0 && begin_ == end_) begin_ = end_ = 0;
    if (end_ == buf_.size()) {
      // Make room: move the partial frame to the front, or grow for a
      // frame bigger than the buffer (bounded by max_frame_bytes).
      if (begin_ > 0) {
        std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      } else {
        buf_.resize(buf_.size() * 2);
      }
    }
    socket_.async_read_some(asio::buffer(buf_.data() + end_, buf_.size() - end_),
                            [self = shared_from_this()](error_code ec, size_t n) {
                              if (ec) {
                                self->Finish(ec == asio::error::eof ? "" : ec.message());
                                return;
                              }
                              self->end_ += n;
                              if (self->Parse()) self->Read();
                            });
  }

  // Returns false (connection closed) on a bad frame.
  bool Parse() {
    std::vector<raft::Message> batch;
    const uint64_t max_frame = transport_->options_.max_frame_bytes;
    while (end_ - begin_ >= kFrameHeaderBytes) {
      FrameHeader h;
      std::string_view avail(buf_.data() + begin_, end_ - begin_);
      HeaderCheck check = ParseFrameHeader(avail, max_frame, &h);
      if (check != HeaderCheck::kOk) return Bad(HeaderCheckName(check), &batch);
      size_t total = kFrameHeaderBytes + h.length;
      if (avail.size() < total) {
        if (buf_.size() - begin_ < total && begin_ == 0) buf_.resize(total);
        break;
      }
      std::string_view payload = avail.substr(kFrameHeaderBytes, h.length);
      if (!VerifyPayload(h, payload)) return Bad("checksum mismatch", &batch);
      begin_ += total;
      if (peer_) peer_->received_bytes.fetch_add(total, std::memory_order_relaxed);
      if (h.type == FrameType::kHello) {
        if (hello_done_) return Bad("second hello", &batch);
        if (!DecodeHello(payload, h.version, &hello_)) return Bad("malformed hello", &batch);
        if (hello_.to != raft::kNoNode && hello_.to != transport_->self_) {
          return Bad("hello for another node", &batch);
        }
        if (hello_.cluster_id != transport_->cluster_id_) return RefuseOtherCluster();
        hello_done_ = true;
        transport_->Learn(hello_.from, hello_.address);
        {
          std::lock_guard lock(transport_->mu_);
          peer_ = transport_->PeerCountersFor(hello_.from);
        }
        peer_->received_bytes.fetch_add(total, std::memory_order_relaxed);
        continue;
      }
      if (!hello_done_) return Bad("message before hello", &batch);
      raft::Message m;
      if (!DecodeMessage(payload, &m)) return Bad("malformed message", &batch);
      if (m.from != hello_.from || m.to != transport_->self_) {
        return Bad("message from/to does not match the connection", &batch);
      }
      batch.push_back(std::move(m));
    }
    Deliver(&batch);
    return true;
  }

  void Deliver(std::vector<raft::Message>* batch) {
    if (batch->empty()) return;
    transport_->counters_->received += batch->size();
    transport_->deliver_(std::move(*batch));
  }

  bool Bad(const char* why, std::vector<raft::Message>* batch) {
    // Messages before the bad frame were intact: keep them.
    Deliver(batch);
    transport_->counters_->bad_frames++;
    spdlog::warn("inbound peer connection from {}: {}; closing it", remote_.address().to_string(),
                 why);
    Finish("bad frame");
    return false;
  }

  // A node of another cluster (a misplaced data directory, an address
  // reused, a join sent to the wrong cluster) must not reach Raft: its votes
  // and entries belong to another log. Nothing came before its Hello.
  bool RefuseOtherCluster() {
    uint64_t n = ++transport_->counters_->refused_other_cluster;
    spdlog::log(
        transport_->LogRefusalLoudly(hello_.from, hello_.cluster_id) ? spdlog::level::warn
                                                                     : spdlog::level::debug,
        "refusing peer connection from {} (node {:x}, advertising {}): it belongs to cluster {}, "
        "this node to cluster {} ({} refused so far)",
        remote_.address().to_string() + ":" + std::to_string(remote_.port()), hello_.from,
        hello_.address, hello_.cluster_id, transport_->cluster_id_, n);
    Finish("another cluster");
    return false;
  }

  void Finish(const std::string& why) {
    if (!why.empty() && hello_done_) {
      spdlog::debug("inbound connection from peer {:x} closed: {}", hello_.from, why);
    }
    error_code ignored;
    socket_.close(ignored);
    std::lock_guard lock(transport_->mu_);
    transport_->inbound_.erase(shared_from_this());
  }

  Transport* transport_;
  tcp::socket socket_;
  tcp::endpoint remote_;
  std::vector<char> buf_;
  size_t begin_ = 0, end_ = 0;
  bool hello_done_ = false;
  std::shared_ptr<PeerCounters> peer_;  // Once the hello named the peer.
  Hello hello_;
};

// ---------------------------------------------------------------------------

Transport::Transport(asio::io_context& io, raft::NodeId self, uint64_t cluster_id,
                     std::string self_address, Options options, Deliver deliver)
    : io_(io),
      self_(self),
      cluster_id_(cluster_id),
      self_address_(std::move(self_address)),
      options_(options),
      deliver_(std::move(deliver)),
      counters_(std::make_shared<Counters>()),
      // A strand: accept handlers and Stop's close never run concurrently.
      acceptor_(asio::make_strand(io)) {}

Transport::~Transport() { Stop(); }

raft::Status Listen(asio::io_context& io, tcp::acceptor* acceptor, const std::string& address) {
  std::string host;
  uint16_t port = 0;
  if (!SplitHostPort(address, &host, &port)) {
    return raft::Status(raft::Code::kInvalidArgument, "bad address '" + address + "'");
  }
  error_code ec;
  tcp::resolver resolver(io);
  auto results = resolver.resolve(host, std::to_string(port), ec);
  if (ec || results.empty()) {
    return raft::Status(raft::Code::kIoError, "resolve " + address + ": " + ec.message());
  }
  tcp::endpoint ep = results.begin()->endpoint();
  acceptor->open(ep.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(ep, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return raft::Status(raft::Code::kIoError, "listen on " + address + ": " + ec.message());
  return raft::Status::Ok();
}

raft::Status Transport::Listen(const std::string& address) {
  raft::Status s = transport::Listen(io_, &acceptor_, address);
  if (!s.ok()) return s;
  Accept();
  return raft::Status::Ok();
}

void Transport::Accept() {
  acceptor_.async_accept(asio::make_strand(io_), [this](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    {
      std::lock_guard lock(mu_);
      if (stopped_) return;
    }
    if (ec) {
      spdlog::warn("peer listener: accept: {}", ec.message());
      // Out of descriptors and the like: try again shortly rather than spin.
      auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
      timer->async_wait([this, timer](error_code) { Accept(); });
      return;
    }
    auto in = std::make_shared<Inbound>(this, std::move(socket));
    {
      std::lock_guard lock(mu_);
      inbound_.insert(in);
    }
    in->Start();
    Accept();
  });
}

void Transport::Stop() {
  std::map<raft::NodeId, std::shared_ptr<Peer>> peers;
  std::set<std::shared_ptr<Inbound>> inbound;
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    peers.swap(peers_);
    inbound.swap(inbound_);
  }
  asio::post(acceptor_.get_executor(), [this] {
    error_code ignored;
    acceptor_.close(ignored);
  });
  for (auto& [id, p] : peers) p->Close();
  for (auto& in : inbound) in->Close();
}

void Transport::SetPeers(const std::map<raft::NodeId, std::string>& addresses) {
  std::lock_guard lock(mu_);
  configured_ = addresses;
  configured_.erase(self_);
  for (auto& [id, peer] : peers_) {
    auto it = configured_.find(id);
    if (it != configured_.end()) peer->SetAddress(it->second);
  }
}

void Transport::Learn(raft::NodeId id, const std::string& address) {
  std::lock_guard lock(mu_);
  if (id == self_ || address.empty()) return;
  // Bounded: only peers that dial us with a valid Hello are learned, but a
  // confused network could still present many ids.
  if (learned_.size() >= 1024 && learned_.count(id) == 0) learned_.clear();
  learned_[id] = address;
  // The membership's address wins; a learned one only fills a gap.
  if (configured_.count(id) == 0) {
    auto it = peers_.find(id);
    if (it != peers_.end()) it->second->SetAddress(address);
  }
}

bool Transport::LogRefusalLoudly(raft::NodeId from, uint64_t cluster_id) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  // Bounded like learned_: a confused network could present many ids.
  if (refusals_logged_.size() >= 1024) refusals_logged_.clear();
  auto [it, first] = refusals_logged_.try_emplace({from, cluster_id}, now);
  if (first) return true;
  if (now - it->second < std::chrono::seconds(60)) return false;
  it->second = now;
  return true;
}

std::shared_ptr<Transport::Peer> Transport::PeerFor(raft::NodeId id) {
  // mu_ held by the caller.
  auto it = peers_.find(id);
  if (it != peers_.end()) return it->second;
  std::string address;
  if (auto c = configured_.find(id); c != configured_.end()) {
    address = c->second;
  } else if (auto l = learned_.find(id); l != learned_.end()) {
    address = l->second;
  } else {
    return nullptr;
  }
  Hello hello{self_, id, self_address_, cluster_id_};
  auto peer = std::make_shared<Peer>(io_, hello, std::move(address), options_, counters_,
                                     PeerCountersFor(id));
  peers_.emplace(id, peer);
  return peer;
}

void Transport::Send(std::vector<raft::Message> msgs) {
  if (msgs.empty()) return;
  // Group by destination, keeping each destination's order.
  std::map<raft::NodeId, std::vector<raft::Message>> by_peer;
  for (raft::Message& m : msgs) by_peer[m.to].push_back(std::move(m));
  std::lock_guard lock(mu_);
  if (stopped_) return;
  for (auto& [to, batch] : by_peer) {
    std::shared_ptr<Peer> peer = to == self_ ? nullptr : PeerFor(to);
    if (!peer) {
      counters_->dropped += batch.size();
      continue;
    }
    peer->Enqueue(std::move(batch));
  }
}

std::shared_ptr<Transport::PeerCounters> Transport::PeerCountersFor(raft::NodeId id) {
  auto& c = peer_counters_[id];
  if (!c) c = std::make_shared<PeerCounters>();
  return c;
}

std::vector<PeerStats> Transport::peer_stats() const {
  std::lock_guard lock(mu_);
  std::vector<PeerStats> out;
  for (const auto& [id, c] : peer_counters_) {
    out.push_back(PeerStats{id, c->sent_bytes.load(), c->received_bytes.load(),
                            c->send_failures.load(), c->queue_bytes.load()});
  }
  return out;
}

Stats Transport::stats() const {
  Stats s;
  s.sent_msgs = counters_->sent;
  s.dropped_msgs = counters_->dropped;
  s.received_msgs = counters_->received;
  s.bad_frames = counters_->bad_frames;
  s.connects = counters_->connects;
  s.refused_other_cluster = counters_->refused_other_cluster;
  return s;
}

}  // namespace raftkv::transport
