// Where a View goes back to when it is dropped: the pool itself (receiver
// in the owner's process) or a return ring (receiver in another process).
// Private to the library; the public View only names it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

#include "fbuf/buffer.h"

namespace fbuf::detail {

// A pool of another process whose views this process may forward (ipc/,
// docs/design.md "The path"); only named here.
class Upstream;
class PoolCore;

class ViewOwner {
 public:
  virtual ~ViewOwner() = default;
  virtual void release(std::uint32_t pool, std::uint32_t index, std::uint32_t generation) noexcept = 0;
  // The pool these views may be forwarded from; none for views of a pool
  // of this process.
  virtual std::shared_ptr<Upstream> upstream() noexcept { return {}; }
  // The pool of this process these views are of (a receiver of
  // connect_local()); nullptr for views of another process's pool.
  virtual PoolCore* local_pool() noexcept { return nullptr; }
  // Makes one more View of (pool, index, generation), which a View of this
  // owner holds, share that View's reference: the reference goes back only
  // when the last of them is released. False if this owner cannot (views
  // of a pool of this process) or out of memory.
  virtual bool share(std::uint32_t /*pool*/, std::uint32_t /*index*/, std::uint32_t /*generation*/) noexcept {
    return false;
  }
};

// The count of extra Views sharing one reference, for owners that share
// (ViewOwner::share): release() asks take() first and goes back to the
// pool's owner only when nothing shares the reference any more. Which of
// the Views sharing a reference goes last does not matter: they are alike.
class SharedRefs {
 public:
  bool add(std::uint32_t pool, std::uint32_t index, std::uint32_t generation) noexcept {
    std::lock_guard lock(mu_);
    for (Entry& e : entries_)
      if (e.pool == pool && e.index == index && e.generation == generation) {
        ++e.count;
        return true;
      }
    try {
      entries_.push_back(Entry{pool, index, generation, 1});
    } catch (const std::bad_alloc&) {
      return false;
    }
    // relaxed: see take().
    any_.store(true, std::memory_order_relaxed);
    return true;
  }
  // True if a share of (pool, index, generation) was outstanding: this
  // release ends that share, not the reference.
  bool take(std::uint32_t pool, std::uint32_t index, std::uint32_t generation) noexcept {
    // Most owners never share: their releases skip the lock. relaxed: the
    // add() of a share this release must end happens before it (the View
    // was shared before it was handed on, and handing it on synchronises),
    // so coherence shows `true`; `false` read while another view's share
    // is being made only means this view has none.
    if (!any_.load(std::memory_order_relaxed)) return false;
    std::lock_guard lock(mu_);
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      Entry& e = entries_[i];
      if (e.pool != pool || e.index != index || e.generation != generation) continue;
      if (--e.count == 0) {
        e = entries_.back();
        entries_.pop_back();
      }
      return true;
    }
    return false;
  }

 private:
  struct Entry {
    std::uint32_t pool, index, generation, count;
  };
  std::mutex mu_;
  std::vector<Entry> entries_;  // guarded by mu_; as many as views shared at once
  // Set by the first add() and never cleared (clearing it could race
  // with an add()): false while this owner has never shared a view.
  std::atomic<bool> any_{false};
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
  // Another View of `size` bytes at `data` (within `v`) sharing `v`'s
  // reference (ViewOwner::share); empty if its owner cannot share.
  static View share(const View& v, const std::byte* data, std::size_t size) noexcept {
    if (!v.owner_ || !v.owner_->share(v.pool_, v.index_, v.generation_)) return View();
    return make(v.owner_, data, size, v.pool_, v.index_, v.generation_);
  }
};

}  // namespace fbuf::detail
