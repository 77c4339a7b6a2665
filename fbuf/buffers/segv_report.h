// fbuf's SIGSEGV handler. A write to a buffer its sender no longer owns
// (read_only policy) or to a received, read-only view faults; the handler
// recognises addresses inside fbuf mappings, names the pool, the buffer, the
// policy, the faulting address and instruction, and lets the process die by
// SIGSEGV. Faults anywhere else go to the handler installed before fbuf's,
// unchanged. Private to the library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "fbuf/pool.h"

namespace fbuf::detail {

enum class MappingKind : std::uint8_t {
  kSender,    // the owner's writable mapping of its pool
  kReceived,  // a receiver's read-only mapping of a peer's pool
  kAlias,     // the owner's read-only alias for in-process receivers
};

// Installs the handler once per process (idempotent, thread-safe).
void install_segv_report();

// Registers [base, base + size) for the handler, with the size classes that
// split it into buffers. Returns a token for unregister_mapping(), or -1 if
// the (fixed-size) table is full, in which case faults there are reported
// as plain SIGSEGV. Never called from the handler.
int register_mapping(const void* base, std::size_t size, MappingKind kind, Policy policy,
                     const char* pool_name, std::span<const SizeClass> classes) noexcept;
void unregister_mapping(int token) noexcept;

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
