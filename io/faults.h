// Failure injection for the tests of the I/O stage's fallbacks
// (tests/unit/io_reader_test.cc); never set in production. A non-zero
// value makes the named step fail with that errno, as the kernel would:
// `direct` the switch to O_DIRECT (tmpfs before Linux 6.6 says EINVAL),
// `uring_init` io_uring_queue_init (EPERM when kernel.io_uring_disabled
// is 2, ENOSYS without io_uring). Private to the library.
#pragma once

#include <atomic>

namespace fbuf::detail {

struct IoFaults {
  // relaxed: plain flags with no data behind them; tests set them before
  // the calls they are meant for, in the same thread.
  static void set_direct(int err) noexcept { direct.store(err, std::memory_order_relaxed); }
  static void set_uring_init(int err) noexcept { uring_init.store(err, std::memory_order_relaxed); }
  static std::atomic<int> direct;
  static std::atomic<int> uring_init;
};

}  // namespace fbuf::detail
