// An owned io_uring instance, and the reasons io_uring may be missing.
// Private to the library; the one place io/ includes liburing.
#pragma once

#include <liburing.h>

#include <string>

namespace fbuf::detail {

class Uring {
 public:
  Uring() = default;
  ~Uring();
  Uring(const Uring&) = delete;
  Uring& operator=(const Uring&) = delete;

  // Sets the ring up with `entries` submission entries. Returns 0 or an
  // errno (IoFaults::uring_init first); on failure `why` says what the
  // system answered, kernel.io_uring_disabled included.
  int init(unsigned entries, std::string& why) noexcept;
  bool ok() const noexcept { return ok_; }
  io_uring* get() noexcept { return &ring_; }

 private:
  io_uring ring_{};
  bool ok_ = false;
};

// Appends `reason` to `all` ("; " between reasons) and logs it on stderr
// when `log` is set, prefixed with `who`.
void note_fallback(std::string& all, const char* who, const std::string& reason, bool log);

}  // namespace fbuf::detail
