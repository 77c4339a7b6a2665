#include "channels.h"

#include <algorithm>

namespace py = pybind11;

namespace fbuf::python {
namespace {

std::size_t send_length(BufferHandle& b, const py::object& length) {
  if (length.is_none()) return b.size;
  const auto n = length.cast<long long>();
  if (n < 0) throw py::value_error("length must be >= 0");
  return static_cast<std::size_t>(n);
}

std::unique_ptr<ViewHandle> wrap(View v) {
  auto h = std::make_unique<ViewHandle>();
  h->view = std::move(v);
  return h;
}

// The receiving turn of one thread (ReceiverBox), held for its lifetime.
class Turn {
 public:
  explicit Turn(ReceiverBox& box) : box_(box) {}
  ~Turn() {
    if (!held_) return;
    {
      std::lock_guard<std::mutex> lock(box_.turn_mutex);
      box_.busy = false;
    }
    box_.turn_free.notify_one();
  }
  Turn(const Turn&) = delete;
  Turn& operator=(const Turn&) = delete;

  // Waits up to `timeout` (kForever: without end) for the turn; false if
  // another thread kept it that long.
  bool take(std::chrono::nanoseconds timeout) {
    std::unique_lock<std::mutex> lock(box_.turn_mutex);
    const auto free = [&] { return !box_.busy; };
    if (timeout == kForever) {
      box_.turn_free.wait(lock, free);
    } else if (!box_.turn_free.wait_for(lock, timeout, free)) {
      return false;
    }
    box_.busy = true;
    held_ = true;
    return true;
  }
  // Without waiting.
  bool try_take() { return take(std::chrono::nanoseconds(0)); }

 private:
  ReceiverBox& box_;
  bool held_ = false;
};

// Takes the receiver (waiting for another thread's turn to end), then
// receives, all within `timeout` and without the GIL.
Result<View> receive_released(ReceiverBox& box, std::chrono::nanoseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  Turn turn(box);
  {
    py::gil_scoped_release nogil;
    if (!turn.take(timeout)) return Errc::kTimedOut;
  }
  const auto spent = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start);
  const std::chrono::nanoseconds left =
      timeout == kForever ? kForever : std::max(std::chrono::nanoseconds(0), timeout - spent);
  return wait_released(left, [&](std::chrono::nanoseconds slice) { return box.receiver.receive(slice); });
}

}  // namespace

// --- Sender ----------------------------------------------------------------

std::shared_ptr<Sender> SenderHandle::get(const char* what) const {
  if (!sender) raise_closed(std::string("fbuf.Sender ") + what + ": the sender is closed");
  return sender;
}

void SenderHandle::close() {
  std::shared_ptr<Sender> s = std::move(sender);
  // A send waiting on another thread holds its own reference, and the
  // Sender goes when it returns.
  py::gil_scoped_release nogil;
  s.reset();
}

// Sends the buffer of `b`. The fbuf::Buffer leaves the handle for the call
// (so that no other thread can export or release it while the GIL is
// released) and comes back if the send fails: fbuf leaves it untouched then.
void send_buffer(SenderHandle& s, BufferHandle& b, const py::object& length, std::optional<py::object> timeout) {
  std::shared_ptr<Sender> sender = s.get("send");
  b.check_can_give_up("send");
  const std::size_t n = send_length(b, length);
  const std::chrono::nanoseconds t = timeout ? to_timeout(*timeout) : std::chrono::nanoseconds(0);
  Buffer out = std::move(b.buffer);
  b.busy = true;
  std::error_code ec;
  try {
    if (timeout) {
      ec = wait_released(t, [&](std::chrono::nanoseconds slice) {
        return sender->send(std::move(out), n, slice);
      });
    } else {
      ec = sender->try_send(std::move(out), n);
    }
  } catch (...) {
    b.buffer = std::move(out);  // a signal handler raised between slices
    b.busy = false;
    throw;
  }
  b.busy = false;
  if (ec) {
    b.buffer = std::move(out);
    raise_error(ec, timeout ? "send" : "try_send");
  }
}

// Sends several buffers as one batch, all or nothing (Sender::send_many):
// every Buffer leaves its handle for the call and all come back on failure.
void send_many(SenderHandle& s, const std::vector<BufferHandle*>& handles, const py::object& lengths,
               const py::object& timeout) {
  std::shared_ptr<Sender> sender = s.get("send_many");
  for (const BufferHandle* b : handles) {
    if (b == nullptr) throw py::type_error("send_many takes fbuf.Buffer objects, not None");
  }
  const std::chrono::nanoseconds t = to_timeout(timeout);
  std::vector<std::size_t> n;
  if (lengths.is_none()) {
    for (BufferHandle* b : handles) n.push_back(b->size);
  } else {
    for (py::handle l : lengths) {
      const auto v = l.cast<long long>();
      if (v < 0) throw py::value_error("lengths must be >= 0");
      n.push_back(static_cast<std::size_t>(v));
    }
    if (n.size() != handles.size()) throw py::value_error("one length per buffer");
  }
  for (std::size_t i = 0; i < handles.size(); ++i) {
    handles[i]->check_can_give_up("send_many");
    for (std::size_t j = 0; j < i; ++j) {
      if (handles[j] == handles[i]) throw py::value_error("send_many: the same Buffer twice");
    }
  }
  std::vector<Buffer> out;
  out.reserve(handles.size());
  for (BufferHandle* b : handles) {
    out.push_back(std::move(b->buffer));
    b->busy = true;
  }
  const auto give_back = [&] {
    for (std::size_t i = 0; i < handles.size(); ++i) {
      if (out[i]) handles[i]->buffer = std::move(out[i]);
      handles[i]->busy = false;
    }
  };
  std::error_code ec;
  try {
    ec = wait_released(t, [&](std::chrono::nanoseconds slice) {
      return sender->send_many(out, n, slice);
    });
  } catch (...) {
    give_back();
    throw;
  }
  give_back();  // on success every Buffer in `out` is empty: nothing comes back
  if (ec) raise_error(ec, "send_many");
}

// --- Receiver ---------------------------------------------------------------

std::shared_ptr<ReceiverBox> ReceiverHandle::get(const char* what) const {
  if (!box) raise_closed(std::string("fbuf.Receiver ") + what + ": the receiver is closed");
  return box;
}

void ReceiverHandle::close() {
  std::shared_ptr<ReceiverBox> b = std::move(box);
  py::gil_scoped_release nogil;
  b.reset();
}

std::unique_ptr<ViewHandle> receive(ReceiverHandle& r, const py::object& timeout) {
  std::shared_ptr<ReceiverBox> box = r.get("receive");
  Result<View> v = receive_released(*box, to_timeout(timeout));
  if (!v) raise_error(v.error(), "receive");
  return wrap(std::move(*v));
}

std::unique_ptr<ViewHandle> try_receive(ReceiverHandle& r) {
  std::shared_ptr<ReceiverBox> box = r.get("try_receive");
  Turn turn(*box);
  if (!turn.try_take()) raise_error(make_error_code(Errc::kWouldBlock), "try_receive (another thread is receiving)");
  Result<View> v = box->receiver.try_receive();
  if (!v) raise_error(v.error(), "try_receive");
  return wrap(std::move(*v));
}

// The iterator protocol: views until the end of the stream; a descriptor
// that failed validation is skipped (it is counted in stats()).
std::unique_ptr<ViewHandle> next_view(ReceiverHandle& r) {
  std::shared_ptr<ReceiverBox> box = r.get("iteration");
  for (;;) {
    Result<View> v = receive_released(*box, kForever);
    if (v) return wrap(std::move(*v));
    if (v.error() == Errc::kPeerGone) throw py::stop_iteration();
    if (v.error() != Errc::kBadDescriptor) raise_error(v.error(), "receive");
  }
}

}  // namespace fbuf::python
