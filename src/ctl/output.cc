#include "output.h"

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>

namespace raftkv::ctl {

namespace json = boost::json;

Status ParseObject(const Reply& reply, json::object* out) {
  error_code ec;
  json::value v = json::parse(reply.body, ec);
  if (ec || !v.is_object()) {
    return Status::Error(reply.endpoint + " answered " + std::to_string(reply.status) +
                         " with a body that is not a JSON object: " + reply.body.substr(0, 200));
  }
  *out = std::move(v.get_object());
  return Status::Ok();
}

namespace {

// The key a 412 says holds now, for the message.
std::string CurrentKv(const json::object& body) {
  const json::value* kv = body.if_contains("kv");
  if (!kv || !kv->is_object()) return "; the key does not exist";
  const json::object& o = kv->get_object();
  return "; the key now has mod_revision " + std::to_string(NumberOf(o, "mod_revision")) +
         ", version " + std::to_string(NumberOf(o, "version"));
}

}  // namespace

std::string ErrorCode(const Reply& reply) {
  json::object body;
  return ParseObject(reply, &body).ok() ? StringOf(body, "code") : "";
}

std::string ReplyDetail(const Reply& reply) {
  json::object body;
  std::string code, error;
  if (ParseObject(reply, &body).ok()) {
    code = StringOf(body, "code");
    error = StringOf(body, "error");
  }
  return std::to_string(reply.status) + (code.empty() ? "" : " " + code) +
         (error.empty() ? "" : ": " + error) + " (from " + reply.endpoint + ")";
}

Status ReplyError(const Reply& reply, std::string_view subject, Retry retry) {
  json::object body;
  std::string code;
  if (ParseObject(reply, &body).ok()) code = StringOf(body, "code");
  const std::string what = std::string(subject);
  const std::string detail = ReplyDetail(reply);
  if (code == "key_not_found") return Status(Exit::kNotFound, "not found: " + what);
  if (code == "lease_not_found") {
    return Status(Exit::kNotFound,
                  "not found: " + (what.starts_with("lease") ? what : "the lease"));
  }
  if (code == "member_not_found") {
    return Status(Exit::kNotFound,
                  "not found: " + (what.starts_with("member") ? what : "the member"));
  }
  if (reply.status == 412) {
    return Status(Exit::kCompareFailed,
                  "compare failed: the condition on " + what + " does not hold" + CurrentKv(body));
  }
  if (reply.status == 410) return Status(Exit::kCompacted, "compacted: " + detail);
  if (reply.status == 503) return Status(Exit::kUnavailable, "unavailable: " + detail);
  if (reply.status == 504) {
    // A write that timed out may still be applied: never "not applied" (5),
    // which would invite a script to send it again.
    if (retry == Retry::kIfNotApplied) {
      return Status(Exit::kOutcomeUnknown,
                    "outcome unknown: the write may or may not have been applied: " + detail);
    }
    return Status(Exit::kUnavailable, "unavailable: " + detail);
  }
  return Status::Error("the server refused " + what + ": " + detail);
}

Status Call(Context& ctx, const Request& request, std::string_view subject, json::object* body,
            std::string* raw) {
  Reply reply;
  if (Status s = ctx.client().Send(request, &reply); !s.ok()) return s;
  if (reply.status < 200 || reply.status > 299) {
    if (reply.status == 412 && ctx.json()) ctx.out() << reply.body << "\n";
    return ReplyError(reply, subject, request.retry);
  }
  if (raw) *raw = reply.body;
  return ParseObject(reply, body);
}

std::string KeyOf(const json::object& kv) {
  if (auto* k = kv.if_contains("key"); k && k->is_string()) return std::string(k->get_string());
  if (auto* k = kv.if_contains("key_b64"); k && k->is_string()) {
    return Base64Decode(k->get_string()).value_or("");
  }
  return "";
}

std::string ValueOf(const json::object& kv) {
  if (auto* v = kv.if_contains("value"); v && v->is_string()) return std::string(v->get_string());
  if (auto* v = kv.if_contains("value_b64"); v && v->is_string()) {
    return Base64Decode(v->get_string()).value_or("");
  }
  return "";
}

uint64_t NumberOf(const json::object& o, std::string_view field) {
  const json::value* v = o.if_contains(field);
  if (!v) return 0;
  if (v->is_uint64()) return v->get_uint64();
  if (v->is_int64() && v->get_int64() >= 0) return static_cast<uint64_t>(v->get_int64());
  return 0;
}

bool BoolOf(const json::object& o, std::string_view field) {
  const json::value* v = o.if_contains(field);
  return v && v->is_bool() && v->get_bool();
}

std::string StringOf(const json::object& o, std::string_view field) {
  const json::value* v = o.if_contains(field);
  return v && v->is_string() ? std::string(v->get_string()) : "";
}

void SetBytes(json::object* o, std::string_view field, std::string_view bytes) {
  if (IsValidUtf8(bytes)) {
    (*o)[field] = bytes;
  } else {
    (*o)[std::string(field) + "_b64"] = Base64Encode(bytes);
  }
}

Status FlushOutput(std::ostream& out) {
  errno = 0;
  out.flush();
  if (out) return Status::Ok();
  // errno is the failed write's when the flush failed; 0 when an earlier
  // write had already failed (the stream then refuses to flush): stdio,
  // which holds std::cout's bytes, is asked once more for the reason.
  int err = errno;
  if (err == 0 && &out == &std::cout && std::fflush(stdout) != 0) err = errno;
  return Status::Error(std::string("writing stdout: ") +
                       (err != 0 ? std::strerror(err) : "an earlier write failed"));
}

void PrintTable(std::ostream& out, const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); c++) width[c] = header[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < width.size(); c++) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (size_t c = 0; c < cells.size() && c < width.size(); c++) {
      s += cells[c];
      if (c + 1 < cells.size()) s += std::string(width[c] - cells[c].size() + 2, ' ');
    }
    out << s << "\n";
  };
  line(header);
  for (const auto& row : rows) line(row);
}

}  // namespace raftkv::ctl
