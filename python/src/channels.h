// The Python Sender and Receiver: what they hold, and the calls that move
// buffers (allocate, send, receive), each waiting without the GIL (wait.h).
//
// Handles hold their fbuf::Sender / fbuf::Receiver by shared_ptr, and every
// call that waits takes its own copy before it releases the GIL: close() on
// another thread drops only the handle's reference, so the object lives
// until the waiting call returns. fbuf::Receiver allows one receiving
// thread at a time; ReceiverBox makes Python threads that share one take
// turns.
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "errors.h"
#include "fbuf/fbuf.h"
#include "handles.h"
#include "wait.h"

namespace fbuf::python {

struct SenderHandle {
  std::shared_ptr<Sender> sender;  // null once closed
  std::string service;

  // The sender, for one call; raises fbuf.Closed once closed.
  std::shared_ptr<Sender> get(const char* what) const;
  // Drops the handle's reference without the GIL (closing joins the
  // control thread and ends every receiver's stream).
  void close();
};

struct ReceiverBox {
  explicit ReceiverBox(Receiver r) : receiver(std::move(r)) {}
  Receiver receiver;
  // The receiving turn: `busy` while some thread is in receive(). A flag
  // and a condition variable rather than a std::timed_mutex, whose timed
  // lock (pthread_mutex_clocklock) ThreadSanitizer does not see.
  std::mutex turn_mutex;
  std::condition_variable turn_free;
  bool busy = false;  // guarded by turn_mutex
};

struct ReceiverHandle {
  std::shared_ptr<ReceiverBox> box;  // null once closed

  std::shared_ptr<ReceiverBox> get(const char* what) const;
  void close();
};

inline std::unique_ptr<BufferHandle> wrap(Buffer b, std::size_t size) {
  auto h = std::make_unique<BufferHandle>();
  h->buffer = std::move(b);
  h->size = size;
  return h;
}

// allocate / try_allocate of a Pool or a Sender.
template <class Owner>
std::unique_ptr<BufferHandle> allocate_from(Owner& owner, std::size_t size, const pybind11::object& timeout,
                                            const char* what) {
  const auto t = to_timeout(timeout);
  Result<Buffer> r = wait_released(t, [&](std::chrono::nanoseconds slice) {
    return owner.allocate(size, slice);
  });
  if (!r) raise_error(r.error(), std::string(what) + "(" + std::to_string(size) + ")");
  return wrap(std::move(*r), size);
}

template <class Owner>
std::unique_ptr<BufferHandle> try_allocate_from(Owner& owner, std::size_t size, const char* what) {
  Result<Buffer> r = owner.try_allocate(size);
  if (!r) raise_error(r.error(), std::string(what) + "(" + std::to_string(size) + ")");
  return wrap(std::move(*r), size);
}

// Sender.send (timeout given) and Sender.try_send (std::nullopt).
void send_buffer(SenderHandle& s, BufferHandle& b, const pybind11::object& length,
                 std::optional<pybind11::object> timeout);
void send_many(SenderHandle& s, const std::vector<BufferHandle*>& handles, const pybind11::object& lengths,
               const pybind11::object& timeout);

std::unique_ptr<ViewHandle> receive(ReceiverHandle& r, const pybind11::object& timeout);
std::unique_ptr<ViewHandle> try_receive(ReceiverHandle& r);
// Receiver.__next__: StopIteration at the end of the stream.
std::unique_ptr<ViewHandle> next_view(ReceiverHandle& r);

}  // namespace fbuf::python
