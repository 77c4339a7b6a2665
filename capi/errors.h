// How the C API turns the C++ API's outcomes into uf_error, and C timeouts
// into C++ ones. Private to the library.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <new>
#include <system_error>

#include "fbuf/fbuf.h"
#include "fbuf/uf.h"

namespace fbuf::capi {

inline uf_error to_uf(std::error_code ec) noexcept {
  if (!ec) return UF_OK;
  if (ec.category() == fbuf::fbuf_category()) {
    switch (static_cast<fbuf::Errc>(ec.value())) {
      case fbuf::Errc::kOk: return UF_OK;
      case fbuf::Errc::kWouldBlock: return UF_EAGAIN;
      case fbuf::Errc::kTimedOut: return UF_ETIMEDOUT;
      case fbuf::Errc::kPeerGone: return UF_EPEERGONE;
      case fbuf::Errc::kNoReceivers: return UF_ENORECEIVERS;
      case fbuf::Errc::kInvalidArgument: return UF_EINVAL;
      case fbuf::Errc::kBadDescriptor: return UF_EBADDESC;
      case fbuf::Errc::kVersionMismatch: return UF_EVERSION;
      case fbuf::Errc::kProtocol: return UF_EPROTO;
      case fbuf::Errc::kClosed: return UF_ECLOSED;
      case fbuf::Errc::kTooLarge: return UF_ETOOLARGE;
      case fbuf::Errc::kCorrupt: return UF_ECORRUPT;
      case fbuf::Errc::kCutOff: return UF_ECUTOFF;
      case fbuf::Errc::kMessage: return UF_EMSG;
      case fbuf::Errc::kUnsupported: return UF_ENOTSUP;
    }
    return UF_EPROTO;
  }
  if (ec.category() == std::system_category() || ec.category() == std::generic_category()) {
    errno = ec.value();
    if (ec.value() == ENOMEM) return UF_ENOMEM;
    if (ec.value() == ETIMEDOUT) return UF_ETIMEDOUT;
  }
  return UF_ESYSTEM;
}

// Runs a setup call, turning exceptions into codes.
template <class F>
uf_error guarded(F&& f) noexcept {
  try {
    return f();
  } catch (const fbuf::Error& e) {
    return to_uf(e.code());
  } catch (const std::bad_alloc&) {
    return UF_ENOMEM;
  } catch (...) {
    return UF_ESYSTEM;
  }
}

inline std::chrono::nanoseconds to_timeout(int64_t ns) noexcept {
  // Negative means forever; so does INT64_MAX (deadlines saturate).
  if (ns < 0) return fbuf::kForever;
  return std::chrono::nanoseconds(ns);
}

}  // namespace fbuf::capi
