#include "server/watch_http.h"

#include <boost/asio/write.hpp>
#include <charconv>
#include <random>

#include "server/json.h"
#include "server/v1.h"

namespace raftkv::server {

namespace asio = boost::asio;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

namespace {

// The JSON array of one revision's events, shared by the watches of this
// thread that take all of that revision's events in the same encoding (a
// fan-out serializes each revision once, not once per watch).
std::string_view EventsJson(const watch::Change& c, std::span<const kv::Event* const> events,
                            bool whole, bool b64, std::string* scratch) {
  struct Cache {
    uint64_t revision = 0;
    bool b64 = false;
    std::string json;
  };
  thread_local Cache cache;
  if (whole && cache.revision == c.revision && cache.b64 == b64 && !cache.json.empty()) {
    return cache.json;
  }
  std::string* out = whole ? &cache.json : scratch;
  out->clear();
  v1::AppendEvents(out, events, b64);
  if (whole) {
    cache.revision = c.revision;
    cache.b64 = b64;
  }
  return *out;
}

void AppendNumber(std::string* out, uint64_t n) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), n);
  out->append(buf, end);
}

bool IsMember(const WatchContext& ctx) {
  auto view = ctx.replica->view();
  return view->Find(view->self) != nullptr;
}

// --- Streams -----------------------------------------------------------------

class WatchStream final : public watch::Sink,
                          public WatchClient,
                          public std::enable_shared_from_this<WatchStream> {
 public:
  WatchStream(SessionSocket socket, StreamRequest req, WatchContext ctx)
      : socket_(std::move(socket)), req_(std::move(req)), ctx_(std::move(ctx)) {
    ctx_.hub->metrics().streams++;
  }

  ~WatchStream() override {
    Close();
    ctx_.hub->metrics().streams--;
  }

  void Start() {
    auto self = shared_from_this();
    ctx_.thread->Attach(self);
    was_member_ = IsMember(ctx_);
    chunked_ = req_.http_version >= 11;
    head_ = req_.http_version >= 11 ? "HTTP/1.1 200 OK" : "HTTP/1.0 200 OK";
    head_ +=
        req_.sse ? "\r\nContent-Type: text/event-stream" : "\r\nContent-Type: application/x-ndjson";
    head_ += "\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no";
    head_ += req_.headers;
    head_ += chunked_ ? "\r\nTransfer-Encoding: chunked\r\n\r\n" : "\r\nConnection: close\r\n\r\n";
    // EventSource reconnects after this many milliseconds (its default is 3 s).
    if (req_.sse) queue_ += "retry: 1000\n\n";
    const uint64_t head = ctx_.hub->history().revision();
    const uint64_t compact = ctx_.hub->history().compact_revision();
    entries_.resize(req_.watches.size());
    slots_ = req_.watches.size();
    for (size_t i = 0; i < req_.watches.size(); i++) {
      Entry& e = entries_[i];
      WatchSpec& spec = req_.watches[i];
      e.name = spec.name;
      std::string tail = ",\"compact_revision\":";
      AppendNumber(&tail, compact);
      Message(i, "created", head, tail, false);
      e.last_queued = Clock::now();
      // What the client has before any event: everything before its start.
      e.queued = e.delivered = spec.rev != 0 ? spec.rev - 1 : head;
      e.live = true;
      uint64_t compact_now = 0;
      // From the revision after the head that `created` names (not from "now",
      // which may have moved on since).
      e.w = ctx_.thread->registry().Add(spec.filter, spec.rev != 0 ? spec.rev : head + 1, self,
                                        static_cast<uint32_t>(i), &compact_now);
      if (e.w == nullptr && e.live) {
        // Compacted at the start (the session checked, but the history may
        // have moved since).
        Ended(e);
        e.compact = compact_now;
        Cancel(i, "compacted", e.queued);
      }
    }
    started_ = true;
    WakeAt(Clock::now() + req_.progress);
    MaybeFinishWhenAllEnded();
    Read();
    Flush();
  }

  // --- watch::Sink ---

  watch::Take OnEvents(watch::Watch& w, const watch::Change& c,
                       std::span<const kv::Event* const> events, bool whole) override {
    const size_t i = w.tag;
    const bool synced = ctx_.thread->registry().Synced(w);
    std::string_view json = EventsJson(c, events, whole, req_.b64, &scratch_);
    const size_t before = queue_.size();
    std::string tail = ",\"events\":";
    tail += json;
    Message(i, "events", c.revision, tail, req_.sse && !req_.multi);
    const size_t unsent = queue_.size() + writing_.size();
    if (synced && before > 0 && unsent > ctx_.hub->options().buffer_bytes) {
      // It does not fit: the consumer fell behind (a revision's message
      // always fits an empty queue).
      queue_.resize(before);
      marks_.pop_back();
      SlowConsumer();
      return watch::Take::kRefused;
    }
    ctx_.hub->metrics().events_sent.Add(events.size());
    entries_[i].last_queued = Clock::now();
    // Catching up: stop at half the bound, and go on as the writes drain.
    if (!synced && unsent >= ctx_.hub->options().buffer_bytes / 2) return watch::Take::kEnough;
    return watch::Take::kMore;
  }

  void OnDelivered(watch::Watch& w) override {
    (void)w;
    Flush();
  }

  void OnEnded(watch::Watch& w, watch::EndReason why, uint64_t compact_revision) override {
    Entry& e = entries_[w.tag];
    Ended(e);
    e.w = nullptr;
    e.compact = compact_revision;
    Cancel(w.tag, watch::EndReasonName(why), e.queued);
    if (started_) MaybeFinishWhenAllEnded();
    Flush();
  }

  // --- WatchClient ---

  void OnSweep(const SweepState& st) override {
    const Clock::time_point now = st.now;
    if (now >= wake_at_) wake_at_ = Clock::time_point::min();  // This wake-up is used.
    if (closed_) return;
    if (writing_active_ && now - write_started_ > ctx_.write_timeout) return Close();
    if (!ending_) {
      if (req_.require_leader && st.no_leader) return Finish("no_leader");
      if (was_member_ && !st.member) return Finish("member_removed");
      for (size_t i = 0; i < entries_.size(); i++) {
        Entry& e = entries_[i];
        if (!e.live || now - e.last_queued < req_.progress) continue;
        if (!ctx_.thread->registry().Synced(*e.w)) continue;  // Still catching up: not idle.
        Message(i, "progress", ctx_.thread->registry().Examined(*e.w), "", req_.sse && !req_.multi);
        e.last_queued = now;
      }
      Flush();
    }
    // The next time something may be due: a progress message, or a write's timeout.
    Clock::time_point next = Clock::time_point::max();
    if (!ending_) {
      for (const Entry& e : entries_) {
        if (e.live) next = std::min(next, e.last_queued + req_.progress);
      }
    }
    if (writing_active_) next = std::min(next, write_started_ + ctx_.write_timeout);
    if (next != Clock::time_point::max()) WakeAt(next);
  }

  // Asks the sweep for a wake-up at `t`, unless one at or before it is pending.
  void WakeAt(Clock::time_point t) {
    if (wake_at_ != Clock::time_point::min() && wake_at_ <= t) return;
    wake_at_ = t;
    ctx_.thread->Wake(shared_from_this(), t + std::chrono::milliseconds(1));
  }

  void OnShutdown() override {
    if (!closed_ && !ending_) Finish("shutdown");
  }

  void OnClose() override { Close(); }

 private:
  struct Entry {
    std::string name;
    watch::Watch* w = nullptr;
    bool live = false;
    uint64_t queued = 0;     // The last revision of its messages queued or sent.
    uint64_t delivered = 0;  // The last revision of its messages written.
    uint64_t compact = 0;
    Clock::time_point last_queued;
    std::string end_reason;  // Of its canceled message, once queued.
  };
  // A queued message: events and progress move their watch's revision once
  // written; created and canceled are re-queued if a slow consumer's queue
  // is dropped before they were written.
  enum class Kind : uint8_t { kData, kCreated, kCanceled };
  struct Mark {
    uint32_t entry;
    uint64_t revision;
    Kind kind = Kind::kData;
  };

  // A watch ended: it gives its slot back (a stream still writing its last
  // messages holds no watcher).
  void Ended(Entry& e) {
    e.live = false;
    ctx_.hub->Release(ctx_.thread, 1);
    slots_--;
  }

  // Queues {"type":..,["watch":..,]"revision":R<tail>}, framed as an NDJSON
  // line or an SSE event (with `id: R` when `id`).
  void Message(size_t i, std::string_view type, uint64_t revision, std::string_view tail, bool id) {
    if (req_.sse) {
      if (id) {
        queue_ += "id: ";
        AppendNumber(&queue_, revision);
        queue_ += '\n';
      }
      queue_ += "data: ";
    }
    queue_ += "{\"type\":\"";
    queue_ += type;
    queue_ += '"';
    if (req_.multi) {
      queue_ += ",\"watch\":";
      AppendJsonString(&queue_, entries_[i].name);
    }
    queue_ += ",\"revision\":";
    AppendNumber(&queue_, revision);
    queue_ += tail;
    queue_ += req_.sse ? "}\n\n" : "}\n";
    if (type == "events" || type == "progress") {
      marks_.push_back(Mark{static_cast<uint32_t>(i), revision});
      entries_[i].queued = std::max(entries_[i].queued, revision);
    } else {
      marks_.push_back(Mark{static_cast<uint32_t>(i), revision,
                            type == "created" ? Kind::kCreated : Kind::kCanceled});
    }
  }

  void Cancel(size_t i, std::string_view reason, uint64_t revision) {
    if (entries_[i].end_reason.empty()) {  // Not a re-queued one (a slow consumer's dropped queue).
      ctx_.hub->metrics().canceled[WatchMetrics::CancelReasonIndex(reason)].Add();
    }
    entries_[i].end_reason = reason;
    std::string tail = ",\"reason\":\"";
    tail += reason;
    tail += "\",\"compact_revision\":";
    AppendNumber(&tail, std::max(entries_[i].compact, ctx_.hub->history().compact_revision()));
    Message(i, "canceled", revision, tail, false);
  }

  // Ends every watch with `reason`, then the stream once written.
  void Finish(std::string_view reason) {
    auto self = shared_from_this();
    for (size_t i = 0; i < entries_.size(); i++) {
      Entry& e = entries_[i];
      if (!e.live) continue;
      Ended(e);
      ctx_.thread->registry().Remove(std::exchange(e.w, nullptr));
      Cancel(i, reason, e.queued);
    }
    ending_ = true;
    Flush();
  }

  void MaybeFinishWhenAllEnded() {
    for (const Entry& e : entries_) {
      if (e.live) return;
    }
    ending_ = true;
  }

  // The queue is dropped; every watch is told the last revision written or
  // being written, from which it resumes.
  void SlowConsumer() {
    // A created or canceled message dropped with the queue is sent again.
    std::vector<size_t> created, canceled;
    for (const Mark& m : marks_) {
      if (m.kind == Kind::kCreated) created.push_back(m.entry);
      if (m.kind == Kind::kCanceled) canceled.push_back(m.entry);
    }
    queue_.clear();
    marks_.clear();
    for (Entry& e : entries_) e.queued = e.delivered;
    for (const Mark& m : writing_marks_) {
      if (m.kind == Kind::kData) {
        entries_[m.entry].queued = std::max(entries_[m.entry].queued, m.revision);
      }
    }
    for (size_t i : created) {
      std::string tail = ",\"compact_revision\":";
      AppendNumber(&tail, ctx_.hub->history().compact_revision());
      Message(i, "created", ctx_.hub->history().revision(), tail, false);
    }
    for (size_t i : canceled) Cancel(i, std::string(entries_[i].end_reason), entries_[i].queued);
    Finish("slow_consumer");
  }

  void Flush() {
    if (writing_active_ || closed_) return;
    if (queue_.empty()) {
      if (ending_ && !terminal_sent_) return WriteTerminal();
      return;
    }
    writing_.swap(queue_);
    queue_.clear();
    writing_marks_.swap(marks_);
    marks_.clear();
    std::vector<asio::const_buffer> bufs;
    if (!head_sent_) {
      bufs.push_back(asio::buffer(head_));
      head_sent_ = true;
    }
    if (chunked_) {
      chunk_header_.clear();
      char hex[20];
      auto [end, ec] = std::to_chars(hex, hex + sizeof(hex), writing_.size(), 16);
      chunk_header_.append(hex, end);
      chunk_header_ += "\r\n";
      bufs.push_back(asio::buffer(chunk_header_));
      bufs.push_back(asio::buffer(writing_));
      bufs.push_back(asio::buffer("\r\n", 2));
    } else {
      bufs.push_back(asio::buffer(writing_));
    }
    StartWrite(bufs, false);
  }

  void WriteTerminal() {
    terminal_sent_ = true;
    std::vector<asio::const_buffer> bufs;
    if (!head_sent_) {
      bufs.push_back(asio::buffer(head_));
      head_sent_ = true;
    }
    if (chunked_) bufs.push_back(asio::buffer("0\r\n\r\n", 5));
    if (bufs.empty()) return Close();
    StartWrite(bufs, true);
  }

  void StartWrite(const std::vector<asio::const_buffer>& bufs, bool last) {
    writing_active_ = true;
    write_started_ = Clock::now();
    WakeAt(write_started_ + ctx_.write_timeout);
    asio::async_write(socket_, bufs, [self = shared_from_this(), last](error_code ec, size_t) {
      self->OnWritten(ec, last);
    });
  }

  void OnWritten(error_code ec, bool last) {
    writing_active_ = false;
    if (ec || last) return Close();
    for (const Mark& m : writing_marks_) {
      if (m.kind != Kind::kData) continue;
      Entry& e = entries_[m.entry];
      e.delivered = std::max(e.delivered, m.revision);
    }
    writing_marks_.clear();
    if (writing_.capacity() > (64u << 10)) {
      std::string().swap(writing_);
    } else {
      writing_.clear();
    }
    // Watches catching up continue while the queue is short.
    if (!ending_ && queue_.size() < ctx_.hub->options().buffer_bytes / 2) {
      auto self = shared_from_this();
      for (Entry& e : entries_) {
        if (e.live && !ctx_.thread->registry().Synced(*e.w)) ctx_.thread->registry().Resume(e.w);
      }
    }
    Flush();
  }

  // The client sends nothing more; reading tells when it closes.
  void Read() {
    socket_.async_read_some(asio::buffer(read_buf_),
                            [self = shared_from_this()](error_code ec, size_t n) {
                              if (ec) return self->Close();
                              self->read_bytes_ += n;
                              if (self->read_bytes_ > (1u << 20)) return self->Close();
                              self->Read();
                            });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    for (Entry& e : entries_) {
      if (e.live) {
        Ended(e);
        ctx_.thread->registry().Remove(std::exchange(e.w, nullptr));
      }
    }
    error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    ctx_.thread->Detach(this);
    ctx_.hub->Release(ctx_.thread, slots_);
    slots_ = 0;
  }

  SessionSocket socket_;
  StreamRequest req_;
  WatchContext ctx_;
  std::vector<Entry> entries_;
  std::string head_;
  bool head_sent_ = false;
  bool chunked_ = true;
  bool was_member_ = false;
  bool started_ = false;  // Every watch of the request has been added.
  // Watcher slots still held: one per watch not yet ended.
  uint64_t slots_ = 0;
  std::string queue_;  // Messages not yet handed to the socket.
  std::vector<Mark> marks_;
  std::string writing_;  // The write in progress.
  std::vector<Mark> writing_marks_;
  std::string chunk_header_;
  std::string scratch_;
  bool writing_active_ = false;
  Clock::time_point write_started_;
  bool ending_ = false;  // Every watch is cancelled; the stream ends once written.
  bool terminal_sent_ = false;
  bool closed_ = false;
  // The wake-up asked of the sweep (min: none pending).
  Clock::time_point wake_at_ = Clock::time_point::min();
  char read_buf_[512];
  size_t read_bytes_ = 0;
};

// --- Long polls ----------------------------------------------------------------

class LongPoll final : public watch::Sink,
                       public WatchClient,
                       public std::enable_shared_from_this<LongPoll> {
 public:
  LongPoll(PollRequest req, WatchContext ctx, PollAnswer answer)
      : req_(std::move(req)), ctx_(std::move(ctx)), answer_(std::move(answer)) {
    ctx_.hub->metrics().long_polls++;
  }
  ~LongPoll() override { ctx_.hub->metrics().long_polls--; }

  void Start() {
    auto self = shared_from_this();
    ctx_.thread->Attach(self);
    thread_local std::mt19937_64 rng{std::random_device{}()};
    auto jitter_ms = static_cast<int64_t>(req_.wait.count() / 16);
    auto jitter = std::chrono::milliseconds(
        jitter_ms > 0 ? static_cast<int64_t>(rng() % static_cast<uint64_t>(jitter_ms + 1)) : 0);
    deadline_ = Clock::now() + req_.wait + jitter;
    uint64_t compact = 0;
    watch::Watch* w =
        ctx_.thread->registry().Add(req_.watch.filter, req_.watch.rev, self, 0, &compact);
    if (done_) {
      // Answered from the history during Add (Done removed the watch).
      if (w != nullptr) ctx_.thread->registry().Remove(w);
      return;
    }
    w_ = w;
    if (w_ == nullptr) return Compacted(compact);
    wake_at_ = deadline_;
    ctx_.thread->Wake(self, deadline_);
  }

  watch::Take OnEvents(watch::Watch& w, const watch::Change& c,
                       std::span<const kv::Event* const> events, bool whole) override {
    // Known before Add returns when the history already has events: Done must remove it.
    w_ = &w;
    // Once full, nothing more: a later, smaller revision must not slip in
    // after one that did not fit (the next poll starts after the last taken).
    if (more_) return watch::Take::kRefused;
    if (count_ > 0 && (count_ + events.size() > req_.limit || events_.size() >= req_.max_bytes)) {
      more_ = true;
      return watch::Take::kRefused;
    }
    std::string_view json = EventsJson(c, events, whole, req_.b64, &scratch_);
    if (count_ > 0) events_.push_back(',');
    events_.append(json.substr(1, json.size() - 2));  // Without the brackets.
    count_ += events.size();
    ctx_.hub->metrics().events_sent.Add(events.size());
    last_ = c.revision;
    if (count_ >= req_.limit || events_.size() >= req_.max_bytes) {
      more_ = true;
      return watch::Take::kEnough;
    }
    return watch::Take::kMore;
  }

  void OnDelivered(watch::Watch& w) override {
    Done(200, Body(more_ ? last_ : ctx_.thread->registry().Examined(w)), "");
  }

  void OnEnded(watch::Watch& w, watch::EndReason why, uint64_t compact_revision) override {
    (void)w;
    (void)why;
    w_ = nullptr;
    Compacted(compact_revision);
  }

  void OnSweep(const SweepState& st) override {
    if (done_) return;
    if (req_.require_leader && st.no_leader) {
      return Done(503, v1::ErrorJson("no_leader", "this node has no leader"), "1");
    }
    if (st.now >= deadline_) return Done(200, Body(ctx_.thread->registry().Examined(*w_)), "");
    if (st.now >= wake_at_) {
      wake_at_ = deadline_;
      ctx_.thread->Wake(shared_from_this(), deadline_);
    }
  }

  void OnShutdown() override {
    if (!done_) Done(503, v1::ErrorJson("shutting_down", "the node is shutting down"), "1");
  }

  void OnClose() override { OnShutdown(); }

 private:
  std::string Body(uint64_t revision) {
    revision_ = revision;
    std::string body = "{\"revision\":";
    AppendNumber(&body, revision);
    body += ",\"compact_revision\":";
    AppendNumber(&body, ctx_.hub->history().compact_revision());
    body += ",\"events\":[";
    body += events_;
    body += more_ ? "],\"more\":true}" : "],\"more\":false}";
    return body;
  }

  void Compacted(uint64_t compact) {
    std::string extra = ",\"compact_revision\":";
    AppendNumber(&extra, compact);
    extra += ",\"revision\":";
    AppendNumber(&extra, ctx_.hub->history().revision());
    Done(410,
         v1::ErrorJson("compacted",
                       "revision " + std::to_string(req_.watch.rev) +
                           " is no longer in this node's watch history; list again and watch "
                           "from the listing's revision",
                       extra),
         "");
  }

  void Done(unsigned status, std::string body, std::string_view retry_after) {
    if (done_) return;
    done_ = true;
    auto self = shared_from_this();
    if (w_ != nullptr) ctx_.thread->registry().Remove(std::exchange(w_, nullptr));
    ctx_.thread->Detach(this);
    ctx_.hub->Release(ctx_.thread, 1);
    if (revision_ == 0) revision_ = ctx_.hub->history().revision();
    // The answer holds the session: let it go once used.
    PollAnswer answer = std::move(answer_);
    answer_ = nullptr;
    answer(status, std::move(body), revision_, retry_after);
  }

  PollRequest req_;
  WatchContext ctx_;
  PollAnswer answer_;
  watch::Watch* w_ = nullptr;
  Clock::time_point deadline_;
  Clock::time_point wake_at_;  // The wake-up asked of the sweep.
  std::string events_;         // The events so far, comma separated.
  std::string scratch_;
  uint64_t count_ = 0;
  uint64_t last_ = 0;
  uint64_t revision_ = 0;
  bool more_ = false;
  bool done_ = false;
};

}  // namespace

void StartWatchStream(SessionSocket socket, StreamRequest req, WatchContext ctx) {
  std::make_shared<WatchStream>(std::move(socket), std::move(req), std::move(ctx))->Start();
}

void StartLongPoll(PollRequest req, WatchContext ctx, PollAnswer answer) {
  std::make_shared<LongPoll>(std::move(req), std::move(ctx), std::move(answer))->Start();
}

}  // namespace raftkv::server
