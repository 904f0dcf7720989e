#include "server/v1.h"

#include <boost/beast/core/detail/base64.hpp>
#include <boost/json.hpp>
#include <charconv>
#include <optional>
#include <set>

#include "kv/encoding.h"
#include "server/http_server.h"
#include "server/json.h"

namespace raftkv::server::v1 {

namespace json = boost::json;
namespace base64 = boost::beast::detail::base64;

namespace {

ApiError Invalid(std::string message) {
  return ApiError{400, "invalid_argument", std::move(message)};
}

bool ParseDecimal(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, 10);
  return ec == std::errc() && p == s.data() + s.size() && *out <= kMaxNumber;
}

// Reads the fields of one JSON object, refusing any it does not know.
class Fields {
 public:
  Fields(const json::object& o, std::string where) : o_(o), where_(std::move(where)) {}

  // A string field (or its _b64 twin). False on a wrong type or bad base64.
  bool Bytes(std::string_view name, std::optional<std::string>* out, ApiError* error) {
    used_.insert(std::string(name));
    std::string b64name = std::string(name) + "_b64";
    used_.insert(b64name);
    const json::value* plain = o_.if_contains(name);
    const json::value* b64 = o_.if_contains(b64name);
    if (plain && b64)
      return Fail(error, "both \"" + std::string(name) + "\" and \"" + b64name + "\"");
    if (plain) {
      if (!plain->is_string()) return Fail(error, "\"" + std::string(name) + "\" must be a string");
      *out = std::string(plain->get_string());
    } else if (b64) {
      std::string decoded;
      if (!b64->is_string() || !Unbase64(b64->get_string(), &decoded)) {
        return Fail(error, "\"" + b64name + "\" must be a base64 string");
      }
      *out = std::move(decoded);
    }
    return true;
  }

  bool Number(std::string_view name, uint64_t* out, ApiError* error) {
    used_.insert(std::string(name));
    const json::value* v = o_.if_contains(name);
    if (!v || v->is_null()) return true;
    if (v->is_uint64() && v->get_uint64() <= kMaxNumber) {
      *out = v->get_uint64();
      return true;
    }
    if (v->is_int64() && v->get_int64() >= 0 &&
        static_cast<uint64_t>(v->get_int64()) <= kMaxNumber) {
      *out = static_cast<uint64_t>(v->get_int64());
      return true;
    }
    return Fail(error, "\"" + std::string(name) + "\" must be an integer from 0 to 2^53-1");
  }

  bool Bool(std::string_view name, bool* out, ApiError* error) {
    used_.insert(std::string(name));
    const json::value* v = o_.if_contains(name);
    if (!v || v->is_null()) return true;
    if (!v->is_bool()) return Fail(error, "\"" + std::string(name) + "\" must be true or false");
    *out = v->get_bool();
    return true;
  }

  bool String(std::string_view name, std::optional<std::string>* out, ApiError* error) {
    used_.insert(std::string(name));
    const json::value* v = o_.if_contains(name);
    if (!v || v->is_null()) return true;
    if (!v->is_string()) return Fail(error, "\"" + std::string(name) + "\" must be a string");
    *out = std::string(v->get_string());
    return true;
  }

  // After every field was read: refuses the ones nobody asked for.
  bool NoOthers(ApiError* error) {
    for (const auto& kv : o_) {
      std::string k(kv.key());
      if (!used_.contains(k)) return Fail(error, "unknown field \"" + k + "\"");
    }
    return true;
  }

 private:
  bool Fail(ApiError* error, std::string message) {
    *error = Invalid(where_ + ": " + message);
    return false;
  }

  const json::object& o_;
  std::string where_;
  std::set<std::string> used_;
};

// The key or keys an op or compare names: "key" (one key), "prefix" (every
// key under it; "" is every key) or "key" + "range_end" ([key, range_end)).
bool ParseKeys(Fields* f, const Limits& limits, bool allow_range, bool require_one, Arena* arena,
               kv::KeyRange* out, ApiError* error, const std::string& where) {
  std::optional<std::string> key, prefix, end;
  if (!f->Bytes("key", &key, error) || !f->Bytes("prefix", &prefix, error) ||
      !f->Bytes("range_end", &end, error)) {
    return false;
  }
  if (key && prefix) {
    *error = Invalid(where + ": both \"key\" and \"prefix\"");
    return false;
  }
  if (prefix || end) {
    if (!allow_range || require_one) {
      *error = Invalid(where + ": takes one \"key\", not a range");
      return false;
    }
    if (prefix && end) {
      *error = Invalid(where + ": both \"prefix\" and \"range_end\"");
      return false;
    }
    if (end && (!key || end->empty() || *end <= *key)) {
      *error = Invalid(where + ": \"range_end\" must follow a \"key\" and sort after it");
      return false;
    }
    std::string_view start = arena->Keep(prefix ? *prefix : *key);
    if (start.size() > limits.max_key_bytes) {
      *error =
          Invalid(where + ": key longer than " + std::to_string(limits.max_key_bytes) + " bytes");
      return false;
    }
    *out = kv::KeyRange{start, arena->Keep(prefix ? kv::PrefixEnd(*prefix) : *end), true};
    return true;
  }
  if (!key || key->empty()) {
    *error =
        Invalid(where + ": needs a nonempty \"key\"" + (allow_range ? " or a \"prefix\"" : ""));
    return false;
  }
  if (key->size() > limits.max_key_bytes) {
    *error =
        Invalid(where + ": key longer than " + std::to_string(limits.max_key_bytes) + " bytes");
    return false;
  }
  *out = kv::KeyRange{arena->Keep(std::move(*key)), "", false};
  return true;
}

bool ParseCompare(const json::value& v, const Limits& limits, Arena* arena, kv::Compare* c,
                  ApiError* error, const std::string& where) {
  if (!v.is_object()) {
    *error = Invalid(where + ": must be an object");
    return false;
  }
  Fields f(v.get_object(), where);
  if (!ParseKeys(&f, limits, true, false, arena, &c->keys, error, where)) return false;
  std::optional<std::string> target, op;
  if (!f.String("target", &target, error) || !f.String("op", &op, error)) return false;
  static const std::pair<const char*, kv::Target> kTargets[] = {
      {"value", kv::Target::kValue},
      {"version", kv::Target::kVersion},
      {"create_revision", kv::Target::kCreateRevision},
      {"mod_revision", kv::Target::kModRevision},
      {"lease", kv::Target::kLease}};
  static const std::pair<const char*, kv::CmpOp> kOps[] = {{"=", kv::CmpOp::kEqual},
                                                           {"!=", kv::CmpOp::kNotEqual},
                                                           {"<", kv::CmpOp::kLess},
                                                           {">", kv::CmpOp::kGreater}};
  bool found = false;
  for (const auto& [name, t] : kTargets) {
    if (target && *target == name) c->target = t, found = true;
  }
  if (!found) {
    *error = Invalid(where +
                     ": \"target\" must be one of value, version, create_revision, "
                     "mod_revision, lease");
    return false;
  }
  found = false;
  for (const auto& [name, o] : kOps) {
    if (op && *op == name) c->op = o, found = true;
  }
  if (!found) {
    *error = Invalid(where + ": \"op\" must be one of =, !=, <, >");
    return false;
  }
  if (c->target == kv::Target::kValue) {
    std::optional<std::string> value;
    if (!f.Bytes("value", &value, error)) return false;
    if (!value) {
      *error = Invalid(where + ": a value compare needs a string \"value\"");
      return false;
    }
    c->value = arena->Keep(std::move(*value));
  } else {
    if (!v.get_object().contains("value")) {
      *error = Invalid(where + ": needs a number \"value\"");
      return false;
    }
    if (!f.Number("value", &c->number, error)) return false;
  }
  return f.NoOthers(error);
}

bool ParseOp(const json::value& v, const Limits& limits, Arena* arena, kv::TxnOp* op,
             ApiError* error, const std::string& where) {
  if (!v.is_object() || v.get_object().size() != 1) {
    *error = Invalid(where + ": must be an object with one of put, delete, get, range");
    return false;
  }
  std::string_view name = v.get_object().begin()->key();
  const json::value& body = v.get_object().begin()->value();
  std::string w = where + "." + std::string(name);
  if (!body.is_object()) {
    *error = Invalid(w + ": must be an object");
    return false;
  }
  Fields f(body.get_object(), w);
  bool prev_kv = false, keys_only = false, count_only = false;
  if (name == "put") {
    op->kind = kv::TxnOpKind::kPut;
    std::optional<std::string> value;
    if (!ParseKeys(&f, limits, false, true, arena, &op->keys, error, w) ||
        !f.Bytes("value", &value, error) || !f.Number("lease", &op->lease, error) ||
        !f.Bool("prev_kv", &prev_kv, error)) {
      return false;
    }
    if (!value) {
      *error = Invalid(w + ": needs a \"value\" (or \"value_b64\")");
      return false;
    }
    if (value->size() > limits.max_value_bytes) {
      *error =
          ApiError{413, "value_too_large",
                   w + ": value longer than " + std::to_string(limits.max_value_bytes) + " bytes"};
      return false;
    }
    op->value = arena->Keep(std::move(*value));
  } else if (name == "delete") {
    op->kind = kv::TxnOpKind::kDelete;
    if (!ParseKeys(&f, limits, true, false, arena, &op->keys, error, w) ||
        !f.Bool("prev_kv", &prev_kv, error) || !f.Number("limit", &op->limit, error)) {
      return false;
    }
    if (op->keys.range && op->limit == 0) op->max_keys = limits.max_delete_keys;
  } else if (name == "get") {
    op->kind = kv::TxnOpKind::kGet;
    if (!ParseKeys(&f, limits, false, true, arena, &op->keys, error, w) ||
        !f.Bool("keys_only", &keys_only, error)) {
      return false;
    }
  } else if (name == "range") {
    op->kind = kv::TxnOpKind::kRange;
    op->limit = limits.default_range_limit;
    if (!ParseKeys(&f, limits, true, false, arena, &op->keys, error, w) ||
        !f.Number("limit", &op->limit, error) || !f.Bool("keys_only", &keys_only, error) ||
        !f.Bool("count_only", &count_only, error)) {
      return false;
    }
    if (!op->keys.range)
      op->keys = kv::KeyRange{op->keys.key, arena->Keep(std::string(op->keys.key) + '\0'), true};
    if (op->limit == 0 || op->limit > limits.max_range_limit) op->limit = limits.max_range_limit;
    op->max_bytes = limits.max_range_bytes;
  } else {
    *error =
        Invalid(where + ": unknown op \"" + std::string(name) + "\" (put, delete, get, range)");
    return false;
  }
  op->flags = (prev_kv ? kv::kWantPrevKv : 0) | (keys_only ? kv::kKeysOnly : 0) |
              (count_only ? kv::kCountOnly : 0);
  return f.NoOthers(error);
}

bool ParseOps(const json::object& o, std::string_view name, const Limits& limits, Arena* arena,
              std::vector<kv::TxnOp>* out, ApiError* error) {
  const json::value* v = o.if_contains(name);
  if (!v || v->is_null()) return true;
  if (!v->is_array()) {
    *error = Invalid("\"" + std::string(name) + "\" must be an array");
    return false;
  }
  const json::array& a = v->get_array();
  if (a.size() > limits.max_txn_ops) {
    *error =
        ApiError{400, "too_many_ops",
                 "\"" + std::string(name) + "\" has " + std::to_string(a.size()) +
                     " ops; at most " + std::to_string(limits.max_txn_ops) + " (--max-txn-ops)"};
    return false;
  }
  out->resize(a.size());
  for (size_t i = 0; i < a.size(); i++) {
    if (!ParseOp(a[i], limits, arena, &(*out)[i], error,
                 std::string(name) + "[" + std::to_string(i) + "]")) {
      return false;
    }
  }
  return CheckBranch(*out, limits, name, error);
}

bool IsWrite(const kv::TxnOp& op) {
  return op.kind == kv::TxnOpKind::kPut || op.kind == kv::TxnOpKind::kDelete;
}

}  // namespace

// --- Query -------------------------------------------------------------------

bool Query::Parse(std::string_view query, std::string* error) {
  params_.clear();
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view param = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (param.empty()) continue;
    size_t eq = param.find('=');
    std::string name, value;
    if (!PercentDecode(param.substr(0, eq), &name) ||
        (eq != std::string_view::npos && !PercentDecode(param.substr(eq + 1), &value))) {
      *error = "malformed percent-encoding in the query";
      return false;
    }
    if (!Has(name)) params_.emplace_back(std::move(name), std::move(value));
  }
  return true;
}

bool Query::Has(std::string_view name) const { return Get(name).has_value(); }

std::optional<std::string_view> Query::Get(std::string_view name) const {
  for (const auto& [n, v] : params_) {
    if (n == name) return std::string_view(v);
  }
  return std::nullopt;
}

bool Query::Flag(std::string_view name) const {
  auto v = Get(name);
  return v && *v != "false" && *v != "0" && *v != "no";
}

bool Query::Number(std::string_view name, uint64_t* out, ApiError* error) const {
  auto v = Get(name);
  if (!v) return true;
  if (!ParseDecimal(*v, out)) {
    *error = Invalid("query parameter \"" + std::string(name) +
                     "\" must be an integer from 0 to 2^53-1");
    return false;
  }
  return true;
}

bool Query::Duration(std::string_view name, uint64_t* ms, ApiError* error) const {
  auto v = Get(name);
  if (!v) return true;
  std::string_view s = *v;
  uint64_t scale = 0;
  if (s.ends_with("ms")) {
    scale = 1, s.remove_suffix(2);
  } else if (s.ends_with("s")) {
    scale = 1000, s.remove_suffix(1);
  } else if (s.ends_with("m")) {
    scale = 60'000, s.remove_suffix(1);
  }
  uint64_t n = 0;
  if (scale == 0 || !ParseDecimal(s, &n) || n > kMaxNumber / scale) {
    *error = Invalid("query parameter \"" + std::string(name) +
                     "\" must be a duration such as 500ms, 2s or 1m");
    return false;
  }
  *ms = n * scale;
  return true;
}

std::optional<std::string> Query::Unknown(const std::vector<std::string_view>& known) const {
  for (const auto& [n, v] : params_) {
    bool ok = false;
    for (std::string_view k : known) ok = ok || n == k;
    if (!ok) return n;
  }
  return std::nullopt;
}

// --- Bodies -----------------------------------------------------------------

namespace {

// Parses a body that must be a JSON object nested at most `depth` deep.
bool ParseObject(std::string_view body, unsigned depth, std::string_view shape, json::value* v,
                 ApiError* error) {
  json::parse_options po;
  po.max_depth = depth;
  boost::system::error_code ec;
  *v = json::parse(body, ec, {}, po);
  if (ec) {
    *error = Invalid("malformed JSON body: " + ec.message());
    return false;
  }
  if (!v->is_object()) {
    *error = Invalid("the body must be a JSON object " + std::string(shape));
    return false;
  }
  return true;
}

}  // namespace

bool ParseTxn(std::string_view body, const Limits& limits, Arena* arena, TxnRequest* out,
              ApiError* error) {
  json::value v;
  if (!ParseObject(body, 16, R"({"compare":[..],"success":[..],"failure":[..]})", &v, error)) {
    return false;
  }
  const json::object& o = v.get_object();
  for (const auto& kv : o) {
    if (kv.key() != "compare" && kv.key() != "success" && kv.key() != "failure") {
      *error = Invalid("unknown field \"" + std::string(kv.key()) + "\"");
      return false;
    }
  }
  if (const json::value* c = o.if_contains("compare"); c && !c->is_null()) {
    if (!c->is_array()) {
      *error = Invalid("\"compare\" must be an array");
      return false;
    }
    if (c->get_array().size() > limits.max_txn_ops) {
      *error =
          ApiError{400, "too_many_ops",
                   "\"compare\" has " + std::to_string(c->get_array().size()) + " items; at most " +
                       std::to_string(limits.max_txn_ops) + " (--max-txn-ops)"};
      return false;
    }
    out->compares.resize(c->get_array().size());
    for (size_t i = 0; i < out->compares.size(); i++) {
      if (!ParseCompare(c->get_array()[i], limits, arena, &out->compares[i], error,
                        "compare[" + std::to_string(i) + "]")) {
        return false;
      }
    }
  }
  if (!ParseOps(o, "success", limits, arena, &out->success, error) ||
      !ParseOps(o, "failure", limits, arena, &out->failure, error)) {
    return false;
  }
  out->writes = false;
  for (const auto* ops : {&out->success, &out->failure}) {
    for (const kv::TxnOp& op : *ops) out->writes = out->writes || IsWrite(op);
  }
  return true;
}

bool CheckBranch(const std::vector<kv::TxnOp>& ops, const Limits& limits, std::string_view name,
                 ApiError* error) {
  if (ops.size() > limits.max_txn_ops) {
    *error = ApiError{400, "too_many_ops",
                      std::string(name) + " has " + std::to_string(ops.size()) + " ops; at most " +
                          std::to_string(limits.max_txn_ops) + " (--max-txn-ops)"};
    return false;
  }
  // Quadratic, over at most max_txn_ops writes: a put's key may appear in
  // no other put and no delete of the branch (etcd's rule; deletes may
  // overlap each other).
  for (size_t i = 0; i < ops.size(); i++) {
    if (ops[i].kind != kv::TxnOpKind::kPut) continue;
    for (size_t j = 0; j < ops.size(); j++) {
      if (j == i || !IsWrite(ops[j])) continue;
      if (ops[j].keys.Overlaps(ops[i].keys)) {
        *error = ApiError{400, "duplicate_key",
                          std::string(name) + ": key written more than once in one branch"};
        return false;
      }
    }
  }
  return true;
}

bool ParseLeaseGrant(std::string_view body, uint64_t* ttl_s, uint64_t* id, ApiError* error) {
  json::value v;
  if (!ParseObject(body, 2, R"({"ttl":10})", &v, error)) return false;
  Fields f(v.get_object(), "body");
  *ttl_s = 0;
  *id = 0;
  if (!f.Number("ttl", ttl_s, error) || !f.Number("id", id, error) || !f.NoOthers(error)) {
    return false;
  }
  if (*ttl_s == 0) {
    *error = Invalid("body: needs a \"ttl\" in seconds, at least 1");
    return false;
  }
  return true;
}

bool ParseLeaseIds(std::string_view body, size_t max, std::vector<uint64_t>* ids, ApiError* error) {
  json::value v;
  if (!ParseObject(body, 3, R"({"ids":[1,2]})", &v, error)) return false;
  const json::object& o = v.get_object();
  const json::value* list = o.if_contains("ids");
  if (o.size() != 1 || list == nullptr || !list->is_array()) {
    *error = Invalid(R"(body: needs exactly "ids", an array of lease ids)");
    return false;
  }
  const json::array& a = list->get_array();
  if (a.size() > max) {
    *error = ApiError{400, "too_many_ids",
                      "body: more than " + std::to_string(max) +
                          " lease ids (--max-keepalive-ids); split the batch"};
    return false;
  }
  ids->clear();
  std::set<uint64_t> seen;
  for (const json::value& x : a) {
    uint64_t id = 0;
    if (x.is_uint64()) {
      id = x.get_uint64();
    } else if (x.is_int64() && x.get_int64() > 0) {
      id = static_cast<uint64_t>(x.get_int64());
    }
    if (id == 0 || id > kMaxNumber) {
      *error = Invalid("body: each lease id must be an integer from 1 to 2^53-1");
      return false;
    }
    if (seen.insert(id).second) ids->push_back(id);
  }
  return true;
}

bool ParsePutBody(std::string_view body, std::string* value, uint64_t* lease, ApiError* error) {
  json::value v;
  if (!ParseObject(body, 4, R"({"value":"..."})", &v, error)) return false;
  Fields f(v.get_object(), "body");
  std::optional<std::string> val;
  if (!f.Bytes("value", &val, error) || !f.Number("lease", lease, error) || !f.NoOthers(error)) {
    return false;
  }
  if (!val) {
    *error = Invalid("body: needs a \"value\" (or \"value_b64\")");
    return false;
  }
  *value = std::move(*val);
  return true;
}

bool ParseWatches(std::string_view body, const Limits& limits, std::vector<WatchItem>* out,
                  ApiError* error) {
  json::value v;
  if (!ParseObject(body, 4, R"({"watches":[{"key":"...","prefix":true,"rev":N}]})", &v, error)) {
    return false;
  }
  const json::object& o = v.get_object();
  const json::value* ws = o.if_contains("watches");
  if (o.size() != 1 || ws == nullptr || !ws->is_array() || ws->get_array().empty()) {
    *error = Invalid("the body must be {\"watches\":[...]} with at least one watch");
    return false;
  }
  if (ws->get_array().size() > kMaxStreamWatches) {
    *error = ApiError{400, "too_many_ops",
                      "at most " + std::to_string(kMaxStreamWatches) + " watches per stream"};
    return false;
  }
  std::set<std::string> ids;
  for (size_t i = 0; i < ws->get_array().size(); i++) {
    const json::value& w = ws->get_array()[i];
    std::string where = "watches[" + std::to_string(i) + "]";
    if (!w.is_object()) {
      *error = Invalid(where + " must be an object");
      return false;
    }
    Fields f(w.get_object(), where);
    WatchItem item;
    std::optional<std::string> id, key;
    if (!f.String("id", &id, error) || !f.Bytes("key", &key, error) ||
        !f.Bool("prefix", &item.prefix, error) || !f.Number("rev", &item.rev, error) ||
        !f.NoOthers(error)) {
      return false;
    }
    item.id = id ? *id : std::to_string(i);
    if (!ids.insert(item.id).second) {
      *error = ApiError{400, "duplicate_key", where + ": the id \"" + item.id + "\" is taken"};
      return false;
    }
    if (!key || (key->empty() && !item.prefix)) {
      *error = Invalid(where + ": needs a \"key\" (empty only with \"prefix\": true)");
      return false;
    }
    if (key->size() > limits.max_key_bytes) {
      *error =
          Invalid(where + ": key longer than " + std::to_string(limits.max_key_bytes) + " bytes");
      return false;
    }
    item.key = std::move(*key);
    out->push_back(std::move(item));
  }
  return true;
}

// --- Encodings --------------------------------------------------------------

std::string Base64(std::string_view in) {
  std::string out(base64::encoded_size(in.size()), '\0');
  out.resize(base64::encode(out.data(), in.data(), in.size()));
  return out;
}

bool Unbase64(std::string_view in, std::string* out) {
  if (in.size() % 4 != 0) return false;
  out->assign(base64::decoded_size(in.size()), '\0');
  auto [written, read] = base64::decode(out->data(), in.data(), in.size());
  (void)read;
  out->resize(written);
  // The decoder stops at the first byte outside the alphabet (or at the
  // padding): re-encoding must give the input back, which refuses stray
  // characters, bad padding and stray bits in the last character.
  return Base64(*out) == in;
}

std::string Base64Url(std::string_view in) {
  std::string s = Base64(in);
  while (!s.empty() && s.back() == '=') s.pop_back();
  for (char& c : s) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return s;
}

bool UnBase64Url(std::string_view in, std::string* out) {
  std::string s(in);
  for (char& c : s) {
    if (c == '+' || c == '/' || c == '=') return false;
    c = c == '-' ? '+' : c == '_' ? '/' : c;
  }
  while (s.size() % 4 != 0) s.push_back('=');
  return Unbase64(s, out);
}

std::string ContinueToken(std::string_view last_key, uint64_t revision) {
  std::string raw;
  kv::PutU64(&raw, revision);
  raw.append(last_key);
  return Base64Url(raw);
}

bool ParseContinueToken(std::string_view token, std::string* last_key, uint64_t* revision) {
  std::string raw;
  if (!UnBase64Url(token, &raw) || raw.size() < 9) return false;
  *revision = kv::LoadLE(raw.data(), 8);
  last_key->assign(raw, 8);
  return true;
}

// --- JSON output ------------------------------------------------------------

namespace {

void AppendU64(std::string* out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, end);
}

void AppendField(std::string* out, std::string_view name, uint64_t v) {
  out->push_back('"');
  out->append(name);
  out->append("\":");
  AppendU64(out, v);
}

void AppendBytesField(std::string* out, std::string_view name, std::string_view bytes, bool b64) {
  out->push_back('"');
  out->append(name);
  if (b64 || !IsValidUtf8(bytes)) {
    out->append("_b64\":");
    AppendJsonString(out, Base64(bytes));
  } else {
    out->append("\":");
    AppendJsonString(out, bytes);
  }
}

}  // namespace

void AppendKv(std::string* out, const kv::KeyValue& kv, bool b64, bool with_value) {
  out->push_back('{');
  AppendBytesField(out, "key", kv.key, b64);
  if (with_value) {
    out->push_back(',');
    AppendBytesField(out, "value", kv.value, b64);
  }
  out->push_back(',');
  AppendField(out, "create_revision", kv.meta.create_revision);
  out->push_back(',');
  AppendField(out, "mod_revision", kv.meta.mod_revision);
  out->push_back(',');
  AppendField(out, "version", kv.meta.version);
  out->push_back(',');
  AppendField(out, "lease", kv.meta.lease);
  out->push_back('}');
}

void AppendKvs(std::string* out, const std::vector<kv::KeyValue>& kvs, bool b64, bool with_value) {
  out->push_back('[');
  for (size_t i = 0; i < kvs.size(); i++) {
    if (i > 0) out->push_back(',');
    AppendKv(out, kvs[i], b64, with_value);
  }
  out->push_back(']');
}

void AppendEvents(std::string* out, std::span<const kv::Event* const> events, bool b64) {
  out->push_back('[');
  for (size_t i = 0; i < events.size(); i++) {
    const kv::Event& e = *events[i];
    if (i > 0) out->push_back(',');
    if (e.type == kv::Event::Type::kPut) {
      out->append("{\"type\":\"put\",\"kv\":");
      AppendKv(out, e.kv, b64);
      out->push_back('}');
      continue;
    }
    out->append("{\"type\":\"delete\",\"kv\":{");
    AppendBytesField(out, "key", e.kv.key, b64);
    out->push_back(',');
    AppendField(out, "mod_revision", e.kv.meta.mod_revision);
    out->push_back(',');
    AppendField(out, "lease", e.kv.meta.lease);
    out->push_back('}');
    if (e.cause == kv::Event::Cause::kLeaseExpired) {
      out->append(",\"cause\":\"lease_expired\"");
    } else if (e.cause == kv::Event::Cause::kLeaseRevoked) {
      out->append(",\"cause\":\"lease_revoked\"");
    }
    out->push_back('}');
  }
  out->push_back(']');
}

void AppendLease(std::string* out, uint64_t id, uint64_t ttl_ms) {
  out->push_back('{');
  AppendField(out, "id", id);
  out->push_back(',');
  AppendField(out, "ttl", TtlSeconds(ttl_ms));
  out->push_back('}');
}

void AppendIds(std::string* out, std::span<const uint64_t> ids) {
  out->push_back('[');
  for (size_t i = 0; i < ids.size(); i++) {
    if (i > 0) out->push_back(',');
    AppendU64(out, ids[i]);
  }
  out->push_back(']');
}

void AppendKeyList(std::string* out, const std::vector<std::string>& keys, bool b64) {
  bool encode = b64;
  for (const std::string& k : keys) encode = encode || !IsValidUtf8(k);
  out->append(encode ? "\"keys_b64\":[" : "\"keys\":[");
  for (size_t i = 0; i < keys.size(); i++) {
    if (i > 0) out->push_back(',');
    AppendJsonString(out, encode ? Base64(keys[i]) : std::string_view(keys[i]));
  }
  out->push_back(']');
}

std::string TxnJson(const kv::Result& r, const TxnRequest& req, bool b64) {
  const std::vector<kv::TxnOp>& ops = r.succeeded ? req.success : req.failure;
  std::string out = "{";
  AppendField(&out, "revision", r.revision);
  out.append(r.succeeded ? ",\"succeeded\":true,\"results\":["
                         : ",\"succeeded\":false,\"results\":[");
  for (size_t i = 0; i < r.ops.size() && i < ops.size(); i++) {
    const kv::OpResult& o = r.ops[i];
    bool values = (ops[i].flags & kv::kKeysOnly) == 0;
    if (i > 0) out.push_back(',');
    switch (o.kind) {
      case kv::TxnOpKind::kPut:
        out.append("{\"put\":{\"kv\":");
        AppendKv(&out, o.kv, b64);
        if (ops[i].flags & kv::kWantPrevKv) {
          out.append(",\"prev_kv\":");
          if (o.kvs.empty()) {
            out.append("null");
          } else {
            AppendKv(&out, o.kvs[0], b64);
          }
        }
        out.append("}}");
        break;
      case kv::TxnOpKind::kDelete:
        out.append("{\"delete\":{");
        AppendField(&out, "deleted", o.deleted);
        out.append(o.more ? ",\"more\":true" : ",\"more\":false");
        if (ops[i].flags & kv::kWantPrevKv) {
          out.append(",\"prev_kvs\":");
          AppendKvs(&out, o.kvs, b64);
        }
        out.append("}}");
        break;
      case kv::TxnOpKind::kGet:
        out.append("{\"get\":{\"kv\":");
        if (o.found) {
          AppendKv(&out, o.kv, b64, values);
        } else {
          out.append("null");
        }
        out.append("}}");
        break;
      case kv::TxnOpKind::kRange:
        out.append("{\"range\":{");
        if (ops[i].flags & kv::kCountOnly) {
          AppendField(&out, "count", o.count);
        } else {
          out.append("\"kvs\":");
          AppendKvs(&out, o.kvs, b64, values);
          out.append(o.more ? ",\"more\":true" : ",\"more\":false");
        }
        out.append("}}");
        break;
    }
  }
  out.append("]}");
  return out;
}

std::string ErrorJson(std::string_view code, std::string_view message, std::string_view extra) {
  std::string out = "{\"error\":";
  AppendJsonString(&out, message);
  out.append(",\"code\":");
  AppendJsonString(&out, code);
  out.append(extra);
  out.push_back('}');
  return out;
}

}  // namespace raftkv::server::v1
