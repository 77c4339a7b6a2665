// fbuf::IoReader and fbuf::IoWriter: kernel I/O straight into and out of a
// pool's buffers (docs/api.md, "Kernel I/O").
//
// IoReader is the I/O stage of the fbufs design (uf_allocb, then fill): it
// allocates buffers from a Sender's pool, has the kernel fill them from a
// file (O_DIRECT through io_uring, the pool registered once as fixed
// buffers, several reads in flight) or a socket (io_uring receives), and
// publishes each filled buffer on the Sender in source order.
//
// IoWriter sends buffers and received views to a TCP socket without a CPU
// copy on the sending side (io_uring SEND_ZC, else MSG_ZEROCOPY), holding
// each until the kernel says it no longer reads its pages, or writes them
// to a file opened with O_DIRECT.
//
// Every slower path taken is reported (path(), fallback_reason(), and one
// line on stderr unless options say otherwise): never a silent slowdown.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <system_error>

#include "fbuf/buffer.h"
#include "fbuf/error.h"
#include "fbuf/message.h"
#include "fbuf/sender.h"

namespace fbuf {

namespace detail {
class IoReaderCore;
class IoWriterCore;
}  // namespace detail

// How an IoReader moves bytes into the pool, best first.
enum class ReadPath : std::uint8_t {
  kUringFixed = 0,  // io_uring READ_FIXED into the registered pool
  kUring = 1,       // io_uring READ / RECV into pool buffers, not registered
  kPlain = 2,       // pread / recv into pool buffers
};
const char* to_string(ReadPath p) noexcept;

struct IoReaderOptions {
  // Bytes asked for per buffer; 0: the pool's largest class. O_DIRECT
  // needs it to be a multiple of the file's direct-I/O offset alignment.
  std::size_t chunk = 0;
  std::uint32_t queue_depth = 8;  // reads in flight (files; sockets use 1)
  bool direct = true;             // files: open with O_DIRECT when allowed
  bool use_io_uring = true;       // false: the plain path, reported as such
  bool register_buffers = true;   // false: io_uring without fixed buffers
  bool log_fallbacks = true;      // one line on stderr per fallback taken
  // How long a publish may wait for ring space, and an allocation for a
  // buffer to come back.
  std::chrono::nanoseconds timeout = kForever;
};

struct IoReaderStats {
  std::uint64_t bytes = 0;    // published
  std::uint64_t buffers = 0;  // published
  std::uint64_t reads = 0;    // read or receive operations completed
  std::uint64_t short_reads = 0;
};

// Not thread-safe: one thread drives it. The Sender must outlive it.
class IoReader {
 public:
  // Opens `path` for reading. Throws Error (open, io_uring setup failures
  // that have no fallback).
  static IoReader open_file(Sender& sender, const std::string& path, IoReaderOptions options = {});
  // Reads from `fd` (a file or a connected stream socket); the IoReader
  // owns `fd` from now on, and closes it even if this throws.
  static IoReader adopt_fd(Sender& sender, int fd, IoReaderOptions options = {});
  ~IoReader();
  IoReader(IoReader&&) noexcept;
  IoReader& operator=(IoReader&&) noexcept;

  // Reads until end of file (or the peer's end of stream), publishing every
  // filled buffer in order. Returns the bytes published, or the first
  // error: a send failure (kNoReceivers, kTimedOut, ...), an allocation
  // timeout, or the read's errno. Bytes published before an error stay
  // published; nothing read is lost silently (a buffer that could not be
  // published is counted in stats().bytes only if it was). Resumable: a
  // second call goes on from where the first stopped.
  Result<std::uint64_t> run() noexcept;
  // As run(), but stops after publishing at most `max_buffers` buffers.
  // Returns 0 at end of input.
  Result<std::uint64_t> pump(std::uint64_t max_buffers) noexcept;

  ReadPath path() const noexcept;
  bool direct() const noexcept;  // the file was opened with O_DIRECT
  // Why the path is not the best one ("" when it is), every reason joined
  // with "; ".
  const std::string& fallback_reason() const noexcept;
  IoReaderStats stats() const noexcept;

 private:
  explicit IoReader(std::unique_ptr<detail::IoReaderCore> core) noexcept;
  std::unique_ptr<detail::IoReaderCore> core_;
};

// How an IoWriter sends, best first.
enum class WritePath : std::uint8_t {
  kUringSendZc = 0,  // io_uring SEND_ZC, held until its notification
  kMsgZerocopy = 1,  // send(MSG_ZEROCOPY), held until the error queue says so
  kCopy = 2,         // send(): the kernel copies; released at once
  kDirectFile = 3,   // pwrite to a file opened with O_DIRECT; synchronous
  kFile = 4,         // pwrite through the page cache (a copy)
};
const char* to_string(WritePath p) noexcept;

struct IoWriterOptions {
  std::uint32_t max_held = 64;  // sends awaiting notification before send() waits
  bool use_io_uring = true;
  bool use_msg_zerocopy = true;
  bool log_fallbacks = true;
};

struct IoWriterStats {
  std::uint64_t bytes = 0;          // handed to the kernel
  std::uint64_t sends = 0;          // send() calls accepted
  std::uint64_t notifications = 0;  // completions saying pages are free
  // Zero-copy sends the kernel copied after all ("deferred copy": loopback,
  // veth and devices without scatter-gather). Counted per notification.
  std::uint64_t zc_copied = 0;
  std::uint64_t zc_sent = 0;  // notifications that say the pages were sent in place
  std::uint32_t held = 0;     // buffers and views held now
};

// Not thread-safe: one thread drives it.
class IoWriter {
 public:
  // A connected TCP socket. The IoWriter owns `fd` (closed on
  // destruction, after every held buffer is released; closed at once if
  // this throws). A pipe is refused (Errc::kInvalidArgument): see below.
  static IoWriter adopt_socket(int fd, IoWriterOptions options = {});
  // A file to write from offset 0 on; O_DIRECT when the file system and
  // the alignment allow (otherwise reported). Throws Error.
  static IoWriter create_file(const std::string& path, IoWriterOptions options = {});
  // Waits for every notification, then releases what is held.
  ~IoWriter();
  IoWriter(IoWriter&&) noexcept;
  IoWriter& operator=(IoWriter&&) noexcept;

  // Sends the first `length` bytes of `buffer` (its owner's writable
  // buffer) or all of `view`. On success the handle is consumed: it is
  // held until the kernel is done with its pages, then dropped (a Buffer
  // goes back to its pool, a View to its owner). On a failure with
  // nothing sent it is left with the caller; after a partial send it is
  // held for the kernel and the error returned. Waits while max_held
  // sends are held. Errors: the send's errno (EPIPE, ECONNRESET, ...),
  // kInvalidArgument, kClosed (moved from).
  std::error_code send(Buffer&& buffer, std::size_t length) noexcept;
  std::error_code send(View&& view) noexcept;
  // An aggregate: its slices in order, as one stream, each read in place;
  // the Message (and every Buffer and View its slices hold) is held until
  // the notifications of every slice have come.
  std::error_code send(Message&& message) noexcept;
  // Collects completions without waiting; returns how many are still held.
  // A producer that allocates from the pool the writer holds buffers of
  // calls this, or wait(), when the pool says kWouldBlock: held buffers go
  // back only when the writer sees their notifications.
  std::uint32_t poll() noexcept;
  // Waits until at least one held handle is released (at once if none is
  // held); returns how many are still held.
  std::uint32_t wait() noexcept;
  // For an event loop: a descriptor that polls POLLIN or POLLERR when a
  // notification may be waiting (the io_uring's fd for SEND_ZC, the socket
  // for MSG_ZEROCOPY); call poll() then. -1 on the paths that hold
  // nothing. Wake-ups may be spurious. Do not read it.
  int fd() const noexcept;
  // Waits until nothing is held (or the socket failed: every held handle
  // is then released, the kernel having given up its pages).
  std::error_code flush() noexcept;

  WritePath path() const noexcept;
  const std::string& fallback_reason() const noexcept;
  IoWriterStats stats() const noexcept;

 private:
  explicit IoWriter(std::unique_ptr<detail::IoWriterCore> core) noexcept;
  std::unique_ptr<detail::IoWriterCore> core_;
};

// vmsplice() of pool pages into a pipe has no completion: the pipe's
// reader (or a splice onward) may read the pages long after the call
// returns, so no release rule is safe for a buffer that goes back to a
// writable free list. fbuf refuses it: see docs/api.md, "Kernel I/O".

}  // namespace fbuf
