// fbuf::typed::TypedStats: what a receiver of typed messages counts. Each
// typed reader (fbuf/typed/capnp.h, fbuf/typed/interprocess.h) takes an
// optional pointer to one; a rejected message is counted there and the
// reason kept, and the message's buffers go back to their owner.
#pragma once

#include <cstdint>

namespace fbuf::typed {

struct TypedStats {
  std::uint64_t accepted = 0;  // messages that passed validation
  std::uint64_t rejected = 0;  // messages or reads that failed it (Errc::kBadDescriptor)
  // The last rejection's reason: a string literal, or text kept in
  // last_reason_text (Cap'n Proto's description of what it refused).
  const char* last_reason = "";
  char last_reason_text[160] = {};
};

namespace detail {

inline void count_rejection(TypedStats* stats, const char* reason) noexcept {
  if (stats == nullptr) return;
  ++stats->rejected;
  stats->last_reason = reason;
}

}  // namespace detail
}  // namespace fbuf::typed
