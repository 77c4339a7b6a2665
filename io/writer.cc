// IoWriter: buffers and views out of the pool without a CPU copy on the
// sending side, each held until the kernel no longer reads its pages.
//
// Invariants (one thread drives the writer):
//  - A handle handed to the kernel by a zero-copy send sits in a slot of
//    `slots_` until that slot's notifications have all arrived (io_uring:
//    one IORING_CQE_F_NOTIF per request that came back with
//    IORING_CQE_F_MORE; MSG_ZEROCOPY: every id of its send calls covered by
//    an error-queue range). Only then is the handle dropped, which gives a
//    Buffer back to its pool or a View to its owner: a buffer never reaches
//    a free list while the kernel may still read it.
//  - send() returns only after the kernel answered every send request it
//    made (not their notifications), so sends on the socket never overlap
//    and bytes leave in call order.
//  - A slot is `sealed` once its handle has moved in; a notification that
//    arrives earlier only lowers `pending`, and the release waits for both.
#include <fcntl.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <span>
#include <variant>
#include <vector>

#include "fbuf/base/assert.h"
#include "fbuf/base/fd.h"
#include "fbuf/io.h"
#include "io/faults.h"
#include "io/uring.h"

// Linux 6.2 and later; liburing 2.3's headers predate them.
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

namespace fbuf {

const char* to_string(WritePath p) noexcept {
  switch (p) {
    case WritePath::kUringSendZc: return "io_uring SEND_ZC";
    case WritePath::kMsgZerocopy: return "MSG_ZEROCOPY";
    case WritePath::kCopy: return "send (copy)";
    case WritePath::kDirectFile: return "O_DIRECT pwrite";
    case WritePath::kFile: return "pwrite (page cache)";
  }
  return "unknown";
}

namespace detail {

namespace {

std::error_code errno_code(int e) noexcept { return {e, std::system_category()}; }

using Handle = std::variant<std::monostate, Buffer, View, Message>;

// The bytes of one handle: one part for a Buffer or a View, one per slice
// for a Message, sent in order as one stream.
struct Part {
  const std::byte* data;
  std::size_t len;
};
using Parts = std::span<const Part>;

std::size_t total(Parts parts) noexcept {
  std::size_t n = 0;
  for (const Part& p : parts) n += p.len;
  return n;
}

// The rest of the part that byte `done` of `parts` falls in.
Part rest_at(Parts parts, std::size_t done) noexcept {
  for (const Part& p : parts) {
    if (done < p.len) return {p.data + done, p.len - done};
    done -= p.len;
  }
  return {nullptr, 0};
}

}  // namespace

class IoWriterCore {
 public:
  IoWriterCore(UniqueFd fd, IoWriterOptions o) : fd_(std::move(fd)), opt_(o) {
    if (opt_.max_held == 0) opt_.max_held = 1;
    slots_.resize(opt_.max_held);
    for (std::uint32_t i = opt_.max_held; i > 0; --i) free_.push_back(i - 1);
  }

  void setup_socket() {
    struct stat st {};
    if (::fstat(fd_.get(), &st) == 0 && S_ISFIFO(st.st_mode))
      throw_error(Errc::kInvalidArgument,
                  "IoWriter: a pipe is refused: vmsplice has no completion, so no pool buffer could be "
                  "given back safely (docs/design.md, \"Kernel I/O\")");
    int type = 0;
    socklen_t tl = sizeof type;
    if (::getsockopt(fd_.get(), SOL_SOCKET, SO_TYPE, &type, &tl) != 0) throw_errno("getsockopt(io writer socket)");
    FBUF_REQUIRE(type == SOCK_STREAM, "IoWriter sends on a connected stream socket");
    path_ = WritePath::kCopy;
    if (opt_.use_io_uring) {
      std::string why;
      if (ring_.init(opt_.max_held < 8 ? 8 : opt_.max_held, why) == 0) {
        path_ = WritePath::kUringSendZc;
        return;
      }
      fallback(why + "; trying MSG_ZEROCOPY");
    } else {
      fallback("io_uring off by options; trying MSG_ZEROCOPY");
    }
    setup_msg_zerocopy();
  }

  void setup_file(const std::string& path) {
    path_ = WritePath::kFile;
    buffered_.reset(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!buffered_) throw_errno("open(" + path + ")");
    struct statx sx {};
    if (::statx(fd_.get(), "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN) != 0 &&
        sx.stx_dio_offset_align == 0) {
      fallback("O_DIRECT not supported by this file (statx: no direct-I/O alignment); writing through the page cache");
      return;
    }
    align_ = (sx.stx_mask & STATX_DIOALIGN) != 0 ? sx.stx_dio_offset_align : 4096;
    if (sx.stx_dio_mem_align > 4096) {
      fallback("O_DIRECT memory alignment " + std::to_string(sx.stx_dio_mem_align) +
               " exceeds a page; writing through the page cache");
      return;
    }
    // relaxed: see IoFaults.
    int err = IoFaults::direct.load(std::memory_order_relaxed);
    if (err == 0) {
      const int fl = ::fcntl(fd_.get(), F_GETFL);
      if (fl < 0 || ::fcntl(fd_.get(), F_SETFL, fl | O_DIRECT) != 0) err = errno;
    }
    if (err != 0) {
      fallback(std::string("O_DIRECT refused by the file system (") + std::strerror(err) +
               "); writing through the page cache");
      return;
    }
    path_ = WritePath::kDirectFile;
  }

  // A handle whose notification can no longer be waited for (the ring
  // failed) is leaked on purpose, with a line on stderr: its pages may
  // still be read by the kernel, and a leak is safe where a reuse is not.
  ~IoWriterCore() {
    if (!flush() || held_ == 0) return;
    std::fprintf(stderr, "fbuf io writer: %u buffers kept from their pools: the kernel may still read them\n",
                 held_);
    for (Slot& s : slots_)
      if (!std::holds_alternative<std::monostate>(s.h)) new (std::nothrow) Handle(std::move(s.h));
  }

  std::error_code send(Handle& h, Parts parts) noexcept {
    if (total(parts) == 0) {
      h = std::monostate{};
      ++stats_.sends;
      return {};
    }
    switch (path_) {
      case WritePath::kUringSendZc: return send_uring(h, parts);
      case WritePath::kMsgZerocopy: return send_msg_zerocopy(h, parts);
      case WritePath::kCopy: return send_copy(h, parts);
      case WritePath::kDirectFile:
      case WritePath::kFile: return write_file(h, parts);
    }
    return make_error_code(Errc::kInvalidArgument);
  }

  std::uint32_t poll() noexcept {
    if (path_ == WritePath::kUringSendZc)
      while (reap_uring(false) == 0) {
      }
    else if (path_ == WritePath::kMsgZerocopy)
      (void)reap_errqueue();
    return held_;
  }

  std::uint32_t wait() noexcept {
    const std::uint32_t before = held_;
    while (held_ > 0 && held_ == before)
      if (wait_one()) break;
    return held_;
  }

  std::error_code flush() noexcept {
    while (held_ > 0) {
      if (auto ec = wait_one()) return ec;
    }
    return {};
  }

  WritePath path() const noexcept { return path_; }
  int event_fd() noexcept {
    if (path_ == WritePath::kUringSendZc) return ring_.get()->ring_fd;
    if (path_ == WritePath::kMsgZerocopy) return fd_.get();
    return -1;
  }
  const std::string& reason() const noexcept { return reason_; }
  IoWriterStats stats() const noexcept {
    IoWriterStats s = stats_;
    s.held = held_;
    return s;
  }

 private:
  struct Slot {
    Handle h;
    std::uint32_t pending = 0;   // notifications still to come
    bool sealed = false;         // the handle has moved in
    bool request_done = false;   // io_uring: the send request answered
    int res = 0;                 // io_uring: that answer
    std::uint32_t first_id = 0;  // MSG_ZEROCOPY: ids [first_id, first_id + ids)
    std::uint32_t ids = 0;
  };

  void fallback(const std::string& why) { note_fallback(reason_, "io writer", why, opt_.log_fallbacks); }

  void setup_msg_zerocopy() {
    if (!opt_.use_msg_zerocopy) {
      fallback("MSG_ZEROCOPY off by options; send() copies");
      path_ = WritePath::kCopy;
      return;
    }
    const int one = 1;
    if (::setsockopt(fd_.get(), SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one) != 0) {
      fallback(std::string("SO_ZEROCOPY refused (") + std::strerror(errno) + "); send() copies");
      path_ = WritePath::kCopy;
      return;
    }
    path_ = WritePath::kMsgZerocopy;
  }

  std::uint32_t take_slot() noexcept {
    const std::uint32_t i = free_.back();
    free_.pop_back();
    slots_[i] = Slot{};
    ++held_;
    return i;
  }

  void release(std::uint32_t i) noexcept {
    Slot& s = slots_[i];
    s.h = std::monostate{};  // drops the Buffer or View: back to its owner
    s = Slot{};
    free_.push_back(i);
    --held_;
  }

  void maybe_release(std::uint32_t i) noexcept {
    const Slot& s = slots_[i];
    if (s.sealed && s.pending == 0 && (path_ != WritePath::kUringSendZc || s.request_done)) release(i);
  }

  // Waits for one notification (or one answer).
  std::error_code wait_one() noexcept {
    if (path_ == WritePath::kUringSendZc) {
      const int r = reap_uring(true);
      return r == 0 ? std::error_code{} : errno_code(r);
    }
    if (path_ == WritePath::kMsgZerocopy) {
      if (reap_errqueue() > 0) return {};
      pollfd p{fd_.get(), 0, 0};  // POLLERR: the error queue has something
      const int r = ::poll(&p, 1, 10);
      if (r < 0 && errno != EINTR) return errno_code(errno);
      return {};
    }
    return {};
  }

  // --- io_uring SEND_ZC ---

  int reap_uring(bool wait) noexcept {
    io_uring_cqe* cqe = nullptr;
    const int r = wait ? io_uring_wait_cqe(ring_.get(), &cqe) : io_uring_peek_cqe(ring_.get(), &cqe);
    if (r == -EINTR) return 0;
    if (r < 0) return -r;
    const auto i = static_cast<std::uint32_t>(io_uring_cqe_get_data64(cqe));
    const int res = cqe->res;
    const unsigned flags = cqe->flags;
    io_uring_cqe_seen(ring_.get(), cqe);
    FBUF_ASSERT(i < slots_.size(), "io writer: a completion for no slot");
    Slot& s = slots_[i];
    if ((flags & IORING_CQE_F_NOTIF) != 0) {
      FBUF_ASSERT(s.pending > 0, "io writer: a notification nobody waits for");
      --s.pending;
      ++stats_.notifications;
      // A failed request's notification is a formality: no page went out.
      if (report_usage_ && s.res > 0) {
        if ((static_cast<unsigned>(res) & IORING_NOTIF_USAGE_ZC_COPIED) != 0)
          ++stats_.zc_copied;
        else
          ++stats_.zc_sent;
      }
    } else {
      s.request_done = true;
      s.res = res;
      if ((flags & IORING_CQE_F_MORE) != 0) ++s.pending;
    }
    maybe_release(i);
    return 0;
  }

  // One SEND_ZC request per part (a Message's slices one after another),
  // each waited for before the next, all under one slot.
  std::error_code send_uring(Handle& h, Parts parts) noexcept {
    while (free_.empty())
      if (auto ec = wait_one()) return ec;
    const std::uint32_t i = take_slot();
    const std::size_t len = total(parts);
    std::size_t done = 0;
    int err = 0;
    while (done < len) {
      Slot& s = slots_[i];
      s.request_done = false;
      io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
      if (sqe == nullptr) {  // notifications only ever take completion entries
        io_uring_submit(ring_.get());
        sqe = io_uring_get_sqe(ring_.get());
      }
      FBUF_ASSERT(sqe != nullptr, "io writer: no submission entry");
      const Part cur = rest_at(parts, done);
      io_uring_prep_send_zc(sqe, fd_.get(), cur.data, cur.len, MSG_WAITALL | MSG_NOSIGNAL,
                            report_usage_ ? IORING_SEND_ZC_REPORT_USAGE : 0);
      io_uring_sqe_set_data64(sqe, i);
      int r = io_uring_submit(ring_.get());
      while (r == -EINTR || r == -EAGAIN || r == -EBUSY) {
        // The entry is still queued: make room in the completion queue and
        // submit it again (never drop it: a later submit would send it).
        (void)reap_uring(false);
        r = io_uring_submit(ring_.get());
      }
      if (r < 0) {
        // The entry may stay queued and go out with a later submit: the
        // handle stays held until its answer (finish() sees no answer yet).
        err = -r;
        break;
      }
      while (!slots_[i].request_done)
        if (const int e = reap_uring(true); e != 0) {
          // The ring itself failed: the request may still be out; keep the
          // handle held (sealed below) rather than risk it.
          err = e;
          break;
        }
      if (!slots_[i].request_done) break;
      const int res = slots_[i].res;
      if (res == -EINTR || res == -EAGAIN) continue;
      if (res < 0) {
        if (done == 0 && stats_.sends == 0 && (res == -EINVAL || res == -EOPNOTSUPP)) {
          // The first send says the kernel or the socket lacks a feature:
          // drop the usage report first (EINVAL), then SEND_ZC itself. Its
          // notification, if one was promised, comes at once: nothing was
          // sent.
          while (slots_[i].pending > 0)
            if (reap_uring(true) != 0) break;
          if (slots_[i].pending == 0) {
            slots_[i].sealed = true;
            release(i);
            if (report_usage_ && res == -EINVAL) {
              report_usage_ = false;
              fallback("the kernel does not report zero-copy usage (IORING_SEND_ZC_REPORT_USAGE); "
                       "deferred copies are not counted");
              return send_uring(h, parts);
            }
            fallback(std::string("io_uring SEND_ZC refused (") + std::strerror(-res) + "); trying MSG_ZEROCOPY");
            setup_msg_zerocopy();
            return send(h, parts);
          }
        }
        err = -res;
        break;
      }
      if (res == 0) {
        err = EPIPE;
        break;
      }
      done += static_cast<std::size_t>(res);
    }
    return finish(i, h, done, len, err);
  }

  // Seals slot `i` with the handle, or gives the handle back to the caller
  // when nothing was sent and the kernel holds nothing.
  std::error_code finish(std::uint32_t i, Handle& h, std::size_t done, std::size_t len, int err) noexcept {
    Slot& s = slots_[i];
    if (err != 0 && done == 0 && path_ == WritePath::kUringSendZc && s.request_done) {
      // Nothing was sent, but SEND_ZC posts its notification even so: it
      // comes with no page in use, and the handle goes back to the caller.
      while (s.pending > 0)
        if (reap_uring(true) != 0) break;
    }
    const bool kernel_holds = s.pending > 0 || s.ids > 0 || (path_ == WritePath::kUringSendZc && !s.request_done);
    if (err != 0 && done == 0 && !kernel_holds) {
      s.sealed = true;
      release(i);  // the slot is empty: the handle is still the caller's
      return errno_code(err);
    }
    s.h = std::move(h);
    h = std::monostate{};
    s.sealed = true;
    stats_.bytes += done;
    ++stats_.sends;
    maybe_release(i);
    (void)len;
    (void)poll();  // give back what is done already
    return err != 0 ? errno_code(err) : std::error_code{};
  }

  // --- MSG_ZEROCOPY ---

  // Reads every notification queued; returns how many ranges were read.
  int reap_errqueue() noexcept {
    int got = 0;
    for (;;) {
      alignas(cmsghdr) char control[128];
      msghdr msg{};
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      if (::recvmsg(fd_.get(), &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return got;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        const bool v4 = c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR;
        const bool v6 = c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR;
        if (!v4 && !v6) continue;
        sock_extended_err ee{};
        std::memcpy(&ee, CMSG_DATA(c), sizeof ee);  // copied out once, then checked
        if (ee.ee_errno != 0 || ee.ee_origin != SO_EE_ORIGIN_ZEROCOPY) continue;
        ++got;
        const std::uint32_t lo = ee.ee_info;
        const std::uint32_t hi = ee.ee_data;
        const std::uint64_t n = std::uint64_t{hi - lo} + 1;
        stats_.notifications += n;
        if ((ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED) != 0)
          stats_.zc_copied += n;
        else
          stats_.zc_sent += n;
        complete_ids(lo, hi);
      }
    }
  }

  void complete_ids(std::uint32_t lo, std::uint32_t hi) noexcept {
    for (std::uint32_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      if (s.ids == 0 || s.pending == 0) continue;
      // Overlap of [lo, hi] with the slot's ids, in wrapping arithmetic.
      std::uint32_t covered = 0;
      for (std::uint32_t k = 0; k < s.ids; ++k) {
        const std::uint32_t id = s.first_id + k;
        if (id - lo <= hi - lo) ++covered;
      }
      s.pending -= covered < s.pending ? covered : s.pending;
      if (s.pending == 0) s.ids = 0;
      maybe_release(i);
    }
  }

  std::error_code send_msg_zerocopy(Handle& h, Parts parts) noexcept {
    while (free_.empty())
      if (auto ec = wait_one()) return ec;
    const std::uint32_t i = take_slot();
    const std::size_t len = total(parts);
    std::size_t done = 0;
    int err = 0;
    while (done < len) {
      const Part cur = rest_at(parts, done);
      const ssize_t n = ::send(fd_.get(), cur.data, cur.len, MSG_ZEROCOPY | MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == ENOBUFS || errno == EAGAIN) {
          // Out of notification memory (optmem) or buffer space: collect
          // notifications and wait a little.
          if (reap_errqueue() == 0) {
            pollfd p{fd_.get(), POLLOUT, 0};
            ::poll(&p, 1, 10);
          }
          continue;
        }
        err = errno;
        break;
      }
      Slot& s = slots_[i];
      if (s.ids == 0) s.first_id = next_id_;
      ++s.ids;
      ++s.pending;
      ++next_id_;
      done += static_cast<std::size_t>(n);
    }
    (void)reap_errqueue();
    return finish(i, h, done, len, err);
  }

  // --- copies ---

  std::error_code send_copy(Handle& h, Parts parts) noexcept {
    const std::size_t len = total(parts);
    std::size_t done = 0;
    while (done < len) {
      const Part cur = rest_at(parts, done);
      const ssize_t n = ::send(fd_.get(), cur.data, cur.len, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        if (done == 0) return errno_code(errno);
        break;
      }
      done += static_cast<std::size_t>(n);
    }
    const int err = done < len ? errno : 0;
    stats_.bytes += done;
    ++stats_.sends;
    h = std::monostate{};  // the kernel copied: released at once
    return err != 0 ? errno_code(err) : std::error_code{};
  }

  // Writes the parts at the file offset, synchronously: the whole-block
  // part of each through O_DIRECT while the offset is aligned, the rest
  // through the page cache.
  std::error_code write_file(Handle& h, Parts parts) noexcept {
    std::size_t written = 0;
    int err = 0;
    for (const Part& p : parts) {
      const std::size_t n = write_part(p.data, p.len, err);
      written += n;
      if (err != 0) break;
    }
    if (err != 0 && written == 0) return errno_code(err);
    stats_.bytes += written;
    ++stats_.sends;
    h = std::monostate{};  // written before pwrite returned: released at once
    if (path_ == WritePath::kDirectFile && offset_ % align_ != 0 && !tail_noted_) {
      tail_noted_ = true;
      fallback("an unaligned write left the file offset unaligned; later writes go through the page cache");
    }
    return err != 0 ? errno_code(err) : std::error_code{};
  }

  // Returns the bytes written and moves offset_ past them; `err` is set
  // when fewer than `len` were.
  std::size_t write_part(const std::byte* data, std::size_t len, int& err) noexcept {
    std::size_t done = 0;
    if (path_ == WritePath::kDirectFile && offset_ % align_ == 0) {
      const std::size_t aligned = len - len % align_;
      while (done < aligned) {
        const ssize_t n = ::pwrite(fd_.get(), data + done, aligned - done, static_cast<off_t>(offset_ + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          err = n < 0 ? errno : EIO;
          offset_ += done;
          return done;
        }
        done += static_cast<std::size_t>(n);
      }
    }
    while (done < len) {  // the unaligned tail through the page cache
      const ssize_t n = ::pwrite(buffered_.get(), data + done, len - done, static_cast<off_t>(offset_ + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        err = n < 0 ? errno : EIO;
        break;
      }
      done += static_cast<std::size_t>(n);
    }
    offset_ += done;
    return done;
  }

  UniqueFd fd_;
  UniqueFd buffered_;  // files: the same file without O_DIRECT, for tails
  IoWriterOptions opt_;
  WritePath path_ = WritePath::kCopy;
  std::string reason_;
  Uring ring_;
  bool report_usage_ = true;
  std::vector<Slot> slots_;
  std::vector<std::uint32_t> free_;
  std::uint32_t held_ = 0;
  std::uint32_t next_id_ = 0;  // MSG_ZEROCOPY: the kernel's next send id
  std::uint64_t offset_ = 0;
  std::size_t align_ = 4096;
  bool tail_noted_ = false;
  IoWriterStats stats_;
};

}  // namespace detail

IoWriter IoWriter::adopt_socket(int fd, IoWriterOptions options) {
  auto core = std::make_unique<detail::IoWriterCore>(detail::UniqueFd(fd), options);
  core->setup_socket();
  return IoWriter(std::move(core));
}

IoWriter IoWriter::create_file(const std::string& path, IoWriterOptions options) {
  detail::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) detail::throw_errno("open(" + path + ")");
  auto core = std::make_unique<detail::IoWriterCore>(std::move(fd), options);
  core->setup_file(path);
  return IoWriter(std::move(core));
}

IoWriter::IoWriter(std::unique_ptr<detail::IoWriterCore> core) noexcept : core_(std::move(core)) {}
IoWriter::~IoWriter() = default;
IoWriter::IoWriter(IoWriter&&) noexcept = default;
IoWriter& IoWriter::operator=(IoWriter&&) noexcept = default;

std::error_code IoWriter::send(Buffer&& buffer, std::size_t length) noexcept {
  if (!core_) return make_error_code(Errc::kClosed);
  if (!buffer || length > buffer.capacity()) return make_error_code(Errc::kInvalidArgument);
  const detail::Part part{buffer.data(), length};
  detail::Handle h(std::move(buffer));
  auto ec = core_->send(h, detail::Parts(&part, 1));
  if (auto* b = std::get_if<Buffer>(&h)) buffer = std::move(*b);  // not sent: the caller's again
  return ec;
}

std::error_code IoWriter::send(View&& view) noexcept {
  if (!core_) return make_error_code(Errc::kClosed);
  if (!view) return make_error_code(Errc::kInvalidArgument);
  const detail::Part part{view.data(), view.size()};
  detail::Handle h(std::move(view));
  auto ec = core_->send(h, detail::Parts(&part, 1));
  if (auto* v = std::get_if<View>(&h)) view = std::move(*v);
  return ec;
}

std::error_code IoWriter::send(Message&& message) noexcept {
  if (!core_) return make_error_code(Errc::kClosed);
  detail::Part parts[Message::kMaxSlices];
  const std::size_t n = message.slice_count();
  if (n > Message::kMaxSlices) return make_error_code(Errc::kInvalidArgument);
  for (std::size_t k = 0; k < n; ++k) {
    const auto bytes = message.slice(k);
    parts[k] = {bytes.data(), bytes.size()};
  }
  // The slices' bytes stay where they are while the Message moves: its
  // holders own them.
  detail::Handle h(std::move(message));
  auto ec = core_->send(h, detail::Parts(parts, n));
  if (auto* m = std::get_if<Message>(&h)) message = std::move(*m);
  return ec;
}

std::uint32_t IoWriter::poll() noexcept { return core_ ? core_->poll() : 0; }
std::uint32_t IoWriter::wait() noexcept { return core_ ? core_->wait() : 0; }
std::error_code IoWriter::flush() noexcept { return core_ ? core_->flush() : std::error_code{}; }
namespace {
const std::string kNoReason;
}
WritePath IoWriter::path() const noexcept { return core_ ? core_->path() : WritePath::kCopy; }
int IoWriter::fd() const noexcept { return core_ ? core_->event_fd() : -1; }
const std::string& IoWriter::fallback_reason() const noexcept { return core_ ? core_->reason() : kNoReason; }
IoWriterStats IoWriter::stats() const noexcept { return core_ ? core_->stats() : IoWriterStats{}; }

}  // namespace fbuf
