#include "server/watch_hub.h"

#include <boost/asio/post.hpp>
#include <future>

namespace raftkv::server {

size_t WatchMetrics::CancelReasonIndex(std::string_view reason) {
  for (size_t i = 0; i + 1 < kCancelReasonCount; i++) {
    if (reason == kCancelReasons[i]) return i;
  }
  return kCancelReasonCount - 1;
}

namespace asio = boost::asio;

namespace {
constexpr std::chrono::milliseconds kSweepEvery{100};
}  // namespace

WatchThread::WatchThread(WatchHub* hub, asio::io_context* io)
    : hub_(hub), io_(io), registry_(&hub->history()), sweep_timer_(*io) {}

void WatchThread::Attach(const std::shared_ptr<WatchClient>& c) {
  clients_[c.get()] = c;
  if (!sweeping_) {
    sweeping_ = true;
    ArmSweep();
  }
}

void WatchThread::Detach(WatchClient* c) { clients_.erase(c); }

void WatchThread::ArmSweep() {
  sweep_timer_.expires_after(kSweepEvery);
  sweep_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    Sweep();
  });
}

void WatchThread::Wake(const std::shared_ptr<WatchClient>& c,
                       std::chrono::steady_clock::time_point due) {
  due_.push(Due{due, c});
}

void WatchThread::Sweep() {
  if (clients_.empty()) {
    sweeping_ = false;
    due_ = {};
    return;
  }
  SweepState st;
  st.now = std::chrono::steady_clock::now();
  st.no_leader = hub_->NoLeader();
  st.member = !hub_->member_ || hub_->member_();
  // Clients may detach, or ask to be woken, while swept: sweep a list.
  std::vector<std::shared_ptr<WatchClient>> woken;
  if ((st.no_leader && !no_leader_) || (!st.member && member_)) {
    // The node lost its leader or its membership: every client looks.
    for (const auto& [raw, weak] : clients_) {
      if (auto c = weak.lock()) woken.push_back(std::move(c));
    }
  } else {
    while (!due_.empty() && due_.top().at <= st.now) {
      if (auto c = due_.top().client.lock()) woken.push_back(std::move(c));
      due_.pop();
    }
  }
  no_leader_ = st.no_leader;
  member_ = st.member;
  for (const auto& c : woken) c->OnSweep(st);
  ArmSweep();
}

WatchHub::WatchHub(WatchOptions options) : options_(options), history_(options.history) {}

WatchHub::~WatchHub() = default;

void WatchHub::SetThreads(const std::vector<asio::io_context*>& ios) {
  for (asio::io_context* io : ios) threads_.push_back(std::make_unique<WatchThread>(this, io));
}

void WatchHub::SetNodeState(std::function<bool()> no_leader, std::function<bool()> member) {
  no_leader_ = std::move(no_leader);
  member_ = std::move(member);
}

WatchThread* WatchHub::ThreadOf(asio::io_context& io) {
  for (auto& t : threads_) {
    if (t->io_ == &io) return t.get();
  }
  return nullptr;
}

void WatchHub::OnChanges(uint64_t prev_revision, uint64_t revision, std::vector<kv::Event> events) {
  std::shared_ptr<const watch::Batch> b =
      history_.Append(prev_revision, revision, std::move(events));
  for (auto& t : threads_) {
    // A watch counts itself (Acquire) before it reads the history, so a
    // thread seen without watches here reads this batch from the history.
    if (t->watches_.load() == 0) continue;
    WatchThread* thread = t.get();
    asio::post(*t->io_, [thread, b] { thread->registry_.OnBatch(*b); });
  }
}

void WatchHub::OnRestored(uint64_t revision) {
  uint64_t generation = history_.Reset(revision);
  for (auto& t : threads_) {
    WatchThread* thread = t.get();
    asio::post(*t->io_,
               [thread, generation, revision] { thread->registry_.OnReset(generation, revision); });
  }
}

bool WatchHub::Acquire(WatchThread* t, uint64_t n) {
  if (shutdown_.load()) return false;
  uint64_t now = watchers_.load();
  do {
    if (now + n > options_.max_watchers) return false;
  } while (!watchers_.compare_exchange_weak(now, now + n));
  t->watches_ += n;
  return true;
}

void WatchHub::Release(WatchThread* t, uint64_t n) {
  t->watches_ -= n;
  watchers_ -= n;
}

void WatchHub::Shutdown() {
  shutdown_ = true;
  for (auto& t : threads_) {
    WatchThread* thread = t.get();
    asio::post(*t->io_, [thread] {
      std::vector<std::shared_ptr<WatchClient>> live;
      for (const auto& [raw, weak] : thread->clients_) {
        if (auto c = weak.lock()) live.push_back(std::move(c));
      }
      for (const auto& c : live) c->OnShutdown();
    });
  }
}

void WatchHub::CloseAll() {
  auto on_each_thread = [this](std::function<void(WatchThread*)> fn) {
    std::vector<std::future<void>> done;
    for (auto& t : threads_) {
      auto p = std::make_shared<std::promise<void>>();
      done.push_back(p->get_future());
      WatchThread* thread = t.get();
      asio::post(*t->io_, [thread, p, fn] {
        fn(thread);
        p->set_value();
      });
    }
    for (auto& f : done) f.wait();
  };
  on_each_thread([](WatchThread* thread) {
    std::vector<std::shared_ptr<WatchClient>> live;
    for (const auto& [raw, weak] : thread->clients_) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
    for (const auto& c : live) c->OnClose();
    thread->sweep_timer_.cancel();
    thread->due_ = {};
  });
  // The aborted reads and writes of the closed sockets complete after that
  // (their handlers hold the streams): a second round runs after them.
  on_each_thread([](WatchThread*) {});
}

}  // namespace raftkv::server
