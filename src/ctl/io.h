// Reading the user's input: stdin and files, bounded in size.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "errors.h"

namespace raftkv::ctl {

// Past the server's largest body (--max-body-bytes, 4 MiB by default) with
// room to spare: more than this is refused before anything is sent.
inline constexpr size_t kMaxInputBytes = 16 << 20;

// Reads stdin to its end (its bytes as they are). A usage error names `what`
// when it holds more than `max_bytes` or cannot be read.
Status ReadStdin(size_t max_bytes, std::string_view what, std::string* out);
// Reads a whole file; a usage error names it.
Status ReadFile(const std::string& path, size_t max_bytes, std::string* out);

}  // namespace raftkv::ctl
