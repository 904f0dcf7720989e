// Reading the server's answers and printing them: the JSON of a reply, the
// bytes of a kv object's key and value, the Status a refusal maps to (its
// exit code), and aligned text tables.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "commands.h"
#include "errors.h"
#include "http_client.h"

namespace raftkv::ctl {

// Parses a reply's body as a JSON object (an error naming the endpoint if not).
Status ParseObject(const Reply& reply, boost::json::object* out);

// An error answer's "code" ("" if it has none), and the whole of it for a
// message: "409 member_exists: 'node4' is a member already (from HOST:PORT)".
std::string ErrorCode(const Reply& reply);
std::string ReplyDetail(const Reply& reply);

// The Status for an answer that is not a 2xx: key_not_found,
// lease_not_found and member_not_found exit 3, compare_failed 4, compacted 6,
// 503 5, anything else 1. A 504 depends on `retry`, the request's class: for
// a write (Retry::kIfNotApplied) it is 7 whatever its body says (a follower
// whose leader died while forwarding answers 504 without a code, and the
// write may have been applied); only for a read (Retry::kAlways) is it 5.
// `subject` names what was asked for ("key \"a\"").
Status ReplyError(const Reply& reply, std::string_view subject, Retry retry);

// Sends a request and checks its answer: Ok with *body parsed when 2xx.
// In json mode a 412's body (the key as it is now) goes to stdout too.
Status Call(Context& ctx, const Request& request, std::string_view subject,
            boost::json::object* body, std::string* raw = nullptr);

// A kv object's key and value bytes ("key"/"value", or the *_b64 forms).
std::string KeyOf(const boost::json::object& kv);
std::string ValueOf(const boost::json::object& kv);
// A number field, 0 if absent or not a number.
uint64_t NumberOf(const boost::json::object& o, std::string_view field);
// A bool field, false if absent or not a bool.
bool BoolOf(const boost::json::object& o, std::string_view field);
// A string field, "" if absent or not a string.
std::string StringOf(const boost::json::object& o, std::string_view field);

// A JSON string for a key or value in a request body: {"key": ..} or, for
// bytes that are not UTF-8, {"key_b64": ..}. Sets `field` or `field`_b64.
void SetBytes(boost::json::object* o, std::string_view field, std::string_view bytes);

// Flushes `out` (stdout): Ok, or an error "writing stdout: <strerror>" when
// it cannot be written (a full disk, a closed pipe), so that a command whose
// output was lost never exits 0.
Status FlushOutput(std::ostream& out);

// Prints rows under a header, columns aligned with two spaces between them.
void PrintTable(std::ostream& out, const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows);

}  // namespace raftkv::ctl
