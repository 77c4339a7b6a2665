// fbuf::Buffer (writable, owned by the allocating process) and fbuf::View
// (read-only, received). Both are move-only RAII handles: dropping a Buffer
// returns it to its pool unsent; dropping a View returns it to its owner.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace fbuf {

namespace detail {
class PoolCore;
class ViewOwner;
struct ViewAccess;
}  // namespace detail

class Buffer {
 public:
  Buffer() noexcept = default;
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) { reset(); swap(o); }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  explicit operator bool() const noexcept { return data_ != nullptr; }
  std::byte* data() const noexcept { return data_; }
  std::size_t capacity() const noexcept { return capacity_; }
  std::span<std::byte> bytes() const noexcept { return {data_, capacity_}; }
  std::uint32_t index() const noexcept { return index_; }

  // Returns the buffer to its pool unsent.
  void reset() noexcept;

 private:
  friend class detail::PoolCore;
  void swap(Buffer& o) noexcept;

  std::shared_ptr<detail::PoolCore> pool_;
  std::byte* data_ = nullptr;
  std::size_t capacity_ = 0;
  std::uint32_t index_ = 0;
  std::uint32_t generation_ = 0;
};

class View {
 public:
  View() noexcept = default;
  ~View() { reset(); }
  View(View&& o) noexcept { swap(o); }
  View& operator=(View&& o) noexcept {
    if (this != &o) { reset(); swap(o); }
    return *this;
  }
  View(const View&) = delete;
  View& operator=(const View&) = delete;

  explicit operator bool() const noexcept { return data_ != nullptr; }
  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  std::uint32_t index() const noexcept { return index_; }

  // Gives the buffer back to its owner now.
  void reset() noexcept;

 private:
  // Only the channel implementations make Views (fbuf/buffers/view_owner.h).
  friend struct detail::ViewAccess;
  void swap(View& o) noexcept;

  std::shared_ptr<detail::ViewOwner> owner_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::uint32_t pool_ = 0;
  std::uint32_t index_ = 0;
  std::uint32_t generation_ = 0;
};

}  // namespace fbuf
