// Where a View goes back to when it is dropped: the pool itself (receiver
// in the owner's process) or a return ring (receiver in another process).
// Private to the library; the public View only names it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "fbuf/buffer.h"

namespace fbuf::detail {

class ViewOwner {
 public:
  virtual ~ViewOwner() = default;
  virtual void release(std::uint32_t pool, std::uint32_t index, std::uint32_t generation) noexcept = 0;
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
};

}  // namespace fbuf::detail
