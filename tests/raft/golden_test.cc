// Golden transcripts in the spirit of etcd-io/raft's datadriven tests: a
// small script drives a cluster and the exact message trace is compared to
// the expected protocol transcript written below.
//
// Script commands (one per line):
//   campaign N         node N campaigns
//   propose N DATA     node N proposes DATA
//   tick N             node N ticks once
//   isolate N / heal   drop every message to or from N / stop dropping
//   stabilize          handle Readies and deliver messages until quiet
//   status             print role, term, commit and applied data of each node
// The trace echoes each command as "> command" and then every message sent
// while it ran (Message::DebugString), in order.
#include <gtest/gtest.h>

#include <sstream>

#include "test_util.h"

namespace raftkv::raft {
namespace {

using test::Network;

std::string RunScript(Network* net, const std::string& script) {
  std::vector<std::string> trace;
  net->trace = &trace;
  std::ostringstream out;
  std::istringstream in(script);
  std::string line;
  auto flush = [&] {
    for (const std::string& t : trace) out << t << "\n";
    trace.clear();
  };
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    out << "> " << line << "\n";
    std::istringstream words(line);
    std::string cmd;
    words >> cmd;
    NodeId id = 0;
    if (cmd == "campaign") {
      words >> id;
      net->node(id).Campaign();
    } else if (cmd == "propose") {
      std::string data;
      words >> id >> data;
      Status s = net->node(id).Propose(data);
      if (!s.ok()) out << "error: " << s.ToString() << "\n";
    } else if (cmd == "tick") {
      words >> id;
      net->node(id).Tick();
    } else if (cmd == "isolate") {
      words >> id;
      net->Isolate(id);
    } else if (cmd == "heal") {
      net->Heal();
    } else if (cmd == "stabilize") {
      net->Stabilize();
    } else if (cmd == "status") {
      for (NodeId n : net->ids()) {
        Node& node = net->node(n);
        out << n << ": " << RoleName(node.role()) << " term=" << node.term()
            << " commit=" << node.commit() << " applied=[";
        std::vector<std::string> data = net->peer(n).AppliedData();
        for (size_t i = 0; i < data.size(); ++i) out << (i ? "," : "") << data[i];
        out << "]\n";
      }
    } else {
      ADD_FAILURE() << "unknown command: " << line;
    }
    flush();
  }
  net->trace = nullptr;
  return out.str();
}

// Raft paper 5.2 (pre-vote, thesis 9.6, then the election), 5.3 (the new
// leader's no-op and a proposal are replicated and committed, followers learn
// the commit index), 5.2 (heartbeats). Three voters start from a snapshot at
// index 1, term 1.
TEST(GoldenTest, ElectReplicateHeartbeat) {
  auto net = Network::Make(3);
  const std::string script = R"(campaign 1
stabilize
propose 1 x
stabilize
tick 1
stabilize
status
)";
  const std::string expected = R"(> campaign 1
> stabilize
1->2 PreVote term=2 last_index=1 last_term=1
1->3 PreVote term=2 last_index=1 last_term=1
2->1 PreVoteResp term=2 granted
3->1 PreVoteResp term=2 granted
1->2 Vote term=2 last_index=1 last_term=1
1->3 Vote term=2 last_index=1 last_term=1
2->1 VoteResp term=2 granted
3->1 VoteResp term=2 granted
1->2 App term=2 prev_index=1 prev_term=1 commit=1 entries=[2/2]
1->3 App term=2 prev_index=1 prev_term=1 commit=1 entries=[2/2]
2->1 AppResp term=2 index=2
3->1 AppResp term=2 index=2
1->2 App term=2 prev_index=2 prev_term=2 commit=2 entries=[]
1->3 App term=2 prev_index=2 prev_term=2 commit=2 entries=[]
2->1 AppResp term=2 index=2
3->1 AppResp term=2 index=2
> propose 1 x
> stabilize
1->2 App term=2 prev_index=2 prev_term=2 commit=2 entries=[2/3]
1->3 App term=2 prev_index=2 prev_term=2 commit=2 entries=[2/3]
2->1 AppResp term=2 index=3
3->1 AppResp term=2 index=3
1->2 App term=2 prev_index=3 prev_term=2 commit=3 entries=[]
1->3 App term=2 prev_index=3 prev_term=2 commit=3 entries=[]
2->1 AppResp term=2 index=3
3->1 AppResp term=2 index=3
> tick 1
> stabilize
1->2 Heartbeat term=2 commit=3 round=0
1->3 Heartbeat term=2 commit=3 round=0
2->1 HeartbeatResp term=2 round=0
3->1 HeartbeatResp term=2 round=0
> status
1: Leader term=2 commit=3 applied=[x]
2: Follower term=2 commit=3 applied=[x]
3: Follower term=2 commit=3 applied=[x]
)";
  EXPECT_EQ(RunScript(net.get(), script), expected);
}

}  // namespace
}  // namespace raftkv::raft
