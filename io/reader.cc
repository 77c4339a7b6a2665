// IoReader: the I/O stage. The kernel fills buffers of a Sender's pool
// from a file or a socket, and each filled buffer is published in source
// order.
//
// Invariants (one thread drives the reader):
//  - Every buffer the kernel may be writing is held by a slot of `slots_`
//    (a Buffer this process allocated, so the sender's mapping of it is
//    writable and no receiver holds it). A slot is given back (published
//    or dropped) only after its completion was reaped: a buffer never
//    returns to the pool while a read into it is in flight. The destructor
//    cancels and reaps every read still in flight before the slots go.
//  - Fixed-buffer reads address the registered range through the owner's
//    writable mapping (PoolCore::writer_base) at the slot's own buffer,
//    never at another.
//  - Slots form a circle in file order: head_ is the oldest read, the one
//    published next; a read at a larger offset is never published before
//    one at a smaller offset.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <optional>
#include <vector>

#include "fbuf/base/assert.h"
#include "fbuf/base/fd.h"
#include "fbuf/buffers/pool_core.h"
#include "fbuf/io.h"
#include "io/faults.h"
#include "io/uring.h"

namespace fbuf {

const char* to_string(ReadPath p) noexcept {
  switch (p) {
    case ReadPath::kUringFixed: return "io_uring fixed buffers";
    case ReadPath::kUring: return "io_uring";
    case ReadPath::kPlain: return "pread/recv";
  }
  return "unknown";
}

namespace detail {

namespace {

std::error_code errno_code(int e) noexcept { return {e, std::system_category()}; }

// Fixed buffers pin the pool's pages with write intent; one registered
// buffer is at most 1 GiB.
constexpr std::size_t kMaxFixed = std::size_t{1} << 30;

}  // namespace

class IoReaderCore {
 public:
  IoReaderCore(Sender& sender, UniqueFd fd, IoReaderOptions o) : sender_(&sender), fd_(std::move(fd)), opt_(o) {
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) throw_errno("fstat(io reader source)");
    socket_ = S_ISSOCK(st.st_mode);
    FBUF_REQUIRE(socket_ || S_ISREG(st.st_mode) || S_ISBLK(st.st_mode),
                 "IoReader reads a regular file, a block device or a stream socket");
    pool_ = PoolAccess::core(sender.pool());
    chunk_ = opt_.chunk == 0 ? pool_->options().classes.back().buffer_size : opt_.chunk;
    FBUF_REQUIRE(chunk_ <= pool_->options().classes.back().buffer_size, "IoReader chunk larger than the pool's buffers");
    depth_ = socket_ ? 1 : (opt_.queue_depth == 0 ? 1 : opt_.queue_depth);
    if (!socket_) setup_direct();
    setup_uring();
    slots_.resize(depth_);
  }

  ~IoReaderCore() {
    if (!ring_.ok() || count_ == 0) return;
    // Cancel what is in flight and reap it, so no buffer leaves with a read
    // still writing into it.
    io_uring* r = ring_.get();
    for (std::uint32_t k = 0; k < count_; ++k) {
      const std::uint32_t i = (head_ + k) % depth_;
      if (slots_[i].done) continue;
      io_uring_sqe* sqe = io_uring_get_sqe(r);
      if (sqe == nullptr) {
        io_uring_submit(r);
        sqe = io_uring_get_sqe(r);
      }
      if (sqe == nullptr) break;
      io_uring_prep_cancel64(sqe, i, 0);
      io_uring_sqe_set_data64(sqe, kCancelTag);
    }
    io_uring_submit(r);
    while (in_flight() > 0)
      if (reap_one(true) != 0) break;
    if (in_flight() == 0) return;
    // The ring failed with reads still out: their buffers are leaked, not
    // returned, since the kernel may still write into them.
    for (Slot& s : slots_)
      if (!s.done && s.buf) new (std::nothrow) Buffer(std::move(s.buf));
  }

  Result<std::uint64_t> pump(std::uint64_t max_buffers) noexcept {
    if (error_) return error_;
    std::uint64_t bytes = 0;
    for (std::uint64_t n = 0; n < max_buffers; ++n) {
      auto r = socket_ ? next_socket() : (ring_.ok() ? next_file_uring() : next_file_plain());
      // An error after some bytes were published comes back on the next
      // call: read errors are sticky, and a buffer that could not be
      // published stays at the head.
      if (!r) return bytes > 0 ? Result<std::uint64_t>(bytes) : Result<std::uint64_t>(r.error());
      if (*r == 0) break;  // end of input
      bytes += *r;
    }
    return bytes;
  }

  ReadPath path() const noexcept { return path_; }
  bool direct() const noexcept { return direct_; }
  const std::string& reason() const noexcept { return reason_; }
  IoReaderStats stats() const noexcept { return stats_; }

 private:
  static constexpr std::uint64_t kCancelTag = ~std::uint64_t{0};

  struct Slot {
    Buffer buf;
    std::uint64_t offset = 0;
    std::size_t want = 0;
    std::size_t got = 0;
    int res = 0;
    bool done = false;   // its read completed (reaped)
    bool ready = false;  // ... and was judged: `got` is final, only the publish is left
  };

  void fallback(const std::string& why) { note_fallback(reason_, "io reader", why, opt_.log_fallbacks); }

  // O_DIRECT when asked, allowed by the file system, and aligned for the
  // chunk (statx STATX_DIOALIGN); otherwise the page cache, with a reason.
  void setup_direct() {
    if (!opt_.direct) return;
    struct statx sx {};
    if (::statx(fd_.get(), "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN) != 0) {
      if (sx.stx_dio_offset_align == 0) {
        fallback("O_DIRECT not supported by this file (statx: no direct-I/O alignment); reading through the page cache");
        return;
      }
      if (chunk_ % sx.stx_dio_offset_align != 0 || sx.stx_dio_mem_align > 4096) {
        fallback("O_DIRECT alignment does not fit: chunk " + std::to_string(chunk_) + " bytes, file offset alignment " +
                 std::to_string(sx.stx_dio_offset_align) + ", memory alignment " +
                 std::to_string(sx.stx_dio_mem_align) + "; reading through the page cache");
        return;
      }
    } else if (chunk_ % 4096 != 0) {
      fallback("O_DIRECT alignment unknown (no STATX_DIOALIGN) and chunk not a multiple of 4096; "
               "reading through the page cache");
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
               "); reading through the page cache");
      return;
    }
    direct_ = true;
  }

  void setup_uring() {
    if (!opt_.use_io_uring) {
      fallback("io_uring off by options; pread/recv into pool buffers");
      return;
    }
    std::string why;
    if (ring_.init(depth_ * 2 + 2, why) != 0) {
      fallback(why + "; pread/recv into pool buffers");
      return;
    }
    path_ = ReadPath::kUring;
    if (socket_) return;  // receives take no fixed buffers
    if (!opt_.register_buffers) {
      fallback("fixed buffers off by options; io_uring reads into unregistered pool buffers");
      return;
    }
    if (pool_->options().policy == Policy::kCopyOnWrite) {
      // Registering pins what the sender's mapping holds now: private
      // copies for buffers sent under copy_on_write, not the pool's pages.
      fallback("copy_on_write pool: fixed buffers would pin private copies; io_uring reads into unregistered buffers");
      return;
    }
    if (pool_->writer_size() > kMaxFixed) {
      fallback("pool larger than 1 GiB, the largest fixed buffer; io_uring reads into unregistered buffers");
      return;
    }
    iovec iov{pool_->writer_base(), pool_->writer_size()};
    const int r = io_uring_register_buffers(ring_.get(), &iov, 1);
    if (r < 0) {
      std::string what = std::string("io_uring_register_buffers: ") + std::strerror(-r);
      if (-r == ENOMEM) what += " (RLIMIT_MEMLOCK too small for the pool's " + std::to_string(pool_->writer_size()) + " bytes)";
      if (-r == EFAULT) what += " (a sent buffer is write-protected under the read_only policy)";
      fallback(what + "; io_uring reads into unregistered buffers");
      return;
    }
    path_ = ReadPath::kUringFixed;
  }

  std::uint32_t in_flight() const noexcept { return in_flight_; }

  // Reaps one completion (waiting for it if `wait`). Returns 0, EAGAIN when
  // none is ready, or the errno of the wait.
  int reap_one(bool wait) noexcept {
    io_uring_cqe* cqe = nullptr;
    int r = wait ? io_uring_wait_cqe(ring_.get(), &cqe) : io_uring_peek_cqe(ring_.get(), &cqe);
    if (r == -EINTR) return 0;
    if (r < 0) return -r;
    const std::uint64_t tag = io_uring_cqe_get_data64(cqe);
    const int res = cqe->res;
    io_uring_cqe_seen(ring_.get(), cqe);
    if (tag == kCancelTag) return 0;
    FBUF_ASSERT(tag < depth_, "io reader: a completion for no slot");
    Slot& s = slots_[tag];
    s.res = res;
    s.done = true;
    --in_flight_;
    return 0;
  }

  void prep_read(std::uint32_t i) noexcept {
    Slot& s = slots_[i];
    io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
    FBUF_ASSERT(sqe != nullptr, "io reader: submission queue smaller than the depth");
    std::byte* dst = s.buf.data() + s.got;
    const auto len = static_cast<unsigned>(s.want - s.got);
    if (path_ == ReadPath::kUringFixed)
      io_uring_prep_read_fixed(sqe, fd_.get(), dst, len, s.offset + s.got, 0);
    else
      io_uring_prep_read(sqe, fd_.get(), dst, len, s.offset + s.got);
    io_uring_sqe_set_data64(sqe, i);
    s.done = false;
    ++in_flight_;
  }

  Result<Buffer> take_buffer(bool may_wait) noexcept {
    if (!may_wait) return sender_->try_allocate(chunk_);
    return sender_->allocate(chunk_, opt_.timeout);
  }

  // Publishes the head slot's bytes; the slot stays on failure, so a later
  // call tries again and nothing read is lost.
  std::error_code publish_head(std::size_t n) noexcept {
    Slot& s = slots_[head_];
    if (n > 0) {
      auto ec = sender_->send(std::move(s.buf), n, opt_.timeout);
      if (ec) return ec;
      stats_.bytes += n;
      ++stats_.buffers;
    }
    s.buf.reset();
    s = Slot{};
    head_ = (head_ + 1) % depth_;
    --count_;
    return {};
  }

  // After end of file: every later read is waited for and its buffer
  // dropped (they read past the end).
  void discard_after_head() noexcept {
    while (in_flight_ > 0)
      if (reap_one(true) != 0) break;
    for (std::uint32_t k = 1; k < count_; ++k) slots_[(head_ + k) % depth_] = Slot{};
    count_ = count_ > 0 ? 1 : 0;
  }

  // One buffer through io_uring; several reads in flight.
  Result<std::uint64_t> next_file_uring() noexcept {
    // Keep the queue full: a free buffer for every empty slot, without
    // waiting while reads are in flight (their buffers come back first).
    bool submitted = false;
    while (!eof_ && count_ < depth_) {
      auto b = take_buffer(count_ == 0);
      if (!b) {
        if (count_ > 0 && b.error() == Errc::kWouldBlock) break;
        return b.error();
      }
      const std::uint32_t i = (head_ + count_) % depth_;
      slots_[i] = Slot{std::move(*b), next_offset_, chunk_, 0, 0, false};
      next_offset_ += chunk_;
      ++count_;
      prep_read(i);
      submitted = true;
    }
    if (submitted) {
      const int r = io_uring_submit(ring_.get());
      if (r < 0) return error_ = errno_code(-r);
    }
    if (count_ == 0) return std::uint64_t{0};
    Slot& h = slots_[head_];
    if (h.ready) return publish_ready();  // an earlier publish failed
    while (!h.done) {
      const int r = reap_one(true);
      if (r != 0) return errno_code(r);
    }
    if (h.res == -EINTR || h.res == -EAGAIN) {  // try the same read again
      prep_read(head_);
      const int r = io_uring_submit(ring_.get());
      if (r < 0) return error_ = errno_code(-r);
      return next_file_uring();
    }
    if (h.res < 0) {
      // The read failed: nothing is published past it.
      const int e = -h.res;
      discard_after_head();
      slots_[head_] = Slot{};
      count_ = 0;
      return error_ = errno_code(e);
    }
    ++stats_.reads;
    h.got += static_cast<std::size_t>(h.res);
    if (h.got < h.want && h.res > 0) {
      // A short read that is not the end: read the rest in place.
      ++stats_.short_reads;
      while (h.got < h.want) {
        const ssize_t n = ::pread(fd_.get(), h.buf.data() + h.got, h.want - h.got, static_cast<off_t>(h.offset + h.got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return error_ = errno_code(errno);
        if (n == 0) break;
        h.got += static_cast<std::size_t>(n);
      }
    }
    if (h.got < h.want) {
      eof_ = true;
      discard_after_head();
    }
    h.ready = true;
    return publish_ready();
  }

  Result<std::uint64_t> publish_ready() noexcept {
    const std::size_t n = slots_[head_].got;
    if (auto ec = publish_head(n)) return ec;
    return std::uint64_t{n};
  }

  Result<std::uint64_t> next_file_plain() noexcept {
    if (count_ == 0) {
      if (eof_) return std::uint64_t{0};
      auto b = take_buffer(true);
      if (!b) return b.error();
      slots_[head_] = Slot{std::move(*b), next_offset_, chunk_, 0, 0, true};
      next_offset_ += chunk_;
      count_ = 1;
      Slot& h = slots_[head_];
      while (h.got < h.want) {
        const ssize_t n = ::pread(fd_.get(), h.buf.data() + h.got, h.want - h.got, static_cast<off_t>(h.offset + h.got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          const int e = errno;
          slots_[head_] = Slot{};
          count_ = 0;
          return error_ = errno_code(e);
        }
        ++stats_.reads;
        if (n == 0) break;
        h.got += static_cast<std::size_t>(n);
      }
      if (h.got < h.want) eof_ = true;
    }
    const std::size_t n = slots_[head_].got;
    if (auto ec = publish_head(n)) return ec;
    return std::uint64_t{n};
  }

  // One receive into one buffer; what arrived is published at once.
  Result<std::uint64_t> next_socket() noexcept {
    if (count_ == 0) {
      if (eof_) return std::uint64_t{0};
      auto b = take_buffer(true);
      if (!b) return b.error();
      slots_[head_] = Slot{std::move(*b), 0, chunk_, 0, 0, false};
      count_ = 1;
      Slot& h = slots_[head_];
      ssize_t n = 0;
      for (;;) {
        if (ring_.ok()) {
          io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
          io_uring_prep_recv(sqe, fd_.get(), h.buf.data(), h.want, 0);
          io_uring_sqe_set_data64(sqe, head_);
          ++in_flight_;
          const int r = io_uring_submit(ring_.get());
          if (r < 0) {
            --in_flight_;
            n = -1;
            errno = -r;
          } else {
            while (!h.done)
              if (const int e = reap_one(true); e != 0) return error_ = errno_code(e);
            n = h.res < 0 ? -1 : h.res;
            if (h.res < 0) errno = -h.res;
            h.done = false;
          }
        } else {
          n = ::recv(fd_.get(), h.buf.data(), h.want, 0);
        }
        if (n < 0 && errno == EAGAIN) {  // a non-blocking socket: wait for data
          pollfd p{fd_.get(), POLLIN, 0};
          ::poll(&p, 1, -1);
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        break;
      }
      if (n < 0) {
        const int e = errno;
        slots_[head_] = Slot{};
        count_ = 0;
        return error_ = errno_code(e);
      }
      ++stats_.reads;
      h.got = static_cast<std::size_t>(n);
      if (n == 0) eof_ = true;
    }
    const std::size_t n = slots_[head_].got;
    if (auto ec = publish_head(n)) return ec;
    return std::uint64_t{n};
  }

  Sender* sender_;
  UniqueFd fd_;
  IoReaderOptions opt_;
  std::shared_ptr<PoolCore> pool_;
  std::size_t chunk_ = 0;
  std::uint32_t depth_ = 1;
  bool socket_ = false;
  bool direct_ = false;
  ReadPath path_ = ReadPath::kPlain;
  std::string reason_;
  Uring ring_;
  std::vector<Slot> slots_;
  std::uint32_t head_ = 0;
  std::uint32_t count_ = 0;      // slots in use, from head_
  std::uint32_t in_flight_ = 0;  // reads submitted and not reaped
  std::uint64_t next_offset_ = 0;
  bool eof_ = false;
  std::error_code error_;  // sticky: a failed read ends the stream
  IoReaderStats stats_;
};

}  // namespace detail

IoReader IoReader::open_file(Sender& sender, const std::string& path, IoReaderOptions options) {
  detail::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) detail::throw_errno("open(" + path + ")");
  return IoReader(std::make_unique<detail::IoReaderCore>(sender, std::move(fd), options));
}

IoReader IoReader::adopt_fd(Sender& sender, int fd, IoReaderOptions options) {
  detail::UniqueFd owned(fd);
  return IoReader(std::make_unique<detail::IoReaderCore>(sender, std::move(owned), options));
}

IoReader::IoReader(std::unique_ptr<detail::IoReaderCore> core) noexcept : core_(std::move(core)) {}
IoReader::~IoReader() = default;
IoReader::IoReader(IoReader&&) noexcept = default;
IoReader& IoReader::operator=(IoReader&&) noexcept = default;

Result<std::uint64_t> IoReader::run() noexcept {
  if (!core_) return Errc::kClosed;
  std::uint64_t total = 0;
  for (;;) {
    auto r = core_->pump(64);
    if (!r) return r;
    if (*r == 0) return total;
    total += *r;
  }
}
Result<std::uint64_t> IoReader::pump(std::uint64_t max_buffers) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->pump(max_buffers);
}
// A moved-from reader answers as the plain path with nothing read.
namespace {
const std::string kNoReason;
}
ReadPath IoReader::path() const noexcept { return core_ ? core_->path() : ReadPath::kPlain; }
bool IoReader::direct() const noexcept { return core_ && core_->direct(); }
const std::string& IoReader::fallback_reason() const noexcept { return core_ ? core_->reason() : kNoReason; }
IoReaderStats IoReader::stats() const noexcept { return core_ ? core_->stats() : IoReaderStats{}; }

}  // namespace fbuf
