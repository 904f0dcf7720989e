// Polling with a deadline, for tests that wait for a condition (never a
// bare sleep where a condition can be polled).
#pragma once

#include <chrono>
#include <functional>

namespace raftkv::itest {

// Polls `cond` every `every` until it holds (true) or `timeout` passes (false).
bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout,
             std::chrono::milliseconds every = std::chrono::milliseconds(10));

}  // namespace raftkv::itest
