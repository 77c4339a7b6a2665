// fbuf's SIGSEGV reporter. A write to a buffer its sender no longer owns
// (read_only policy) or to a received, read-only view faults; the handler
// recognises writes inside registered fbuf mappings, names the pool, the
// buffer, the policy, the faulting address and instruction, and lets the
// process die by SIGSEGV.
//
// Every other SIGSEGV (a fault outside the pools, a read or execute fault,
// kill() or raise()) is handled exactly as the disposition that was in force
// before fbuf's would have handled it: that handler with its SA_SIGINFO,
// SA_RESETHAND, SA_NODEFER and sa_mask, SIG_IGN or SIG_DFL. See
// segv_report.cc for how, and for the one thing it cannot copy (SA_ONSTACK).
//
// An application that installs a SIGSEGV handler after fbuf replaces fbuf's:
// its handler then sees every SIGSEGV, and fbuf reports pool writes only if
// that handler passes them on to the disposition sigaction() returned to it.
// fbuf never reinstalls its handler. Private to the library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "fbuf/pool.h"

namespace fbuf::detail {

enum class MappingKind : std::uint8_t {
  kSender,    // the owner's writable mapping of its pool
  kReceived,  // a receiver's read-only mapping of a peer's pool
  kAlias,     // the owner's read-only alias for in-process receivers
};

// What a registration may do about a write fault inside it before the
// report: `fn(ctx, addr)` returns true if it made the write possible (the
// write is then re-run) and false to have it reported. Runs inside the
// signal handler: async-signal-safe, lock-free, errno preserved.
struct WriteFaultHook {
  bool (*fn)(void* ctx, void* addr) noexcept = nullptr;
  void* ctx = nullptr;
};

// Installs the handler once per process (idempotent, thread-safe). The
// disposition it finds is the one every non-pool SIGSEGV gets.
void install_segv_report();

// Registers [base, base + size) for the handler, with the size classes that
// split it into buffers. Returns a token for unregister_mapping(), or -1 if
// the (fixed-size) table is full, in which case writes there are not
// reported. Any thread; never called from the handler.
int register_mapping(const void* base, std::size_t size, MappingKind kind, Policy policy,
                     const char* pool_name, std::span<const SizeClass> classes,
                     WriteFaultHook hook = {}) noexcept;
void unregister_mapping(int token) noexcept;

inline constexpr std::size_t kMaxPoolNameInReport = 64;  // with the terminating NUL

// One registration as a single registration had it (never a mix of two),
// and where in it an address falls.
struct MappingHit {
  std::uintptr_t begin = 0;
  std::uintptr_t end = 0;
  MappingKind kind = MappingKind::kSender;
  Policy policy = Policy::kVolatile;
  char pool_name[kMaxPoolNameInReport] = {};
  std::uint64_t buffer_index = 0;
  std::uint64_t class_size = 0;
  std::uint64_t byte_in_buffer = 0;
  WriteFaultHook hook;
};

// The registration covering addr, or nullopt. Lock-free and
// async-signal-safe: this is the handler's lookup, callable from any thread
// while others register and unregister.
std::optional<MappingHit> find_mapping(const void* addr) noexcept;

}  // namespace fbuf::detail

namespace fbuf::detail {

// Owns one registration; unregisters on destruction.
class SegvRegistration {
 public:
  SegvRegistration() noexcept = default;
  explicit SegvRegistration(int token) noexcept : token_(token) {}
  ~SegvRegistration() { unregister_mapping(token_); }
  SegvRegistration(SegvRegistration&& o) noexcept : token_(o.token_) { o.token_ = -1; }
  SegvRegistration& operator=(SegvRegistration&& o) noexcept {
    if (this != &o) {
      unregister_mapping(token_);
      token_ = o.token_;
      o.token_ = -1;
    }
    return *this;
  }
  SegvRegistration(const SegvRegistration&) = delete;
  SegvRegistration& operator=(const SegvRegistration&) = delete;

 private:
  int token_ = -1;
};

}  // namespace fbuf::detail
