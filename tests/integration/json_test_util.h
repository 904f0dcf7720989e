// JSON helpers of the /v1 end-to-end tests (v1_test.cc, watch_test.cc).
#pragma once

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdint>
#include <string>

#include "cluster.h"

namespace raftkv::itest {

// A JSON object (an empty one, and a test failure, if it is not one).
inline boost::json::object ParseObject(const std::string& s) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(s, ec);
  EXPECT_FALSE(ec) << s;
  if (ec || !v.is_object()) return {};
  return v.as_object();
}
inline boost::json::object Obj(const HttpResponse& r) { return ParseObject(r.body); }
inline uint64_t Num(const boost::json::value& v) { return v.to_number<uint64_t>(); }
inline std::string Str(const boost::json::value& v) { return std::string(v.as_string()); }

// An error answer: status, JSON body with "error" and the stable "code".
inline void ExpectError(const HttpResponse& r, int status, const std::string& code,
                        const std::string& what) {
  EXPECT_EQ(r.status, status) << what << ": " << r.body;
  boost::json::object o = Obj(r);
  EXPECT_TRUE(o.contains("error")) << what << ": " << r.body;
  ASSERT_TRUE(o.contains("code")) << what << ": " << r.body;
  EXPECT_EQ(Str(o.at("code")), code) << what << ": " << r.body;
}

}  // namespace raftkv::itest
