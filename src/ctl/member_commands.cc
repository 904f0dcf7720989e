// member list | add | promote | remove, leader transfer: the membership
// routes (docs/http-api.md, "Membership"; docs/operations.md).
//
// A change is not idempotent (an add sent twice answers member_exists, a
// transfer without a target sent twice moves leadership twice), so every
// change is a write for the client's retry rule: sent again only when it
// cannot have been applied (no connection, or a 503 such as
// membership_change_in_progress or no_leader), and an answer lost after
// sending exits 7.
#include <boost/json/serialize.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <thread>

#include "commands.h"
#include "output.h"

namespace raftkv::ctl {

namespace json = boost::json;
using boost::beast::http::verb;
using std::chrono::milliseconds;

namespace {

// How long `member list` waits for the leader's own answer (it has match
// and last_heard_ms) after another member answered without them.
constexpr milliseconds kLeaderAskTimeout{3000};
// Between two promotions of a learner not caught up, with --wait.
constexpr milliseconds kPromoteRetry{500};

std::string MemberName(const std::string& id) { return "member \"" + id + "\""; }

// The ID argument, which must not be empty.
Status MemberId(const Args& args, std::string* id) {
  *id = args.String("ID");
  if (id->empty()) return Status::Usage("ID is empty");
  return Status::Ok();
}

// A member id as one path segment: PathEscape keeps '/', which the route
// would take for a separator.
std::string MemberPath(const std::string& id) {
  std::string escaped = PathEscape(id), out;
  for (char c : escaped) out += c == '/' ? std::string("%2F") : std::string(1, c);
  return "/v1/members/" + out;
}

// Sends a membership change or leader transfer and maps its refusals: a 409
// (member_exists, not_learner, learner_not_caught_up, would_lose_quorum,
// not_voter, not_active, no_candidate, conflict) exits 8, member_not_found 3, a 504
// (the change or the transfer may still take effect) 7, the rest as
// ReplyError. `id` is the member the request names ("" if none). Ok with
// *reply a 2xx and *answer its body.
Status Change(Context& ctx, const Request& request, const std::string& subject,
              const std::string& id, Reply* reply, json::object* answer) {
  if (Status s = ctx.client().Send(request, reply); !s.ok()) return s;
  if (reply->status >= 200 && reply->status <= 299) return ParseObject(*reply, answer);
  if (ErrorCode(*reply) == "member_not_found" && !id.empty()) {
    return Status(Exit::kNotFound, "not found: " + MemberName(id));
  }
  if (reply->status == 409) {
    return Status(Exit::kConflict,
                  "conflict: the cluster refused " + subject + ": " + ReplyDetail(*reply));
  }
  if (reply->status == 504) {
    return Status(Exit::kOutcomeUnknown, "outcome unknown: " + subject +
                                             " may or may not take effect: " + ReplyDetail(*reply) +
                                             "; see raftkvctl member list");
  }
  return ReplyError(*reply, subject, request.retry);
}

// Whether a /v1/members answer is the leader's: only the leader lists its
// own match index.
bool FromLeader(const json::object& answer) {
  const json::value* members = answer.if_contains("members");
  if (!members || !members->is_array()) return false;
  for (const json::value& m : members->get_array()) {
    if (m.is_object() && BoolOf(m.get_object(), "leader")) {
      return m.get_object().contains("match");
    }
  }
  return false;
}

// The leader's HTTP address as a member list gives it, if any.
std::optional<Endpoint> LeaderEndpoint(const json::object& answer) {
  const json::value* members = answer.if_contains("members");
  if (!members || !members->is_array()) return std::nullopt;
  for (const json::value& m : members->get_array()) {
    if (!m.is_object() || !BoolOf(m.get_object(), "leader")) continue;
    std::vector<Endpoint> ep;
    if (ParseEndpoints(StringOf(m.get_object(), "http"), &ep).ok() && ep.size() == 1) {
      return ep[0];
    }
  }
  return std::nullopt;
}

std::vector<std::string> MemberRow(const json::object& m) {
  const json::value* match = m.if_contains("match");
  const json::value* heard = m.if_contains("last_heard_ms");
  auto text = [](std::string s) { return s.empty() ? std::string("-") : s; };
  return {text(StringOf(m, "id")), text(StringOf(m, "role")),
          // Whether the leader promotes it matters for a learner only.
          StringOf(m, "role") == "learner" ? text(StringOf(m, "promote")) : "-",
          BoolOf(m, "leader") ? "yes" : "no", text(StringOf(m, "raft")), text(StringOf(m, "http")),
          match ? std::to_string(NumberOf(m, "match")) : "-",
          heard ? std::to_string(NumberOf(m, "last_heard_ms")) + "ms" : "-"};
}

}  // namespace

Status RunMemberList(Context& ctx, const Args&) {
  Reply reply;
  if (Status s = ctx.client().Send({verb::get, "/v1/members"}, &reply); !s.ok()) return s;
  if (reply.status != 200) return ReplyError(reply, "the member list", Retry::kAlways);
  json::object answer;
  if (Status s = ParseObject(reply, &answer); !s.ok()) return s;
  // A follower's list has no match or last_heard_ms: ask the leader it
  // names, and keep the follower's list if the leader does not answer.
  if (!FromLeader(answer)) {
    if (std::optional<Endpoint> leader = LeaderEndpoint(answer)) {
      Client client({*leader}, std::min(ctx.globals().timeout, kLeaderAskTimeout));
      Reply theirs;
      json::object parsed;
      if (client.Send({verb::get, "/v1/members"}, &theirs).ok() && theirs.status == 200 &&
          ParseObject(theirs, &parsed).ok() && FromLeader(parsed)) {
        reply = std::move(theirs);
        answer = std::move(parsed);
      }
    }
  }
  if (ctx.json()) {
    ctx.out() << reply.body << "\n";
    return Status::Ok();
  }
  std::vector<std::vector<std::string>> rows;
  if (auto* members = answer.if_contains("members"); members && members->is_array()) {
    for (const json::value& m : members->get_array()) {
      if (m.is_object()) rows.push_back(MemberRow(m.get_object()));
    }
  }
  PrintTable(ctx.out(), {"ID", "ROLE", "PROMOTE", "LEADER", "RAFT", "HTTP", "MATCH", "LAST HEARD"},
             rows);
  return Status::Ok();
}

void DefineMemberAdd(po::options_description* d) {
  d->add_options()("raft", po::value<std::string>()->value_name("HOST:PORT"),
                   "the new node's Raft address (its --bind); required")(
      "http", po::value<std::string>()->value_name("HOST:PORT"),
      "its HTTP address (its --http): needed to forward to it when it leads")(
      "promote", po::value<std::string>()->value_name("auto|manual"),
      "auto (default): the leader makes it a voter once caught up; manual: `member promote`");
}

Status RunMemberAdd(Context& ctx, const Args& args) {
  std::string id;
  if (Status s = MemberId(args, &id); !s.ok()) return s;
  if (!args.Has("raft")) return Status::Usage("member add: --raft HOST:PORT is required");
  Endpoint ignored;
  const std::string raft = args.String("raft"), http = args.String("http");
  if (Status s = ParseHostPort("--raft", raft, &ignored); !s.ok()) return s;
  if (args.Has("http")) {
    if (Status s = ParseHostPort("--http", http, &ignored); !s.ok()) return s;
  }
  const std::string promote = args.String("promote", "auto");
  if (promote != "auto" && promote != "manual") {
    return Status::Usage("--promote: \"" + promote + "\" is not auto or manual");
  }
  json::object body{{"id", id}, {"raft", raft}, {"promote", promote}};
  if (args.Has("http")) body["http"] = http;
  Reply reply;
  json::object answer;
  Status s = Change(ctx, {verb::post, "/v1/members", json::serialize(body), Retry::kIfNotApplied},
                    "the addition of " + MemberName(id), id, &reply, &answer);
  if (!s.ok()) return s;
  if (ctx.json()) {
    ctx.out() << reply.body << "\n";
    return Status::Ok();
  }
  ctx.out() << "member " << id << " added as a learner (promote " << promote << ")\n"
            << "start it: raftkv --id " << id << " --bind " << raft
            << (http.empty() ? "" : " --http " + http) << " --datadir DIR --join " << reply.endpoint
            << "\n";
  return Status::Ok();
}

void DefineMemberPromote(po::options_description* d) {
  d->add_options()("wait", po::bool_switch(),
                   "while the learner is not caught up (409 learner_not_caught_up), ask again "
                   "every 500 ms for up to --timeout");
}

Status RunMemberPromote(Context& ctx, const Args& args) {
  std::string id;
  if (Status s = MemberId(args, &id); !s.ok()) return s;
  const auto give_up_at = Clock::now() + ctx.globals().timeout;
  const Request request{verb::post, MemberPath(id) + "/promote", "", Retry::kIfNotApplied};
  while (true) {
    Reply reply;
    json::object answer;
    Status s = Change(ctx, request, "the promotion of " + MemberName(id), id, &reply, &answer);
    // A learner not caught up was not promoted: asking again is safe.
    if (s.code() == Exit::kConflict && args.Flag("wait") &&
        ErrorCode(reply) == "learner_not_caught_up" && Clock::now() + kPromoteRetry < give_up_at) {
      std::this_thread::sleep_for(kPromoteRetry);
      continue;
    }
    if (!s.ok()) return s;
    if (ctx.json()) {
      ctx.out() << reply.body << "\n";
    } else {
      ctx.out() << "member " << id << " promoted to voter\n";
    }
    return Status::Ok();
  }
}

void DefineMemberRemove(po::options_description* d) {
  d->add_options()("force", po::bool_switch(),
                   "remove even if the voters left that answer the leader would not be a "
                   "majority (only for voters gone for good)");
}

Status RunMemberRemove(Context& ctx, const Args& args) {
  std::string id;
  if (Status s = MemberId(args, &id); !s.ok()) return s;
  Query q;
  if (args.Flag("force")) q.Add("force");
  Reply reply;
  json::object answer;
  Status s = Change(ctx, {verb::delete_, MemberPath(id) + q.str(), "", Retry::kIfNotApplied},
                    "the removal of " + MemberName(id), id, &reply, &answer);
  if (!s.ok()) return s;
  if (ctx.json()) {
    ctx.out() << reply.body << "\n";
  } else {
    ctx.out() << "member " << id
              << " removed; stop its process and wipe its data directory before adding it "
                 "again\n";
  }
  return Status::Ok();
}

Status RunLeaderTransfer(Context& ctx, const Args& args) {
  json::object body;
  std::string subject = "the leader transfer", id;
  if (args.Has("ID")) {
    if (Status s = MemberId(args, &id); !s.ok()) return s;
    body["to"] = id;
    subject += " to " + MemberName(id);
  }
  Reply reply;
  json::object answer;
  Status s =
      Change(ctx, {verb::post, "/v1/leader/transfer", json::serialize(body), Retry::kIfNotApplied},
             subject, id, &reply, &answer);
  if (!s.ok()) return s;
  if (ctx.json()) {
    ctx.out() << reply.body << "\n";
  } else {
    ctx.out() << "leader is " << StringOf(answer, "leader") << " (term " << NumberOf(answer, "term")
              << ")\n";
  }
  return Status::Ok();
}

}  // namespace raftkv::ctl
