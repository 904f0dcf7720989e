// status: one table for the whole cluster. Every endpoint is asked for
// /status and /health, then every member those answers list that no
// endpoint covered (by its HTTP address), so that a node missing from
// --endpoints still shows, reachable or not.
#include <algorithm>
#include <boost/json/serialize.hpp>
#include <set>
#include <thread>

#include "commands.h"
#include "output.h"

namespace raftkv::ctl {

namespace json = boost::json;
using boost::beast::http::verb;
using std::chrono::milliseconds;

namespace {

// A probe gets at most this long (or --timeout if shorter), all probes at once.
constexpr milliseconds kProbeTimeout{3000};

struct Node {
  std::string name;  // Its id, "?" while unknown.
  std::string http;  // Its HTTP address, "" if its member entry has none.
  bool reachable = false;
  json::object status;  // Its /status, when reachable.
  std::string health;
};

// GET `target` on `conn`: the answer, or a failure in *why.
bool Get(Connection& conn, const std::string& target, Clock::time_point deadline, Reply* out,
         std::string* why) {
  bool got_some = false;
  error_code ec;
  if (!conn.is_open()) ec = conn.Connect(deadline);
  if (!ec) ec = conn.Write({verb::get, target}, deadline);
  if (!ec) ec = conn.Read(out, &got_some, deadline);
  if (ec) *why = Describe(ec);
  return !ec;
}

std::string HealthOf(const Reply& r) {
  json::object o;
  if (!ParseObject(r, &o).ok()) return "HTTP " + std::to_string(r.status);
  std::string health = StringOf(o, "status");
  if (std::string d = StringOf(o, "degraded"); !d.empty()) health += " (degraded: " + d + ")";
  return health.empty() ? "HTTP " + std::to_string(r.status) : health;
}

void Probe(const Endpoint& ep, milliseconds timeout, Node* node) {
  node->http = ep.ToString();
  Connection conn(ep);
  const auto deadline = Clock::now() + timeout;
  Reply status, health;
  std::string why;
  if (!Get(conn, "/status", deadline, &status, &why)) {
    node->health = "unreachable (" + why + ")";
    return;
  }
  if (status.status != 200 || !ParseObject(status, &node->status).ok()) {
    node->health = "unreachable (/status answered " + std::to_string(status.status) + ")";
    return;
  }
  node->reachable = true;
  node->name = StringOf(node->status, "id");
  node->health =
      Get(conn, "/health", deadline, &health, &why) ? HealthOf(health) : "no /health (" + why + ")";
}

// Probes every endpoint at once, one thread each.
std::vector<Node> ProbeAll(const std::vector<Endpoint>& endpoints, milliseconds timeout) {
  std::vector<Node> nodes(endpoints.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < endpoints.size(); i++) {
    threads.emplace_back(Probe, std::cref(endpoints[i]), timeout, &nodes[i]);
  }
  for (std::thread& t : threads) t.join();
  return nodes;
}

// The members that the answers list and no probed node covers: their
// endpoints to probe, or (no HTTP address) rows as they are.
void UncoveredMembers(const std::vector<Node>& nodes, std::vector<Endpoint>* to_probe,
                      std::vector<Node>* no_address) {
  std::set<std::string> names, addresses;
  for (const Node& n : nodes) {
    if (n.reachable) names.insert(n.name);
    addresses.insert(n.http);
  }
  for (const Node& n : nodes) {
    const json::value* members = n.status.if_contains("members");
    if (!members || !members->is_array()) continue;
    for (const json::value& m : members->get_array()) {
      if (!m.is_object()) continue;
      const std::string name = StringOf(m.get_object(), "id");
      const std::string http = StringOf(m.get_object(), "http");
      if (names.contains(name) || (!http.empty() && addresses.contains(http))) continue;
      names.insert(name);
      std::vector<Endpoint> ep;
      if (!http.empty() && ParseEndpoints(http, &ep).ok()) {
        addresses.insert(http);
        to_probe->push_back(ep[0]);
      } else {
        no_address->push_back(Node{name, "", false, {}, "unknown (no HTTP address known)"});
      }
    }
  }
}

// Names unreachable nodes after the member entries that give their address.
void NameUnreachable(std::vector<Node>* nodes) {
  for (Node& n : *nodes) {
    if (n.reachable) continue;
    n.name = "?";
    for (const Node& other : *nodes) {
      const json::value* members = other.status.if_contains("members");
      if (!members || !members->is_array()) continue;
      for (const json::value& m : members->get_array()) {
        if (m.is_object() && StringOf(m.get_object(), "http") == n.http) {
          n.name = StringOf(m.get_object(), "id");
        }
      }
    }
  }
}

// The commit index of the leader with the highest term that answered.
std::optional<uint64_t> LeaderCommit(const std::vector<Node>& nodes) {
  std::optional<uint64_t> commit;
  uint64_t term = 0;
  for (const Node& n : nodes) {
    if (!n.reachable || StringOf(n.status, "role") != "Leader") continue;
    if (!commit || NumberOf(n.status, "term") > term) {
      term = NumberOf(n.status, "term");
      commit = NumberOf(n.status, "commit");
    }
  }
  return commit;
}

std::string LeaderName(const json::object& status) {
  const json::value* l = status.if_contains("leader");
  if (!l || !l->is_object()) return "";
  return StringOf(l->get_object(), "id");
}

json::value RowJson(const Node& n, std::optional<uint64_t> leader_commit) {
  json::object o;
  o["node"] = n.name;
  o["http"] = n.http;
  o["reachable"] = n.reachable;
  o["health"] = n.health;
  if (!n.reachable) {
    for (const char* f : {"role", "term", "leader", "commit", "applied", "lag", "status"}) {
      o[f] = nullptr;
    }
    return o;
  }
  const uint64_t applied = NumberOf(n.status, "applied");
  o["role"] = StringOf(n.status, "role");
  o["term"] = NumberOf(n.status, "term");
  o["leader"] = LeaderName(n.status);
  o["commit"] = NumberOf(n.status, "commit");
  o["applied"] = applied;
  if (leader_commit) {
    o["lag"] = *leader_commit > applied ? *leader_commit - applied : 0;
  } else {
    o["lag"] = nullptr;
  }
  o["status"] = n.status;
  return o;
}

std::vector<std::string> RowCells(const json::object& r) {
  auto cell = [&](const char* f) -> std::string {
    const json::value& v = r.at(f);
    if (v.is_null()) return "-";
    if (v.is_string()) return v.get_string().empty() ? "-" : std::string(v.get_string());
    return json::serialize(v);
  };
  return {cell("node"),   cell("http"),    cell("role"), cell("term"),  cell("leader"),
          cell("commit"), cell("applied"), cell("lag"),  cell("health")};
}

}  // namespace

Status RunStatus(Context& ctx, const Args&) {
  const milliseconds timeout = std::min(ctx.globals().timeout, kProbeTimeout);
  std::vector<Node> nodes = ProbeAll(ctx.globals().endpoints, timeout);
  std::vector<Endpoint> more;
  std::vector<Node> no_address;
  UncoveredMembers(nodes, &more, &no_address);
  for (Node& n : ProbeAll(more, timeout)) nodes.push_back(std::move(n));
  for (Node& n : no_address) nodes.push_back(std::move(n));
  NameUnreachable(&nodes);
  std::stable_sort(nodes.begin(), nodes.end(),
                   [](const Node& a, const Node& b) { return a.name < b.name; });
  const std::optional<uint64_t> leader_commit = LeaderCommit(nodes);
  json::array rows;
  for (const Node& n : nodes) rows.push_back(RowJson(n, leader_commit));
  if (ctx.json()) {
    ctx.out() << json::serialize(rows) << "\n";
  } else {
    std::vector<std::vector<std::string>> cells;
    for (const json::value& r : rows) cells.push_back(RowCells(r.get_object()));
    PrintTable(ctx.out(),
               {"NODE", "HTTP", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG", "HEALTH"},
               cells);
  }
  bool any = std::any_of(nodes.begin(), nodes.end(), [](const Node& n) { return n.reachable; });
  if (!any) return Status(Exit::kUnavailable, "status: no node answered");
  return Status::Ok();
}

}  // namespace raftkv::ctl
