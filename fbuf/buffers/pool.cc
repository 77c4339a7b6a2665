// The public Pool handle: a shared reference to its PoolCore.
#include "fbuf/pool.h"

#include "fbuf/base/assert.h"
#include "fbuf/buffers/pool_core.h"

namespace fbuf {

const char* to_string(Policy p) noexcept {
  switch (p) {
    case Policy::kVolatile: return "volatile";
    case Policy::kReadOnly: return "read_only";
    case Policy::kCopyOnWrite: return "copy_on_write";
  }
  return "unknown";
}

Pool::Pool(PoolOptions options) : core_(std::make_shared<detail::PoolCore>(std::move(options))) {}
Pool::~Pool() = default;
Pool::Pool(const Pool&) noexcept = default;
Pool& Pool::operator=(const Pool&) noexcept = default;
Pool::Pool(Pool&&) noexcept = default;
Pool& Pool::operator=(Pool&&) noexcept = default;

// A moved-from Pool refers to no pool: the hot-path calls say kClosed, the
// others treat it as the caller's mistake.
Result<Buffer> Pool::try_allocate(std::size_t size) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->try_allocate(size);
}
Result<Buffer> Pool::allocate(std::size_t size, std::chrono::nanoseconds timeout) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->allocate(size, timeout);
}
PoolStats Pool::stats() const { return core_ ? core_->stats() : PoolStats{}; }
const PoolOptions& Pool::options() const noexcept {
  FBUF_REQUIRE(core_ != nullptr, "options() of a moved-from Pool");
  return core_->options();
}
std::size_t Pool::max_buffer_size() const noexcept { return options().classes.back().buffer_size; }
std::size_t Pool::sealed_copy_size() const noexcept { return core_ ? core_->sealed_copy_size() : 0; }

}  // namespace fbuf
