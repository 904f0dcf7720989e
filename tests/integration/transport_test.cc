// Unit tests of the peer transport over real sockets on 127.0.0.1: the
// handshake's cluster id check (docs/wire-format.md section 4).
#include "transport/transport.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <functional>
#include <thread>

#include "wait.h"

namespace raftkv::transport {
namespace {

namespace asio = boost::asio;
using itest::WaitFor;
using std::chrono::milliseconds;

// A port on 127.0.0.1 that the kernel just handed out and nothing holds now.
std::string FreeAddress() {
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return "127.0.0.1:" + std::to_string(a.local_endpoint().port());
}

// Two transports, node 1 (cluster `from_cluster`) dialing node 2 (cluster
// `to_cluster`), on one io thread.
class Pair {
 public:
  Pair(uint64_t from_cluster, uint64_t to_cluster)
      : to_address_(FreeAddress()),
        from_(io_, 1, from_cluster, FreeAddress(), Options{}, [](std::vector<raft::Message>) {}),
        to_(io_, 2, to_cluster, to_address_, Options{},
            [this](std::vector<raft::Message> msgs) { delivered_ += msgs.size(); }) {
    EXPECT_TRUE(to_.Listen(to_address_).ok());
    from_.SetPeers({{2, to_address_}});
    thread_ = std::thread([this] {
      auto work = asio::make_work_guard(io_);
      io_.run();
    });
  }
  ~Pair() {
    from_.Stop();
    to_.Stop();
    io_.stop();
    thread_.join();
  }

  void SendHeartbeat() {
    raft::Message m;
    m.type = raft::MessageType::kHeartbeat;
    m.from = 1;
    m.to = 2;
    m.term = 1;
    from_.Send({m});
  }

  Transport& to() { return to_; }
  uint64_t delivered() const { return delivered_; }

 private:
  asio::io_context io_;
  std::string to_address_;
  Transport from_;
  Transport to_;
  std::atomic<uint64_t> delivered_{0};
  std::thread thread_;
};

void ExpectRefused(uint64_t from_cluster, uint64_t to_cluster) {
  Pair p(from_cluster, to_cluster);
  p.SendHeartbeat();
  EXPECT_TRUE(
      WaitFor([&] { return p.to().stats().refused_other_cluster >= 1; }, milliseconds(5000)))
      << "cluster " << from_cluster << " -> " << to_cluster;
  // The sender reconnects with back-off and is refused again; none of its
  // messages is ever delivered.
  p.SendHeartbeat();
  EXPECT_TRUE(
      WaitFor([&] { return p.to().stats().refused_other_cluster >= 2; }, milliseconds(5000)));
  EXPECT_EQ(p.delivered(), 0u);
  EXPECT_EQ(p.to().stats().bad_frames, 0u);
}

void ExpectDelivered(uint64_t cluster) {
  Pair p(cluster, cluster);
  // The first message may race the connection: send until one arrives.
  EXPECT_TRUE(WaitFor(
      [&] {
        p.SendHeartbeat();
        return p.delivered() >= 1;
      },
      milliseconds(5000)))
      << "cluster " << cluster;
  EXPECT_EQ(p.to().stats().refused_other_cluster, 0u);
}

TEST(TransportTest, PeerOfAnotherClusterIsRefused) { ExpectRefused(0x1111, 0x2222); }

TEST(TransportTest, ClusterWithoutIdAndClusterWithIdRefuseEachOther) {
  ExpectRefused(0, 0x2222);
  ExpectRefused(0x2222, 0);
}

TEST(TransportTest, RefusedPeerReconnectsWithGrowingBackoff) {
  // A refused connection was established, then closed at once: that must
  // not reset the sender's back-off (20, 40, 80, 160 ms ... up to 1 s), or
  // it would redial every 20 ms for ever.
  Pair p(0x1111, 0x2222);
  p.SendHeartbeat();
  ASSERT_TRUE(
      WaitFor([&] { return p.to().stats().refused_other_cluster >= 1; }, milliseconds(5000)));
  auto first = std::chrono::steady_clock::now();
  ASSERT_TRUE(
      WaitFor([&] { return p.to().stats().refused_other_cluster >= 5; }, milliseconds(5000)));
  // Four waits of at least 20+40+80+160 ms; `first` may be seen a poll
  // late. Without the growth they take about 4 x 20 ms.
  EXPECT_GE(std::chrono::steady_clock::now() - first, milliseconds(250));
}

TEST(TransportTest, PeerOfTheSameClusterIsDelivered) {
  ExpectDelivered(0x2222);
  // Two nodes of a cluster without an id (an upgraded earlier cluster).
  ExpectDelivered(0);
}

}  // namespace
}  // namespace raftkv::transport
