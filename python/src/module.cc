// fbuf._fbuf: the Python binding of fbuf's public C++ API (the package
// `fbuf` re-exports it; python/fbuf/__init__.py). This file declares the
// Python classes; the objects behind them are in handles.h (Buffer, View)
// and channels.h (Sender, Receiver).
//
// Threads: every call that can wait (allocate, send, receive,
// wait_for_receivers, connect, close) releases the GIL while it waits
// (wait.h). Nothing in the library ever needs the GIL, so holding it
// elsewhere cannot deadlock against a thread that waits without it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "channels.h"
#include "errors.h"
#include "fbuf/fbuf.h"
#include "handles.h"
#include "wait.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace fbuf::python {

namespace {

Policy to_policy(const std::string& name) {
  if (name == "volatile") return Policy::kVolatile;
  if (name == "read_only" || name == "read-only") return Policy::kReadOnly;
  if (name == "copy_on_write" || name == "copy-on-write") return Policy::kCopyOnWrite;
  throw py::value_error("policy must be 'volatile', 'read_only' or 'copy_on_write', not '" + name + "'");
}

std::string policy_name(Policy p) {
  switch (p) {
    case Policy::kVolatile: return "volatile";
    case Policy::kReadOnly: return "read_only";
    case Policy::kCopyOnWrite: return "copy_on_write";
  }
  return "unknown";
}

// sealed_copies="auto" | "never" | a size in bytes (SealedCopies::kUpTo).
void set_sealed_copies(PoolOptions& o, const py::object& v) {
  if (py::isinstance<py::str>(v)) {
    const auto name = v.cast<std::string>();
    if (name == "auto") {
      o.sealed_copies = SealedCopies::kAuto;
      return;
    }
    if (name == "never") {
      o.sealed_copies = SealedCopies::kNever;
      return;
    }
    throw py::value_error("sealed_copies must be 'auto', 'never' or a size in bytes, not '" + name + "'");
  }
  if (py::isinstance<py::int_>(v) && !py::isinstance<py::bool_>(v)) {
    const auto n = v.cast<long long>();
    if (n < 0) throw py::value_error("sealed_copies: a size must not be negative");
    o.sealed_copies = SealedCopies::kUpTo;
    o.sealed_copy_limit = static_cast<std::size_t>(n);
    return;
  }
  throw py::type_error("sealed_copies must be 'auto', 'never' or a size in bytes");
}

SlowReceiverPolicy to_slow_policy(const std::string& name) {
  if (name == "block") return SlowReceiverPolicy::kBlock;
  if (name == "fail_fast") return SlowReceiverPolicy::kFailFast;
  if (name == "skip") return SlowReceiverPolicy::kSkip;
  if (name == "cut_off") return SlowReceiverPolicy::kCutOff;
  throw py::value_error("slow_receiver must be 'block', 'fail_fast', 'skip' or 'cut_off', not '" +
                        name + "'");
}

// A hold timeout: None or 0 means none.
std::chrono::nanoseconds to_hold_timeout(const py::object& seconds) {
  if (seconds.is_none()) return std::chrono::nanoseconds(0);
  const std::chrono::nanoseconds t = to_timeout(seconds);
  return t == kForever ? std::chrono::nanoseconds(0) : t;
}

// --- stats -------------------------------------------------------------------

py::dict as_dict(const PoolStats& s) {
  return py::dict("total"_a = s.total, "free"_a = s.free, "allocated"_a = s.allocated,
                  "in_flight"_a = s.in_flight, "rejected_returns"_a = s.rejected_returns,
                  "sealed_total"_a = s.sealed_total, "sealed_free"_a = s.sealed_free,
                  "sealed_in_flight"_a = s.sealed_in_flight, "sealed_copies"_a = s.sealed_copies,
                  "sealed_fallbacks"_a = s.sealed_fallbacks);
}
py::dict as_dict(const SenderStats& s) {
  return py::dict("sent"_a = s.sent, "delivered"_a = s.delivered, "returned"_a = s.returned,
                  "rejected_returns"_a = s.rejected_returns,
                  "rejected_handshakes"_a = s.rejected_handshakes,
                  "receivers_connected"_a = s.receivers_connected,
                  "receivers_lost"_a = s.receivers_lost, "dropped"_a = s.dropped,
                  "receivers_cut_off"_a = s.receivers_cut_off);
}
py::dict as_dict(const ReceiverStats& s) {
  return py::dict("received"_a = s.received, "returned"_a = s.returned,
                  "rejected_descriptors"_a = s.rejected_descriptors, "dropped"_a = s.dropped);
}

template <class Stats>
py::class_<Stats> bind_stats(py::module_& m, const char* name, const char* doc) {
  py::class_<Stats> c(m, name, doc);
  c.def("_asdict", [](const Stats& s) { return as_dict(s); }, "The counters as a dict.");
  c.def("__repr__", [name](const Stats& s) {
    std::string out = std::string("fbuf.") + name + "(";
    bool first = true;
    for (auto item : as_dict(s)) {
      if (!first) out += ", ";
      first = false;
      out += py::str(item.first).cast<std::string>() + "=" + py::str(item.second).cast<std::string>();
    }
    return out + ")";
  });
  c.def("__eq__", [](const Stats& a, const Stats& b) { return as_dict(a).equal(as_dict(b)); });
  return c;
}

}  // namespace

}  // namespace fbuf::python

PYBIND11_MODULE(_fbuf, m) {
  using namespace fbuf;
  using namespace fbuf::python;
  m.doc() = "fbuf: zero-copy buffers between threads and processes (the compiled part).";
#ifdef FBUF_VERSION
  m.attr("__version__") = FBUF_VERSION;
#endif
  register_errors(m);

  // ---- stats ----
  bind_stats<PoolStats>(m, "PoolStats", "Pool.stats(): buffers by state.")
      .def_readonly("total", &PoolStats::total, "buffers in the pool")
      .def_readonly("free", &PoolStats::free, "ready to allocate")
      .def_readonly("allocated", &PoolStats::allocated, "held by the owner, not yet sent")
      .def_readonly("in_flight", &PoolStats::in_flight, "sent, awaiting return from some receiver")
      .def_readonly("rejected_returns", &PoolStats::rejected_returns, "forged, duplicate or foreign returns")
      .def_readonly("sealed_total", &PoolStats::sealed_total, "sealed slots (not counted in total)")
      .def_readonly("sealed_free", &PoolStats::sealed_free, "sealed slots ready for a send's copy")
      .def_readonly("sealed_in_flight", &PoolStats::sealed_in_flight, "sealed copies sent, awaiting return")
      .def_readonly("sealed_copies", &PoolStats::sealed_copies, "sends made by copying into a sealed slot")
      .def_readonly("sealed_fallbacks", &PoolStats::sealed_fallbacks,
                    "sends of a sealed class that protected their buffer instead (none free)");
  bind_stats<SenderStats>(m, "SenderStats", "Sender.stats(): the sending end's counters.")
      .def_readonly("sent", &SenderStats::sent, "buffers published (once per send)")
      .def_readonly("delivered", &SenderStats::delivered, "descriptors pushed (once per receiver)")
      .def_readonly("returned", &SenderStats::returned, "valid returns")
      .def_readonly("rejected_returns", &SenderStats::rejected_returns)
      .def_readonly("rejected_handshakes", &SenderStats::rejected_handshakes)
      .def_readonly("receivers_connected", &SenderStats::receivers_connected)
      .def_readonly("receivers_lost", &SenderStats::receivers_lost, "hung up or died; their buffers reclaimed")
      .def_readonly("dropped", &SenderStats::dropped, "buffers skipped for some receiver, once per receiver")
      .def_readonly("receivers_cut_off", &SenderStats::receivers_cut_off);
  bind_stats<ReceiverStats>(m, "ReceiverStats", "Receiver.stats(): the receiving end's counters.")
      .def_readonly("received", &ReceiverStats::received)
      .def_readonly("returned", &ReceiverStats::returned)
      .def_readonly("rejected_descriptors", &ReceiverStats::rejected_descriptors, "failed validation; skipped")
      .def_readonly("dropped", &ReceiverStats::dropped, "buffers the sender skipped for this receiver");

  // ---- Buffer ----
  py::class_<BufferHandle> buffer_class(m, "Buffer", py::buffer_protocol(), R"doc(
A writable buffer of the caller's own pool (from allocate()).

It implements the buffer protocol: memoryview(buf) and numpy.frombuffer(buf,
...) are the pool's memory itself, len(buf) bytes (the size asked for), no
copy. send() and release() refuse (BufferError) while such an export is
alive: release the memoryview or delete the array first. After send() or
release() every use raises fbuf.Closed. Dropping an unsent Buffer returns it
to its pool; so does leaving a `with` block.)doc");
  buffer_class
      .def("__len__", [](BufferHandle& b) { b.get("len"); return b.size; })
      .def("__bool__", [](const BufferHandle& b) { return static_cast<bool>(b.buffer); })
      .def_property_readonly("size", [](BufferHandle& b) { b.get("size"); return b.size; },
                             "The size asked for at allocation: the length exported and sent by default.")
      .def_property_readonly("capacity", [](BufferHandle& b) { return b.get("capacity").capacity(); },
                             "The buffer's whole size (its class's, a whole number of pages).")
      .def_property_readonly("index", [](BufferHandle& b) { return b.get("index").index(); },
                             "The buffer's index in its pool.")
      .def_property_readonly("address",
                             [](BufferHandle& b) { return reinterpret_cast<std::uintptr_t>(b.get("address").data()); },
                             "The address of its first byte in this process (in the pool's mapping).")
      .def_property_readonly("released", [](const BufferHandle& b) { return !b.buffer && !b.busy; },
                             "True once sent or released.")
      .def_property_readonly("exports", [](const BufferHandle& b) { return b.exports; },
                             "How many memoryviews/arrays currently export it.")
      .def(
          "write",
          [](BufferHandle& b, const py::object& data, std::size_t offset) {
            Buffer& buf = b.get("write");
            // PyBUF_SIMPLE: the bytes as one contiguous run, or an error
            // (a strided array would otherwise be copied as if it were one).
            Py_buffer in;
            if (PyObject_GetBuffer(data.ptr(), &in, PyBUF_SIMPLE) != 0) throw py::error_already_set();
            const auto n = static_cast<std::size_t>(in.len);
            if (offset > b.size || n > b.size - offset) {
              PyBuffer_Release(&in);
              throw py::value_error("write of " + std::to_string(n) + " bytes at offset " +
                                    std::to_string(offset) + " past the buffer's " + std::to_string(b.size));
            }
            // memmove: `data` may be this very buffer.
            if (n > 0) std::memmove(buf.data() + offset, in.buf, n);
            PyBuffer_Release(&in);
            return n;
          },
          "data"_a, "offset"_a = 0,
          "Copies the bytes of `data` (any contiguous buffer) in at `offset`; returns how many. Leaves no "
          "export behind.")
      .def(
          "release", [](BufferHandle& b) {
            if (!b.buffer && !b.busy) return;
            b.check_can_give_up("release");
            b.buffer.reset();
          },
          "Gives the buffer back to its pool unsent. BufferError while exported; nothing if already gone.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](BufferHandle& b, py::args) {
        if (!b.buffer) return false;
        b.check_can_give_up("release");
        b.buffer.reset();
        return false;
      })
      .def("__repr__", &BufferHandle::repr);

  // ---- View ----
  py::class_<ViewHandle> view_class(m, "View", py::buffer_protocol(), R"doc(
A received buffer: read-only, in the sender's pool, mapped read-only here.

It implements the read-only buffer protocol: memoryview(view) and
numpy.frombuffer(view, ...) read the pool's memory itself, no copy (the
array is not writeable). release(), or leaving `with receiver.receive() as
view:`, returns the buffer to its owner; it refuses (BufferError) while a
memoryview or array still exports it. A released View raises fbuf.Closed on
any use. Dropping the last reference releases it too.)doc");
  view_class
      .def("__len__", [](const ViewHandle& v) { return v.get("len").size(); })
      .def("__bool__", [](const ViewHandle& v) { return static_cast<bool>(v.view); })
      .def_property_readonly("size", [](const ViewHandle& v) { return v.get("size").size(); },
                             "The length the sender gave.")
      .def_property_readonly("index", [](const ViewHandle& v) { return v.get("index").index(); },
                             "The buffer's index in the sender's pool.")
      .def_property_readonly("address",
                             [](const ViewHandle& v) { return reinterpret_cast<std::uintptr_t>(v.get("address").data()); },
                             "The address of its first byte in this process (in the pool's read-only mapping).")
      .def_property_readonly("released", [](const ViewHandle& v) { return !v.view; }, "True once released.")
      .def_property_readonly("exports", [](const ViewHandle& v) { return v.exports; },
                             "How many memoryviews/arrays currently export it.")
      .def(
          "tobytes",
          [](const ViewHandle& v) {
            const View& view = v.get("tobytes");
            return py::bytes(reinterpret_cast<const char*>(view.data()), view.size());
          },
          "A copy of the bytes (the one call here that copies).")
      .def("release", &ViewHandle::release,
           "Returns the buffer to its owner. BufferError while exported; nothing if already released.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](ViewHandle& v, py::args) { v.release(); return false; })
      .def("__repr__", &ViewHandle::repr);

  install_buffer_protocol(buffer_class, view_class);

  // ---- Pool ----
  py::class_<Pool>(m, "Pool", R"doc(
A pool of buffers in one sealed memfd, split into size classes.

Pool(name, classes, policy="volatile", eager_restore=False, sealed_copies="auto")

  name      shows in /proc/<pid>/maps ("memfd:fbuf:<name>") and in errors
  classes   [(buffer_size, count), ...]; sizes round up to whole pages
  policy    what a send does to the sender's access: "volatile" (nothing),
            "read_only" (a later write faults), "copy_on_write" (a later
            write goes to a private copy)
  sealed_copies  read_only / copy_on_write: which classes send a small
            buffer by copying it into a slot the sender cannot write
            instead of protecting it: "auto" (those where a copy is cheaper,
            measured when the pool is made), "never", or a size in bytes
            (classes of buffers up to that size)

A Pool is a handle: Senders made from it share it. Thread-safe.)doc")
      .def(py::init([](std::string name, const std::vector<std::pair<std::size_t, std::uint32_t>>& classes,
                       const std::string& policy, bool eager_restore, const py::object& sealed_copies) {
             PoolOptions o;
             o.name = std::move(name);
             for (const auto& [size, count] : classes) o.classes.push_back({size, count});
             o.policy = to_policy(policy);
             o.eager_restore = eager_restore;
             set_sealed_copies(o, sealed_copies);
             return Pool(std::move(o));
           }),
           "name"_a, "classes"_a, "policy"_a = "volatile", "eager_restore"_a = false,
           "sealed_copies"_a = "auto")
      .def(
          "allocate",
          [](Pool& p, std::size_t size, const py::object& timeout) { return allocate_from(p, size, timeout, "allocate"); },
          "size"_a, "timeout"_a = py::none(),
          "A Buffer of the smallest class holding `size` bytes, waiting up to `timeout` seconds (None: "
          "for ever) for one to come back. Raises TimedOut, TooLarge.")
      .def(
          "try_allocate", [](Pool& p, std::size_t size) { return try_allocate_from(p, size, "try_allocate"); },
          "size"_a, "As allocate(), without waiting: raises WouldBlock when that class has none free.")
      .def("stats", &Pool::stats, py::call_guard<py::gil_scoped_release>(),
           "PoolStats: total, free, allocated, in_flight, rejected_returns.")
      .def_property_readonly("name", [](const Pool& p) { return p.options().name; })
      .def_property_readonly("policy", [](const Pool& p) { return policy_name(p.options().policy); })
      .def_property_readonly("eager_restore", [](const Pool& p) { return p.options().eager_restore; })
      .def_property_readonly(
          "classes",
          [](const Pool& p) {
            std::vector<std::pair<std::size_t, std::uint32_t>> out;
            for (const SizeClass& c : p.options().classes) out.emplace_back(c.buffer_size, c.count);
            return out;
          },
          "[(buffer_size, count), ...] as rounded to pages.")
      .def_property_readonly("max_buffer_size", &Pool::max_buffer_size)
      .def_property_readonly("sealed_copy_size", &Pool::sealed_copy_size,
                             "The largest buffer size whose class sends sealed copies, 0 if none.")
      .def("__repr__", [](const Pool& p) {
        return "<fbuf.Pool '" + p.options().name + "' " + policy_name(p.options().policy) + ">";
      });

  // ---- Receiver ----
  py::class_<ReceiverHandle>(m, "Receiver", R"doc(
The receiving end of a channel: Receiver.connect(service) for a Sender in
another process (or this one), Sender.connect_local() for a thread of this
process.

receive() gives Views in send order; at the end of the stream (the sender
closed or died, everything it sent received) it raises PeerGone, and
iteration (`for view in receiver:`) stops. One thread receives at a time
(others wait their turn); Views may be released on any thread and outlive
the Receiver.)doc")
      .def_static(
          "connect",
          [](const std::string& service, const py::object& timeout, const std::string& slow_receiver,
             std::uint32_t receiver_budget, const py::object& hold_timeout) {
            if (service.empty()) throw py::value_error("service must not be empty");
            ReceiverOptions o;
            o.connect_timeout = to_timeout(timeout);
            o.slow_receiver = to_slow_policy(slow_receiver);
            o.receiver_budget = receiver_budget;
            o.hold_timeout = to_hold_timeout(hold_timeout);
            auto h = std::make_unique<ReceiverHandle>();
            std::optional<Receiver> r;
            {
              py::gil_scoped_release nogil;
              r.emplace(Receiver::connect(service, o));
            }
            h->box = std::make_shared<ReceiverBox>(std::move(*r));
            return h;
          },
          "service"_a, "timeout"_a = 5.0, py::kw_only(), "slow_receiver"_a = "block", "receiver_budget"_a = 0,
          "hold_timeout"_a = py::none(),
          "Connects to the Sender listening under `service`, waiting up to `timeout` seconds for it to "
          "appear. The keyword options ask the sender to treat this receiver more leniently to its "
          "other receivers (docs/api.md, 'Slow receivers'). Raises fbuf.Error (errno ECONNREFUSED: "
          "nobody listening), VersionMismatch, Protocol.")
      .def("receive", &receive, "timeout"_a = py::none(),
           "The next View, waiting up to `timeout` seconds (None: for ever) with the GIL released. "
           "Raises TimedOut, PeerGone (end of stream), BadDescriptor (one was skipped; call again), "
           "Corrupt, CutOff, MessageWaiting (a message of several slices is next).")
      .def("try_receive", &try_receive, "The next View if one is waiting; else raises WouldBlock.")
      .def("stats",
           [](ReceiverHandle& r) { return r.get("stats")->receiver.stats(); },
           "ReceiverStats: received, returned, rejected_descriptors, dropped.")
      .def("close", &ReceiverHandle::close,
           "Hands back everything never taken and tells the sender to stop sending here. Views already "
           "received stay valid.")
      .def_property_readonly("closed", [](const ReceiverHandle& r) { return !r.box; })
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](ReceiverHandle& r, py::args) { r.close(); return false; })
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &next_view)
      .def("__repr__", [](const ReceiverHandle& r) {
        return std::string(r.box ? "<fbuf.Receiver>" : "<fbuf.Receiver closed>");
      });

  // ---- Sender ----
  py::class_<SenderHandle>(m, "Sender", R"doc(
The owner's end of a channel: publishes buffers of one pool to every
connected receiver.

Sender(pool, service=None, *, ring_capacity=256, max_receivers=64,
       allow_other_users=False, slow_receiver="block", receiver_budget=0,
       hold_timeout=None)

With a service name it listens for receivers in other processes (the
abstract socket @fbuf/<service>); without, only connect_local() receivers.
Thread-safe. close() (or leaving a `with` block) ends every receiver's
stream after it drains what was sent.)doc")
      .def(py::init([](const Pool& pool, const std::optional<std::string>& service, std::uint32_t ring_capacity,
                       std::uint32_t max_receivers, bool allow_other_users, const std::string& slow_receiver,
                       std::uint32_t receiver_budget, const py::object& hold_timeout) {
             SenderOptions o;
             o.ring_capacity = ring_capacity;
             o.max_receivers = max_receivers;
             o.allow_other_users = allow_other_users;
             o.slow_receiver = to_slow_policy(slow_receiver);
             o.receiver_budget = receiver_budget;
             o.hold_timeout = to_hold_timeout(hold_timeout);
             // fbuf aborts on an empty service name (API misuse); Python gets an exception.
             if (service && service->empty()) throw py::value_error("service must not be empty (None: no socket)");
             auto h = std::make_unique<SenderHandle>();
             h->sender = service ? std::make_shared<Sender>(pool, *service, o) : std::make_shared<Sender>(pool, o);
             h->service = h->sender->service();
             return h;
           }),
           "pool"_a, "service"_a = py::none(), py::kw_only(), "ring_capacity"_a = 256, "max_receivers"_a = 64,
           "allow_other_users"_a = false, "slow_receiver"_a = "block", "receiver_budget"_a = 0,
           "hold_timeout"_a = py::none())
      .def(
          "allocate",
          [](SenderHandle& s, std::size_t size, const py::object& timeout) {
            std::shared_ptr<Sender> sender = s.get("allocate");
            return allocate_from(*sender, size, timeout, "allocate");
          },
          "size"_a, "timeout"_a = py::none(),
          "A Buffer from the pool this channel sends from (uf_allocb); as Pool.allocate().")
      .def(
          "try_allocate",
          [](SenderHandle& s, std::size_t size) {
            std::shared_ptr<Sender> sender = s.get("try_allocate");
            return try_allocate_from(*sender, size, "try_allocate");
          },
          "size"_a, "As allocate() without waiting: raises WouldBlock.")
      .def(
          "send",
          [](SenderHandle& s, BufferHandle& b, const py::object& length, const py::object& timeout) {
            send_buffer(s, b, length, timeout);
          },
          "buffer"_a, "length"_a = py::none(), "timeout"_a = py::none(),
          "Publishes the first `length` bytes (default len(buffer)) to every receiver connected now, "
          "waiting up to `timeout` seconds (None: for ever) for ring space. On success the Buffer is "
          "consumed (later use raises Closed); on any error it is still yours. Raises BufferError while "
          "a memoryview/array exports the buffer, TimedOut, WouldBlock, NoReceivers, InvalidArgument.")
      .def(
          "try_send",
          [](SenderHandle& s, BufferHandle& b, const py::object& length) { send_buffer(s, b, length, std::nullopt); },
          "buffer"_a, "length"_a = py::none(), "As send() without waiting: raises WouldBlock.")
      .def("send_many", &send_many, "buffers"_a, "lengths"_a = py::none(), "timeout"_a = py::none(),
           "Sends a list of Buffers as one batch: ring space for all is reserved at once, contiguous "
           "buffers are protected with one call, each receiver is woken once. All or nothing: on any "
           "error every Buffer is still yours. `lengths` defaults to each len(buffer).")
      .def(
          "connect_local",
          [](SenderHandle& s) {
            std::shared_ptr<Sender> sender = s.get("connect_local");
            auto h = std::make_unique<ReceiverHandle>();
            h->box = std::make_shared<ReceiverBox>(sender->connect_local());
            return h;
          },
          "A Receiver in this process (for another thread).")
      .def(
          "wait_for_receivers",
          [](SenderHandle& s, std::size_t n, const py::object& timeout) {
            std::shared_ptr<Sender> sender = s.get("wait_for_receivers");
            const auto t = to_timeout(timeout);
            // wait_released wants kTimedOut for "not yet".
            const std::error_code ec = wait_released(t, [&](std::chrono::nanoseconds slice) {
              return sender->wait_for_receivers(n, slice) ? std::error_code() : make_error_code(Errc::kTimedOut);
            });
            return !ec;
          },
          "n"_a = 1, "timeout"_a = py::none(),
          "Waits until at least `n` receivers are connected; False if `timeout` seconds pass first.")
      .def_property_readonly("receiver_count",
                             [](SenderHandle& s) { return s.get("receiver_count")->receiver_count(); })
      .def("stats", [](SenderHandle& s) { return s.get("stats")->stats(); },
           "SenderStats: sent, delivered, returned, rejected_returns, rejected_handshakes, "
           "receivers_connected, receivers_lost, dropped, receivers_cut_off.")
      .def_property_readonly("service", [](const SenderHandle& s) { return s.service; },
                             "The service name ('' for an in-process sender).")
      .def_property_readonly("pool", [](SenderHandle& s) { return s.get("pool")->pool(); })
      .def("close", &SenderHandle::close,
           "Stops listening and ends every receiver's stream (they drain what was sent first).")
      .def_property_readonly("closed", [](const SenderHandle& s) { return !s.sender; })
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](SenderHandle& s, py::args) { s.close(); return false; })
      .def("__repr__", [](const SenderHandle& s) {
        if (!s.sender) return std::string("<fbuf.Sender closed>");
        return "<fbuf.Sender '" + s.service + "' receivers=" + std::to_string(s.sender->receiver_count()) + ">";
      });
}
