#include "server/replica.h"

#include <boost/asio/post.hpp>
#include <future>
#include <thread>

namespace raftkv::server {

namespace asio = boost::asio;

Replica::Replica(ReplicaConfig config, LogStore* store, kv::Store* kv, SendFn send, PeersFn peers,
                 MembersFn members, asio::io_context& io, ChangeFeed* feed)
    : tick_(config.tick), ioc_(io), work_(ioc_.get_executor()), ticker_(ioc_) {
  DriverHooks hooks;
  hooks.post = [this](std::function<void()> fn) { Post(std::move(fn)); };
  hooks.send = std::move(send);
  hooks.peers = std::move(peers);
  hooks.members = std::move(members);
  hooks.now = [] { return Clock::now(); };
  hooks.feed = feed;
  driver_ = std::make_unique<Driver>(std::move(config), store, kv, std::move(hooks));
}

Replica::~Replica() { Stop(); }

raft::Status Replica::Bootstrap() { return driver_->Bootstrap(); }

void Replica::Start() {
  next_tick_ = Clock::now() + tick_;
  ArmTicker();
  driver_->Start();
  started_ = true;
}

void Replica::ArmTicker() {
  ticker_.expires_at(next_tick_);
  ticker_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopped_) return;
    driver_->Tick();
    // Fixed-rate ticks: the next deadline does not drift with handler
    // latency, but a long stall does not cause a burst of catch-up ticks.
    Clock::time_point now = Clock::now();
    next_tick_ += tick_;
    if (next_tick_ < now) next_tick_ = now + tick_;
    ArmTicker();
  });
}

void Replica::Stop() {
  if (stopped_.exchange(true)) return;
  if (started_) {
    std::promise<void> done;
    Post([this, &done] {
      ticker_.cancel();
      driver_->Shutdown([&done] { done.set_value(); });
    });
    done.get_future().wait();
    work_.reset();
  }
}

void Replica::Post(std::function<void()> fn) { asio::post(ioc_, std::move(fn)); }

// The request paths post their lambdas as they are (no std::function
// around them: one allocation less per request). A request that arrives
// once Stop() has begun is refused before it reaches the driver: it was
// never proposed, so it is "shutting down", not "outcome unknown".
void Replica::Receive(std::vector<raft::Message> msgs) {
  asio::post(ioc_, [this, msgs = std::move(msgs)]() mutable { driver_->Receive(std::move(msgs)); });
}

void Replica::Propose(std::string command, kv::RequestId id, Callback done) {
  asio::post(ioc_, [this, command = std::move(command), id, done = std::move(done)]() mutable {
    if (stopped_) return done(Outcome{Code::kShuttingDown, "the node is shutting down"});
    driver_->Propose(std::move(command), id, std::move(done));
  });
}

void Replica::ReadBarrier(Callback done) {
  asio::post(ioc_, [this, done = std::move(done)]() mutable {
    if (stopped_) return done(Outcome{Code::kShuttingDown, "the node is shutting down"});
    driver_->ReadBarrier(std::move(done));
  });
}

void Replica::AddMember(MemberInfo member, bool promote, Callback done) {
  Post([this, member = std::move(member), promote, done = std::move(done)]() mutable {
    driver_->AddMember(std::move(member), promote, std::move(done));
  });
}

void Replica::PromoteMember(raft::NodeId id, Callback done) {
  Post([this, id, done = std::move(done)]() mutable {
    driver_->PromoteMember(id, std::move(done));
  });
}

void Replica::RemoveMember(raft::NodeId id, bool force, Callback done) {
  Post([this, id, force, done = std::move(done)]() mutable {
    driver_->RemoveMember(id, force, std::move(done));
  });
}

void Replica::TransferLeadership(raft::NodeId to, Callback done) {
  Post([this, to, done = std::move(done)]() mutable {
    if (to == raft::kNoNode) {
      if (!view()->IsLeader()) return done(Outcome{Code::kNotLeader, "not the leader"});
      if (!driver_->TransferLeadershipAway()) {
        return done(Conflict("no_candidate", "no other voter is active and caught up enough"));
      }
      return done(Outcome{Code::kOk, ""});
    }
    if (!view()->IsLeader()) return done(Outcome{Code::kNotLeader, "not the leader"});
    if (!driver_->node().conf().IsVoter(to)) {
      return done(Conflict("not_voter", "the node is not a voter"));
    }
    if (!driver_->PeerActive(to)) {
      return done(Conflict("not_active",
                           "the node has not answered the leader within an election timeout"));
    }
    raft::Status s = driver_->TransferLeadership(to);
    if (s.ok()) return done(Outcome{Code::kOk, ""});
    if (s.code() == raft::Code::kNotLeader) return done(Outcome{Code::kNotLeader, s.message()});
    if (s.code() == raft::Code::kInvalidArgument) {
      return done(Conflict("not_voter", s.message()));
    }
    done(Outcome{Code::kUnavailable, s.ToString()});
  });
}

void Replica::TransferLeadershipAway(std::chrono::milliseconds wait) {
  if (stopped_ || !started_) return;
  std::promise<bool> started;
  Post([this, &started] { started.set_value(driver_->TransferLeadershipAway()); });
  if (!started.get_future().get()) return;
  auto deadline = Clock::now() + wait;
  while (Clock::now() < deadline && view()->IsLeader()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void Replica::GetStatus(std::function<void(StatusReport)> done) {
  Post([this, done = std::move(done)] {
    StatusReport r = driver_->Status();
    r.admitted = admitted_;
    done(std::move(r));
  });
}

void Replica::TakeImage(std::function<void(std::string, uint64_t)> done) {
  Post([this, done = std::move(done)] {
    uint64_t revision = 0;
    std::string image = driver_->Image(&revision);
    done(std::move(image), revision);
  });
}

std::shared_ptr<const ClusterView> Replica::view() const { return driver_->view(); }

std::string Replica::health() const { return driver_->health(); }

std::string Replica::degraded() const { return driver_->degraded(); }

}  // namespace raftkv::server
