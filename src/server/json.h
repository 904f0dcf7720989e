// JSON output helpers for the HTTP API, byte-compatible with the original Go
// server (gin's c.JSON, i.e. Go's encoding/json): HTML-sensitive characters
// are escaped as \u003c \u003e \u0026, U+2028/U+2029 as \u2028/\u2029,
// invalid UTF-8 becomes \ufffd, and other control characters \u00XX (\n, \r,
// \t keep their short forms). Pure functions, any thread.
#pragma once

#include <string>
#include <string_view>

namespace raftkv::server {

// Appends s as a quoted JSON string.
void AppendJsonString(std::string* out, std::string_view s);

// Whether `s` is valid UTF-8 (as Go's utf8.ValidString).
bool IsValidUtf8(std::string_view s);

// {"<field>":"<value>"}
std::string JsonObject1(std::string_view field, std::string_view value);

}  // namespace raftkv::server
