// get, put, del, list, range and txn: the /v1 key-value routes
// (docs/http-api.md, "The /v1 API").
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "io.h"
#include "output.h"

namespace raftkv::ctl {

namespace json = boost::json;
using boost::beast::http::verb;

namespace {

// Read levels (docs/http-api.md, "Read levels"), shared by get, list and range.
void DefineReadLevel(po::options_description* d) {
  d->add_options()("stale", po::bool_switch(),
                   "serve from the node's own copy, without a ReadIndex round (may lag)")(
      "rev", po::value<std::string>()->value_name("N"),
      "served once the node has applied revision N (min_revision: read-your-writes on any "
      "node; raftkv keeps no older versions)")(
      "max-staleness", po::value<std::string>()->value_name("D"),
      "with --stale: refuse (503, then the next endpoint) a copy older than D, e.g. 2s");
}

Status ReadLevel(const Args& args, Query* q) {
  if (args.Flag("stale")) q->Add("consistency", "stale");
  uint64_t rev = 0;
  if (Status s = args.Number("rev", &rev, 1); !s.ok()) return s;
  if (rev > 0) q->Add("min_revision", std::to_string(rev));
  std::chrono::milliseconds staleness{0};
  if (Status s = args.Duration("max-staleness", &staleness); !s.ok()) return s;
  if (args.Has("max-staleness")) {
    if (!args.Flag("stale")) return Status::Usage("--max-staleness bounds a --stale read");
    q->Add("max_staleness", std::to_string(staleness.count()) + "ms");
  }
  return Status::Ok();
}

std::string Quote(std::string_view key) { return "\"" + std::string(key) + "\""; }

// --- Listing: every page of a prefix or of [from, to) ----------------------

struct Listing {
  std::string prefix;    // A prefix listing (GET /v1/kv/<prefix>?prefix) ...
  std::string from, to;  // ... or a range ([from, to) through a write-free txn).
  bool is_range = false;

  static Listing Prefix(std::string prefix) {
    Listing l;
    l.prefix = std::move(prefix);
    return l;
  }
  static Listing Range(std::string from, std::string to) {
    Listing l;
    l.from = std::move(from);
    l.to = std::move(to);
    l.is_range = true;
    return l;
  }
};

struct Page {
  uint64_t revision = 0;
  json::array kvs;
  bool more = false;
  std::string token;  // A prefix listing's continue token.
};

struct ListFlags {
  uint64_t limit = 0;  // Keys in all; 0: every key.
  uint64_t page_size = 1000;
  bool keys_only = false;
};

Status FetchPrefixPage(Context& ctx, const Listing& l, const ListFlags& f, const Query& level,
                       uint64_t page_limit, const std::string& token, Page* page) {
  Query q = level;
  q.Add("prefix");
  q.Add("limit", std::to_string(page_limit));
  if (f.keys_only) q.Add("keys_only");
  if (!token.empty()) q.Add("continue", token);
  json::object body;
  Status s = Call(ctx, {verb::get, "/v1/kv/" + PathEscape(l.prefix) + q.str()},
                  "the keys under " + Quote(l.prefix), &body);
  if (!s.ok()) return s;
  page->revision = NumberOf(body, "revision");
  if (auto* kvs = body.if_contains("kvs"); kvs && kvs->is_array()) page->kvs = kvs->get_array();
  page->more = BoolOf(body, "more");
  page->token = StringOf(body, "continue");
  return Status::Ok();
}

Status FetchRangePage(Context& ctx, const Listing& l, const ListFlags& f, const Query& level,
                      uint64_t page_limit, const std::string& start, Page* page) {
  json::object range;
  SetBytes(&range, "key", start);
  SetBytes(&range, "range_end", l.to);
  range["limit"] = page_limit;
  if (f.keys_only) range["keys_only"] = true;
  json::object txn;
  txn["success"] = json::array{json::object{{"range", range}}};
  json::object body;
  Status s = Call(ctx, {verb::post, "/v1/txn" + level.str(), json::serialize(txn)},
                  "the keys in [" + Quote(l.from) + ", " + Quote(l.to) + ")", &body);
  if (!s.ok()) return s;
  page->revision = NumberOf(body, "revision");
  const json::value* results = body.if_contains("results");
  if (!results || !results->is_array() || results->get_array().empty() ||
      !results->get_array()[0].is_object() ||
      !results->get_array()[0].get_object().contains("range")) {
    return Status::Error("the server's txn answer has no range result: " + json::serialize(body));
  }
  const json::value& r = results->get_array()[0].get_object().at("range");
  if (!r.is_object()) return Status::Error("the server's range result is not an object");
  if (auto* kvs = r.get_object().if_contains("kvs"); kvs && kvs->is_array()) {
    page->kvs = kvs->get_array();
  }
  page->more = BoolOf(r.get_object(), "more");
  return Status::Ok();
}

// Fetches pages until the listing ends or f.limit keys were read. *merged
// takes the shape of one page of GET /v1/kv/<prefix>?prefix: revision (the
// first page's), kvs, more, and continue or watch_from.
Status FetchListing(Context& ctx, const Listing& l, const ListFlags& f, const Query& level,
                    json::object* merged) {
  json::array all;
  uint64_t revision = 0;
  std::string token, start = l.from;
  Page page;
  do {
    uint64_t want = f.page_size;
    if (f.limit > 0) want = std::min<uint64_t>(want, f.limit - all.size());
    page = Page{};
    Status s = l.is_range ? FetchRangePage(ctx, l, f, level, want, start, &page)
                          : FetchPrefixPage(ctx, l, f, level, want, token, &page);
    if (!s.ok()) return s;
    if (revision == 0) revision = page.revision;
    // Every page holds at least one key when more follow; a page that does
    // not would loop forever, so it ends the listing as an error.
    if (page.more && page.kvs.empty()) return Status::Error("the server sent an empty page");
    if (page.more && !l.is_range && page.token.empty()) {
      return Status::Error("the server said more keys follow but sent no continue token");
    }
    for (json::value& kv : page.kvs) all.push_back(std::move(kv));
    token = page.token;
    if (l.is_range && page.more) start = KeyOf(all.back().as_object()) + '\0';
  } while (page.more && (f.limit == 0 || all.size() < f.limit));
  (*merged)["revision"] = revision;
  (*merged)["kvs"] = std::move(all);
  (*merged)["more"] = page.more;
  if (page.more && !token.empty()) (*merged)["continue"] = token;
  if (!page.more) (*merged)["watch_from"] = revision + 1;
  return Status::Ok();
}

void PrintKvs(std::ostream& out, const json::array& kvs, bool keys_only) {
  for (const json::value& v : kvs) {
    if (!v.is_object()) continue;
    out << KeyOf(v.get_object()) << "\n";
    if (!keys_only) out << ValueOf(v.get_object()) << "\n";
  }
}

Status ListFlagsOf(const Args& args, ListFlags* f) {
  if (Status s = args.Number("limit", &f->limit, 1); !s.ok()) return s;
  if (Status s = args.Number("page-size", &f->page_size, 1, 10000); !s.ok()) return s;
  f->keys_only = args.Flag("keys-only");
  return Status::Ok();
}

Status List(Context& ctx, const Args& args, const Listing& l) {
  ListFlags f;
  Query level;
  if (Status s = ListFlagsOf(args, &f); !s.ok()) return s;
  if (Status s = ReadLevel(args, &level); !s.ok()) return s;
  json::object merged;
  if (Status s = FetchListing(ctx, l, f, level, &merged); !s.ok()) return s;
  if (ctx.json()) {
    ctx.out() << json::serialize(merged) << "\n";
  } else {
    PrintKvs(ctx.out(), merged.at("kvs").get_array(), f.keys_only);
  }
  return Status::Ok();
}

void DefineListFlags(po::options_description* d) {
  d->add_options()("limit", po::value<std::string>()->value_name("N"),
                   "at most N keys (default: every key, following every page)")(
      "page-size", po::value<std::string>()->value_name("N"),
      "keys per request, 1 to 10000 (default 1000)")("keys-only", po::bool_switch(),
                                                     "print the keys, not their values");
  DefineReadLevel(d);
}

// --- Conditions of single-key writes ----------------------------------------

Status Conditions(const Args& args, bool prefix, Query* q) {
  if (prefix) {
    if (args.Has("if-mod-revision") || args.Has("if-version") || args.Flag("create-only")) {
      return Status::Usage(
          "--if-mod-revision and --if-version take one key; with --prefix use "
          "--if-max-mod-revision");
    }
    uint64_t n = 0;
    if (Status s = args.Number("if-max-mod-revision", &n); !s.ok()) return s;
    if (args.Has("if-max-mod-revision")) q->Add("if_max_mod_revision", std::to_string(n));
    return Status::Ok();
  }
  if (args.Has("if-max-mod-revision")) {
    return Status::Usage("--if-max-mod-revision needs --prefix");
  }
  uint64_t n = 0;
  if (Status s = args.Number("if-mod-revision", &n); !s.ok()) return s;
  if (args.Has("if-mod-revision")) q->Add("if_mod_revision", std::to_string(n));
  if (args.Flag("create-only") && args.Has("if-version")) {
    return Status::Usage("--create-only is --if-version 0: give one of them");
  }
  if (Status s = args.Number("if-version", &n); !s.ok()) return s;
  if (args.Has("if-version")) q->Add("if_version", std::to_string(n));
  if (args.Flag("create-only")) q->Add("if_version", "0");
  return Status::Ok();
}

void DefineConditions(po::options_description* d) {
  d->add_options()("if-mod-revision", po::value<std::string>()->value_name("N"),
                   "only if the key's mod_revision is N (its last write)")(
      "if-version", po::value<std::string>()->value_name("N"),
      "only if the key's version is N (0: it does not exist)");
}

}  // namespace

// --- get ---------------------------------------------------------------------

void DefineGet(po::options_description* d) {
  d->add_options()("prefix", po::bool_switch(), "every key under KEY (as `list KEY`)");
  DefineListFlags(d);
}

Status RunGet(Context& ctx, const Args& args) {
  const std::string key = args.String("KEY");
  if (args.Flag("prefix")) return List(ctx, args, Listing::Prefix(key));
  if (key.empty()) return Status::Usage("KEY is empty (an empty prefix needs --prefix)");
  if (args.Has("limit") || args.Has("page-size")) {
    return Status::Usage("--limit and --page-size need --prefix");
  }
  Query q;
  if (Status s = ReadLevel(args, &q); !s.ok()) return s;
  json::object kv;
  std::string raw;
  Status s =
      Call(ctx, {verb::get, "/v1/kv/" + PathEscape(key) + q.str()}, "key " + Quote(key), &kv, &raw);
  if (!s.ok()) return s;
  if (ctx.json()) {
    ctx.out() << raw << "\n";
  } else {
    ctx.out() << (args.Flag("keys-only") ? KeyOf(kv) : ValueOf(kv)) << "\n";
  }
  return Status::Ok();
}

// --- put ---------------------------------------------------------------------

void DefinePut(po::options_description* d) {
  d->add_options()("lease", po::value<std::string>()->value_name("ID"),
                   "attach the key to a lease (deleted when it ends)");
  DefineConditions(d);
  d->add_options()("create-only", po::bool_switch(), "only if the key does not exist")(
      "prev-kv", po::bool_switch(), "also print the key as it was before");
}

Status RunPut(Context& ctx, const Args& args) {
  const std::string key = args.String("KEY");
  if (key.empty()) return Status::Usage("KEY is empty");
  std::string value = args.String("VALUE");
  if (value == "-") {
    if (Status s = ReadStdin(kMaxInputBytes, "the value on stdin", &value); !s.ok()) return s;
  }
  Query q;
  if (Status s = Conditions(args, false, &q); !s.ok()) return s;
  if (args.Flag("prev-kv")) q.Add("prev_kv");
  json::object body;
  SetBytes(&body, "value", value);
  uint64_t lease = 0;
  if (Status s = args.Number("lease", &lease, 1); !s.ok()) return s;
  if (lease > 0) body["lease"] = lease;
  json::object answer;
  std::string raw;
  Status s = Call(ctx,
                  {verb::put, "/v1/kv/" + PathEscape(key) + q.str(), json::serialize(body),
                   Retry::kIfNotApplied},
                  "key " + Quote(key), &answer, &raw);
  if (!s.ok()) return s;
  if (ctx.json()) {
    ctx.out() << raw << "\n";
    return Status::Ok();
  }
  ctx.out() << "OK (revision " << NumberOf(answer, "revision") << ")\n";
  if (args.Flag("prev-kv")) {
    const json::value* prev = answer.if_contains("prev_kv");
    if (prev && prev->is_object()) {
      ctx.out() << "previous value:\n" << ValueOf(prev->get_object()) << "\n";
    } else {
      ctx.out() << "no previous value\n";
    }
  }
  return Status::Ok();
}

// --- del ---------------------------------------------------------------------

void DefineDel(po::options_description* d) {
  d->add_options()("prefix", po::bool_switch(), "every key under KEY")(
      "limit", po::value<std::string>()->value_name("N"),
      "with --prefix: the first N keys only (without it, a prefix of more than the server's "
      "--max-delete-keys is refused)");
  DefineConditions(d);
  d->add_options()("if-max-mod-revision", po::value<std::string>()->value_name("N"),
                   "with --prefix: only if no key under it has a mod_revision above N")(
      "prev-kv", po::bool_switch(), "also print the deleted keys and values");
}

Status RunDel(Context& ctx, const Args& args) {
  const std::string key = args.String("KEY");
  const bool prefix = args.Flag("prefix");
  if (key.empty() && !prefix) return Status::Usage("KEY is empty (every key needs --prefix)");
  Query q;
  if (prefix) q.Add("prefix");
  if (Status s = Conditions(args, prefix, &q); !s.ok()) return s;
  uint64_t limit = 0;
  if (Status s = args.Number("limit", &limit, 1); !s.ok()) return s;
  if (limit > 0 && !prefix) return Status::Usage("--limit needs --prefix");
  if (limit > 0) q.Add("limit", std::to_string(limit));
  if (args.Flag("prev-kv")) q.Add("prev_kv");
  json::object answer;
  std::string raw;
  const std::string subject = prefix ? "the keys under " + Quote(key) : "key " + Quote(key);
  Status s =
      Call(ctx, {verb::delete_, "/v1/kv/" + PathEscape(key) + q.str(), "", Retry::kIfNotApplied},
           subject, &answer, &raw);
  if (!s.ok()) return s;
  if (ctx.json()) {
    ctx.out() << raw << "\n";
    return Status::Ok();
  }
  ctx.out() << NumberOf(answer, "deleted") << "\n";
  if (auto* prev = answer.if_contains("prev_kvs"); prev && prev->is_array()) {
    PrintKvs(ctx.out(), prev->get_array(), false);
  }
  if (BoolOf(answer, "more")) {
    std::cerr << "raftkvctl: more keys remain under " << Quote(key) << "\n";
  }
  return Status::Ok();
}

// --- list and range ----------------------------------------------------------

void DefineList(po::options_description* d) { DefineListFlags(d); }

Status RunList(Context& ctx, const Args& args) {
  return List(ctx, args, Listing::Prefix(args.String("PREFIX")));
}

Status RunRange(Context& ctx, const Args& args) {
  const Listing l = Listing::Range(args.String("FROM"), args.String("TO"));
  if (l.from.empty()) return Status::Usage("FROM is empty (list every key with `list`)");
  if (l.to <= l.from) return Status::Usage("TO must sort after FROM (the range is [FROM, TO))");
  return List(ctx, args, l);
}

// --- txn ---------------------------------------------------------------------

namespace {

// Whether a txn body writes: any put or delete in either branch.
bool TxnWrites(const json::object& txn) {
  for (const char* branch : {"success", "failure"}) {
    const json::value* ops = txn.if_contains(branch);
    if (!ops || !ops->is_array()) continue;
    for (const json::value& op : ops->get_array()) {
      if (op.is_object() &&
          (op.get_object().contains("put") || op.get_object().contains("delete"))) {
        return true;
      }
    }
  }
  return false;
}

void PrintTxnResult(std::ostream& out, const json::object& result) {
  if (auto* put = result.if_contains("put"); put && put->is_object()) {
    const json::value* kv = put->get_object().if_contains("kv");
    out << "put " << (kv && kv->is_object() ? KeyOf(kv->get_object()) : "") << "\n";
  } else if (auto* del = result.if_contains("delete"); del && del->is_object()) {
    out << "deleted " << NumberOf(del->get_object(), "deleted") << "\n";
  } else if (auto* get = result.if_contains("get"); get && get->is_object()) {
    const json::value* kv = get->get_object().if_contains("kv");
    if (kv && kv->is_object()) {
      PrintKvs(out, json::array{*kv},
               !kv->get_object().contains("value") && !kv->get_object().contains("value_b64"));
    } else {
      out << "(not found)\n";
    }
  } else if (auto* range = result.if_contains("range"); range && range->is_object()) {
    const json::object& r = range->get_object();
    if (r.contains("count")) out << "count " << NumberOf(r, "count") << "\n";
    if (auto* kvs = r.if_contains("kvs"); kvs && kvs->is_array()) {
      for (const json::value& kv : kvs->get_array()) {
        if (!kv.is_object()) continue;
        PrintKvs(out, json::array{kv},
                 !kv.get_object().contains("value") && !kv.get_object().contains("value_b64"));
      }
    }
  }
}

}  // namespace

void DefineTxn(po::options_description* d) { DefineReadLevel(d); }

Status RunTxn(Context& ctx, const Args& args) {
  const std::string file = args.String("FILE", "-");
  std::string text;
  Status read = file == "-" ? ReadStdin(kMaxInputBytes, "the transaction on stdin", &text)
                            : ReadFile(file, kMaxInputBytes, &text);
  if (!read.ok()) return read;
  const std::string source = file == "-" ? "stdin" : file;
  error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return Status::Usage("txn: " + source + " is not valid JSON: " + ec.message());
  if (!v.is_object()) return Status::Usage("txn: " + source + " is not a JSON object");
  Query level;
  if (Status s = ReadLevel(args, &level); !s.ok()) return s;
  const bool writes = TxnWrites(v.get_object());
  if (writes && !level.empty()) {
    return Status::Usage("--stale, --rev and --max-staleness are for transactions without writes");
  }
  json::object answer;
  std::string raw;
  Status s = Call(
      ctx,
      {verb::post, "/v1/txn" + level.str(), text, writes ? Retry::kIfNotApplied : Retry::kAlways},
      "the transaction", &answer, &raw);
  if (!s.ok()) return s;
  const bool succeeded = BoolOf(answer, "succeeded");
  if (ctx.json()) {
    ctx.out() << raw << "\n";
  } else {
    ctx.out() << (succeeded ? "SUCCESS" : "FAILURE") << " (revision "
              << NumberOf(answer, "revision") << ")\n";
    if (auto* results = answer.if_contains("results"); results && results->is_array()) {
      for (const json::value& r : results->get_array()) {
        if (r.is_object()) PrintTxnResult(ctx.out(), r.get_object());
      }
    }
  }
  if (!succeeded) {
    return Status(Exit::kCompareFailed,
                  "compare failed: the transaction's compares did not hold (the failure branch "
                  "ran)");
  }
  return Status::Ok();
}

}  // namespace raftkv::ctl
