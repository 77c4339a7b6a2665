// Where a View goes back to when it is dropped: the pool itself (receiver
// in the owner's process) or a return ring (receiver in another process).
// Private to the library; the public View only names it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "fbuf/buffer.h"

namespace fbuf::detail {

// A pool of another process whose views this process may forward (ipc/,
// docs/design.md "The path"); only named here.
class Upstream;

class ViewOwner {
 public:
  virtual ~ViewOwner() = default;
  virtual void release(std::uint32_t pool, std::uint32_t index, std::uint32_t generation) noexcept = 0;
  // The pool these views may be forwarded from; none for views of a pool
  // of this process.
  virtual std::shared_ptr<Upstream> upstream() noexcept { return {}; }
};

// The one way to make a View: only channel implementations do.
struct ViewAccess {
  static View make(std::shared_ptr<ViewOwner> owner, const std::byte* data, std::size_t size,
                   std::uint32_t pool, std::uint32_t index, std::uint32_t generation) noexcept {
    View v;
    v.owner_ = std::move(owner);
    v.data_ = data;
    v.size_ = size;
    v.pool_ = pool;
    v.index_ = index;
    v.generation_ = generation;
    return v;
  }
  // What a forwarding send needs of a View it is handed.
  static ViewOwner* owner(const View& v) noexcept { return v.owner_.get(); }
  static std::uint32_t generation(const View& v) noexcept { return v.generation_; }
};

}  // namespace fbuf::detail
