// fbuf::Sender: the owner's end of a channel. It publishes buffers of one
// pool to every connected receiver: receivers in other processes (connected
// by service name over a Unix socket) and receivers in this process
// (connect_local(), for thread-to-thread handoff). Only a small descriptor
// travels; a buffer sent to N receivers returns to the pool after the N-th
// release.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "fbuf/buffer.h"
#include "fbuf/error.h"
#include "fbuf/message.h"
#include "fbuf/pool.h"

namespace fbuf {

class Receiver;
namespace detail {
class SenderCore;
}

// What a send does about a receiver that falls behind (docs/design.md,
// "Slow receivers"). Ordered from the least to the most lenient to the
// other receivers: a receiver may ask for a later one for itself
// (ReceiverOptions), never for an earlier one.
enum class SlowReceiverPolicy : std::uint8_t {
  kBlock = 0,     // the send waits for ring space up to its timeout (kTimedOut)
  kFailFast = 1,  // a full ring fails the send at once with kWouldBlock
  kSkip = 2,      // over budget or full: this receiver misses this buffer (counted)
  kCutOff = 3,    // over budget or full: this receiver is cut off (kCutOff)
};

struct SenderOptions {
  std::uint32_t ring_capacity = 256;  // descriptors in flight per receiver (power of two)
  std::uint32_t max_receivers = 64;
  // By default only processes of this process's user id (and root) may
  // connect: the socket name is visible to every process of the network
  // namespace.
  bool allow_other_users = false;
  // The default for every receiver; a receiver may ask to be treated more
  // leniently to the others in its Hello.
  SlowReceiverPolicy slow_receiver = SlowReceiverPolicy::kBlock;
  // kSkip / kCutOff: a receiver may hold or have queued at most this many
  // buffers; a send that would take it past that skips or cuts it off.
  // 0: only a full ring is over budget. Ignored under kBlock / kFailFast.
  std::uint32_t receiver_budget = 0;
  // Whatever the policy, a receiver holding any one buffer longer than
  // this (from the moment it was sent to it) is cut off. 0: never.
  // Checked on the send path at most every millisecond, by the control
  // thread of a listening Sender while sends are idle, and by stats().
  std::chrono::nanoseconds hold_timeout{0};
};

struct SenderStats {
  std::uint64_t sent = 0;              // buffers published (once per send)
  std::uint64_t delivered = 0;         // descriptors pushed (once per receiver)
  std::uint64_t returned = 0;          // valid returns
  std::uint64_t rejected_returns = 0;  // forged, duplicate or foreign returns
  std::uint64_t rejected_handshakes = 0;
  std::uint64_t receivers_connected = 0;
  std::uint64_t receivers_lost = 0;    // hung up or died; their buffers reclaimed
  std::uint64_t dropped = 0;           // buffers skipped for some receiver, once per receiver
  std::uint64_t receivers_cut_off = 0; // by budget or hold timeout; their buffers reclaimed
};

// Thread-safe: any thread may send. Destroying the Sender tells every
// receiver end-of-stream after it drains what was sent.
class Sender {
 public:
  // An in-process-only sender: receivers come from connect_local().
  explicit Sender(Pool pool, SenderOptions options = {});
  // Also listens for receivers in other processes under `service` (for
  // example "camera/frames"). Throws Error if the name is taken.
  Sender(Pool pool, std::string_view service, SenderOptions options = {});
  ~Sender();
  Sender(Sender&&) noexcept;
  Sender& operator=(Sender&&) noexcept;
  Sender(const Sender&) = delete;
  Sender& operator=(const Sender&) = delete;

  // A receiver for another thread of this process.
  Receiver connect_local();

  // uf_allocb: a buffer from the pool this channel sends from.
  Result<Buffer> try_allocate(std::size_t size) noexcept;
  Result<Buffer> allocate(std::size_t size, std::chrono::nanoseconds timeout) noexcept;

  // Waiting for back-pressure to clear in an event loop: fd() polls
  // readable (POLLIN) after an arm() that returned true, once a receiver
  // took from its ring or a buffer came back to the pool. Call arm(size)
  // right before each wait, after try_allocate(size) or try_send() said
  // kWouldBlock (size 0: only ring room matters, as for a try_send() of a
  // buffer already held):
  //  - true: armed; wait on fd(), then try again (a wake-up may be
  //    spurious).
  //  - false: a buffer of `size` can be allocated and every receiver's
  //    ring has room now (or there is nothing to wait for: no receivers,
  //    closed); try again instead of waiting.
  // No syscall on either side unless armed; the receivers signal at most
  // once per arming. fd() is the Sender's for its life (-1 when moved
  // from; arm() then returns false). Returns come through the pool's
  // doorbell: with two Senders on one pool, only the one created last is
  // woken by returns (either is by ring room). Do not read the fd.
  int fd() const noexcept;
  bool arm(std::size_t size = 0) noexcept;

  // Publishes the first `length` bytes of `buffer` to every receiver. On
  // success the buffer is consumed (the sender's write access ends). On
  // failure `buffer` is left untouched, so the caller still owns it:
  //   kWouldBlock (some receiver's ring is full; under kFailFast whatever
  //   the timeout; under kSkip when every receiver would skip it),
  //   kNoReceivers (none, or every one was just cut off),
  //   kInvalidArgument (length > capacity or a foreign buffer), kClosed.
  std::error_code try_send(Buffer&& buffer, std::size_t length) noexcept;
  // As try_send, but waits up to `timeout` for ring space (kTimedOut).
  std::error_code send(Buffer&& buffer, std::size_t length,
                       std::chrono::nanoseconds timeout) noexcept;

  // Sends several buffers as one batch: ring space for all of them is
  // reserved at once, contiguous buffers are protected with one call (for
  // the read_only and copy_on_write policies), and each receiver is woken
  // at most once. All or nothing: on failure every buffer is left with the
  // caller. `lengths[i]` is the valid length of `buffers[i]`.
  std::error_code send_many(std::span<Buffer> buffers, std::span<const std::size_t> lengths,
                            std::chrono::nanoseconds timeout) noexcept;

  // Sends an aggregate as one unit: every receiver's ring gets room for
  // all its slices at once, they are written and published together, and
  // a receiver gets all of them or none (receive_message()). Protection
  // applies to every Buffer slice as in send_many. All or nothing: on
  // failure `message` is left untouched, every slice still the caller's.
  // Errors as try_send/send, and kInvalidArgument (empty, more slices than
  // ring_capacity, a Buffer of another pool or held by another message
  // too, a Buffer in two slices). A View slice received from another
  // process is forwarded as by send(const View&) (The path): every pool
  // it needs is announced and every lend record written before the chain
  // is published; then kInvalidArgument also for two ranges of one view
  // or a receiver in this process, kUnsupported for a view of this
  // process's own pool. Such a message goes to every receiver or fails
  // whole (the slow-receiver skip policy does not apply to it).
  std::error_code try_send(Message&& message) noexcept;
  std::error_code send(Message&& message, std::chrono::nanoseconds timeout) noexcept;
  // The path: forwards `view`, received from a Sender of another process
  // (or forwarded to this one), to every receiver of this Sender without a
  // copy: they read the upstream owner's pool through their own read-only
  // mapping of it, which reaches each receiver once (the first forward to
  // it asks the owner for a holder, a round trip). The view stays the
  // caller's; each receiver's hold is counted at the pool's owner, so the
  // buffer is not reused while anyone on the path holds it, whatever
  // happens to this process. Errors: kInvalidArgument (an empty view, a
  // view of this process's own pool, or a Sender with receivers in this
  // process: not supported), kNoReceivers, kWouldBlock / kTimedOut (a
  // full ring, or no room for the lend record), kClosed. With several
  // receivers, one whose lend record cannot be written misses the view
  // (counted as dropped); the send fails only when all do.
  std::error_code try_send(const View& view) noexcept;
  std::error_code send(const View& view, std::chrono::nanoseconds timeout) noexcept;

  // Waits until at least `n` receivers are connected; false on timeout.
  bool wait_for_receivers(std::size_t n, std::chrono::nanoseconds timeout) const;
  std::size_t receiver_count() const noexcept;

  SenderStats stats() const;
  const std::string& service() const noexcept;
  Pool pool() const;

 private:
  std::unique_ptr<detail::SenderCore> core_;
};

}  // namespace fbuf
