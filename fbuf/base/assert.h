// FBUF_ASSERT: a bug in fbuf itself. FBUF_REQUIRE: a caller broke the API's
// contract. Both print the condition, the place and a message, then abort.
// Neither is ever used on input from another process: that is validated and
// reported as an error (see docs/design.md, "Bad input").
//
// throw_errno / throw_error: the one way setup calls build an fbuf::Error.
#pragma once

#include <string>

#include "fbuf/error.h"

namespace fbuf::detail {
[[noreturn]] void fail(const char* kind, const char* cond, const char* file, int line,
                       const char* msg) noexcept;
// Throws fbuf::Error with the current errno and `context`.
[[noreturn]] void throw_errno(const std::string& context);
[[noreturn]] void throw_error(Errc e, const std::string& context);
}  // namespace fbuf::detail

#define FBUF_ASSERT(cond, msg) \
  ((cond) ? static_cast<void>(0) : ::fbuf::detail::fail("assertion", #cond, __FILE__, __LINE__, msg))
#define FBUF_REQUIRE(cond, msg) \
  ((cond) ? static_cast<void>(0) : ::fbuf::detail::fail("requirement", #cond, __FILE__, __LINE__, msg))
