// Readiness sockets: the file descriptor a receiving end hands to poll or
// epoll. One connected pair per receiver: the owner keeps the signalling
// end, the receiver gets the waiting end (in the Welcome for a receiver in
// another process). Private to the library.
//
// Invariants:
//  - The pair is SOCK_SEQPACKET: each signal is one 1-byte record, and
//    when the owner's end closes (the Sender went, or its process died)
//    the receiver's end becomes readable with end-of-file and POLLHUP, so
//    a dead sender wakes an epoll loop without anyone signalling.
//  - The owner signals with send(MSG_DONTWAIT | MSG_NOSIGNAL) and ignores
//    the result: the flags are per call, and each end is its own open file
//    description, so nothing the receiver does to its end (clearing
//    O_NONBLOCK, never reading, shutting it, closing it) can make the
//    owner block or raise SIGPIPE. A full socket already reads as ready.
//  - The owner shuts its end for reading: a receiver cannot queue data on
//    the owner's side.
//  - Signals happen at most once per arming (fbuf/base/ring.h,
//    consumer_armed), so an honest receiver's socket holds at most a few
//    records; drain() reads a bounded number and leaves the rest (spurious
//    wake-ups, never lost ones).
#pragma once

#include "fbuf/base/fd.h"

namespace fbuf::detail {

struct ReadyPair {
  UniqueFd signal;  // the owner's end
  UniqueFd wait;    // the receiver's end
};

// A connected, close-on-exec, non-blocking pair. Throws Error.
ReadyPair make_ready_pair();

// Makes `fd` readable. Never blocks; errors are ignored (see above).
void signal_ready(int fd) noexcept;

// Reads the records queued on the receiver's end. Returns false if no
// signal can come any more (end-of-file: the owner's end is closed; or the
// socket is not connected), true otherwise.
bool drain_ready(int fd) noexcept;

}  // namespace fbuf::detail
