// fbuf::Receiver: the consuming end of a channel. It maps the sender's pool
// read-only and turns each descriptor it receives into a View over the
// sender's memory: no bytes are copied.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>

#include "fbuf/buffer.h"
#include "fbuf/error.h"
#include "fbuf/message.h"
#include "fbuf/sender.h"

namespace fbuf {

namespace detail {
class ReceiverCore;
struct ReceiverAccess;
}

struct ReceiverOptions {
  // How long connect() waits for the service to appear and answer.
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(5);
  // Asked of the sender in the Hello, for this receiver only. The sender
  // takes each only where it is more lenient to its other receivers than
  // its own options: a later policy, a smaller budget, a shorter hold
  // timeout. The defaults ask for nothing.
  SlowReceiverPolicy slow_receiver = SlowReceiverPolicy::kBlock;
  std::uint32_t receiver_budget = 0;           // 0: the sender's
  std::chrono::nanoseconds hold_timeout{0};    // 0: the sender's
};

struct ReceiverStats {
  std::uint64_t received = 0;
  std::uint64_t returned = 0;
  std::uint64_t rejected_descriptors = 0;  // failed validation; skipped
  std::uint64_t dropped = 0;  // buffers the sender skipped for this receiver (slow-consumer budget)
  std::uint64_t rejected_messages = 0;  // malformed aggregates rejected whole; their valid slices returned
};

// One thread receives at a time; Views may be dropped from any thread, and
// may outlive the Receiver (the mapping stays until the last View is gone).
class Receiver {
 public:
  // Connects to a Sender in another process (or this one) by service name.
  // Throws Error (ECONNREFUSED, or Errc::kVersionMismatch / kProtocol for a
  // bad handshake).
  static Receiver connect(std::string_view service, ReceiverOptions options = {});

  Receiver() noexcept;
  ~Receiver();
  Receiver(Receiver&&) noexcept;
  Receiver& operator=(Receiver&&) noexcept;
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  explicit operator bool() const noexcept { return core_ != nullptr; }

  // The next buffer, in send order. Errors: kWouldBlock (nothing yet),
  // kTimedOut, kPeerGone (the sender closed or died and everything it sent
  // has been received), kBadDescriptor (an invalid descriptor was skipped;
  // the next call continues), kCorrupt (the channel's shared memory was
  // corrupted: the stream ends; reported once, then kPeerGone), kCutOff
  // (the sender cut this receiver off: reported once after what was sent
  // before, then kPeerGone). `timeout` may be kForever.
  Result<View> try_receive() noexcept;
  Result<View> receive(std::chrono::nanoseconds timeout) noexcept;
  // Plain receive() returns one-slice items only: when the next item is a
  // message of several slices it says kMessage, takes nothing more from
  // the ring, and the message waits for receive_message().

  // The next item as a Message of View slices, all or none: a single
  // buffer comes as a one-slice message. Errors as receive(), and
  // kBadDescriptor when a malformed message (too many slices or bytes, a
  // chain cut short by the sender's publication, an invalid slice) was
  // rejected whole: counted in rejected_messages, its valid slices given
  // back to the sender, and the next call continues. Allocates one small
  // block per slice (receive() allocates nothing).
  Result<Message> try_receive_message() noexcept;
  Result<Message> receive_message(std::chrono::nanoseconds timeout) noexcept;

  // Waiting in an event loop (poll, epoll, io_uring, asio, libuv): fd() is
  // a file descriptor that polls readable (POLLIN) once this receiver has
  // something for try_receive() after an arm() that returned true. Call
  // arm() right before each wait, after try_receive() said kWouldBlock:
  //  - true: armed; wait on fd(). The next buffer, end of stream or cut-off
  //    makes it readable (a wake-up may also be spurious: try_receive()
  //    then says kWouldBlock again, and you arm again).
  //  - false: something is waiting already (a buffer, or the end of the
  //    stream); call try_receive() instead of waiting.
  // Arming costs no syscall on either side while buffers keep coming; the
  // sender signals the fd once per arming, only when the receiver armed.
  // arm() drains the fd, so level-triggered polling does not spin. fd()
  // stays the same for the Receiver's life and is closed with it (-1 for
  // a moved-from Receiver; arm() then returns false). Do not read or write
  // the fd yourself. Called by the receiving thread only, like
  // try_receive().
  int fd() const noexcept;
  bool arm() noexcept;

  ReceiverStats stats() const;

 private:
  friend struct detail::ReceiverAccess;  // the channel implementations make Receivers
  explicit Receiver(std::shared_ptr<detail::ReceiverCore> core) noexcept;

  std::shared_ptr<detail::ReceiverCore> core_;
};

}  // namespace fbuf
