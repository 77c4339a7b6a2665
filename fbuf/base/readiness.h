// Readiness sockets: the file descriptors that poll, epoll or io_uring wait
// on instead of a futex. One connected pair per receiver: the owner keeps
// one end, the receiver gets the other (in the Welcome for a receiver in
// another process). Each side signals the other through it: the owner when
// a buffer or the end of the stream is waiting for an armed receiver, the
// receiver when it freed ring space or returned a buffer for an armed
// sender (docs/design.md, "Readiness fds"). Private to the library.
//
// Invariants:
//  - The pair is SOCK_SEQPACKET: each signal is one 1-byte record, and
//    when one end closes (its side went, or its process died) the other
//    becomes readable with end-of-file and POLLHUP, so a dead peer wakes an
//    epoll loop without anyone signalling.
//  - Both sides signal with send(MSG_DONTWAIT | MSG_NOSIGNAL) and ignore
//    the result: the flags are per call, and each end is its own open file
//    description, so nothing one side does to its end (clearing
//    O_NONBLOCK, never reading, shutting it, closing it) can make the
//    other block or raise SIGPIPE. A full socket already reads as ready.
//  - Signals happen at most once per arming (the words consumer_armed,
//    producer_armed in fbuf/base/ring.h, armed in the doorbell), so an
//    honest peer queues at most a few records; drain_ready() reads a
//    bounded number and leaves the rest (spurious wake-ups, never lost
//    ones).
#pragma once

#include "fbuf/base/fd.h"

namespace fbuf::detail {

struct ReadyPair {
  UniqueFd owner;     // the owner's end
  UniqueFd receiver;  // the receiver's end
};

// A connected, close-on-exec, non-blocking pair. Throws Error.
ReadyPair make_ready_pair();

// Makes the other end of `fd` readable. Never blocks; errors are ignored
// (see above). Does nothing for fd < 0.
void signal_ready(int fd) noexcept;

// Reads the records queued on `fd`. Returns false if no signal can come
// any more (end-of-file: the other end is closed; or the socket is not
// connected), true otherwise.
bool drain_ready(int fd) noexcept;

}  // namespace fbuf::detail
