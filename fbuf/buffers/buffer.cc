#include "fbuf/buffer.h"

#include "fbuf/buffers/pool_core.h"
#include "fbuf/buffers/view_owner.h"

namespace fbuf {

void Buffer::reset() noexcept {
  if (pool_) {
    pool_->release_unsent(index_, generation_);
    pool_.reset();
  }
  data_ = nullptr;
  capacity_ = 0;
}

void Buffer::swap(Buffer& o) noexcept {
  std::swap(pool_, o.pool_);
  std::swap(data_, o.data_);
  std::swap(capacity_, o.capacity_);
  std::swap(index_, o.index_);
  std::swap(generation_, o.generation_);
}

void View::reset() noexcept {
  if (owner_) {
    owner_->release(pool_, index_, generation_);
    owner_.reset();
  }
  data_ = nullptr;
  size_ = 0;
}

void View::swap(View& o) noexcept {
  std::swap(owner_, o.owner_);
  std::swap(data_, o.data_);
  std::swap(size_, o.size_);
  std::swap(pool_, o.pool_);
  std::swap(index_, o.index_);
  std::swap(generation_, o.generation_);
}

}  // namespace fbuf
