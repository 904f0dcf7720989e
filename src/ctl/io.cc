#include "io.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace raftkv::ctl {

namespace {

Status ReadStream(std::FILE* f, size_t max_bytes, std::string_view what, std::string* out) {
  out->clear();
  char buf[65536];
  while (true) {
    size_t n = std::fread(buf, 1, sizeof buf, f);
    out->append(buf, n);
    if (out->size() > max_bytes) {
      return Status::Usage(std::string(what) + " holds more than " + std::to_string(max_bytes) +
                           " bytes");
    }
    if (n < sizeof buf) break;
  }
  if (std::ferror(f)) {
    return Status::Usage("cannot read " + std::string(what) + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace

Status ReadStdin(size_t max_bytes, std::string_view what, std::string* out) {
  return ReadStream(stdin, max_bytes, what, out);
}

Status ReadFile(const std::string& path, size_t max_bytes, std::string* out) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return Status::Usage("cannot open " + path + ": " + std::strerror(errno));
  Status s = ReadStream(f, max_bytes, path, out);
  std::fclose(f);
  return s;
}

}  // namespace raftkv::ctl
