// Busy-wait hints and the spin-then-sleep lock. Private to the library.
#pragma once

#include <mutex>

namespace fbuf::detail {

// Tells the CPU this is a spin loop (frees the sibling hyper-thread, saves
// power); a plain compiler barrier where there is no such instruction.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  asm volatile("" ::: "memory");
#endif
}

// A lock held for tens of nanoseconds at a time. It spins briefly before it
// sleeps: a std::mutex that sleeps at once made thread handoff pay 2.6
// futex calls per buffer under contention (docs/results.md).
class SpinThenSleepMutex {
 public:
  void lock() noexcept {
    for (int i = 0; i < 128; ++i) {
      if (mu_.try_lock()) return;
      cpu_relax();
    }
    mu_.lock();
  }
  bool try_lock() noexcept { return mu_.try_lock(); }
  void unlock() noexcept { mu_.unlock(); }

 private:
  std::mutex mu_;
};

}  // namespace fbuf::detail
