#include "fbuf/error.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "fbuf/base/assert.h"

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
      case Errc::kCorrupt: return "the peer corrupted the channel's shared memory; the stream has ended";
      case Errc::kCutOff: return "cut off by the sender (slow-consumer policy or a corrupt channel)";
      case Errc::kMessage: return "the next item is a message of several slices: receive it with receive_message()";
      case Errc::kUnsupported: return "not supported: a View of this process's own pool cannot be sent on";
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

namespace detail {

void fail(const char* kind, const char* cond, const char* file, int line, const char* msg) noexcept {
  std::fprintf(stderr, "fbuf: %s failed at %s:%d: %s (%s)\n", kind, file, line, msg, cond);
  std::abort();
}

void throw_errno(const std::string& context) {
  throw Error(std::error_code(errno, std::system_category()), context);
}

void throw_error(Errc e, const std::string& context) { throw Error(make_error_code(e), context); }

void result_misuse(const std::error_code& ec) noexcept {
  std::fprintf(stderr, "fbuf: requirement failed: the value of an error Result was read (error: %s: %s)\n",
               ec.category().name(), ec.message().c_str());
  std::abort();
}

}  // namespace detail

}  // namespace fbuf
