#include "fbuf/error.h"

#include "fbuf/pool.h"

namespace fbuf {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "fbuf"; }
  std::string message(int c) const override {
    switch (static_cast<Errc>(c)) {
      case Errc::kOk: return "success";
      case Errc::kWouldBlock: return "operation would block (no buffer free, ring full or empty)";
      case Errc::kTimedOut: return "timed out";
      case Errc::kPeerGone: return "peer gone: the other end closed or died";
      case Errc::kNoReceivers: return "no receiver is connected";
      case Errc::kInvalidArgument: return "invalid argument";
      case Errc::kBadDescriptor: return "invalid descriptor from peer";
      case Errc::kVersionMismatch: return "protocol version mismatch";
      case Errc::kProtocol: return "malformed or unexpected control message";
      case Errc::kClosed: return "closed";
      case Errc::kTooLarge: return "no size class is large enough";
    }
    return "unknown fbuf error " + std::to_string(c);
  }
};

}  // namespace

const std::error_category& fbuf_category() noexcept {
  static const Category category;
  return category;
}

std::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), fbuf_category()};
}

const char* to_string(Policy p) noexcept {
  switch (p) {
    case Policy::kVolatile: return "volatile";
    case Policy::kReadOnly: return "read_only";
    case Policy::kCopyOnWrite: return "copy_on_write";
  }
  return "unknown";
}

}  // namespace fbuf
