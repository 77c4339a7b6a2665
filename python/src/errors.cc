#include "errors.h"

#include <array>
#include <cstddef>
#include <exception>

#include "fbuf/error.h"

namespace py = pybind11;

namespace fbuf::python {
namespace {

struct ExceptionSpec {
  Errc code;
  const char* name;
  // A builtin exception that the class also derives from, so that code
  // written for sockets and files catches it as it would theirs; or null.
  PyObject* also;
  const char* doc;
};

// The classes live as long as the interpreter: they are created once, at
// import, and their references are never dropped (as pybind11 does for its
// own exception types), so that no destructor runs after finalization.
PyObject* g_error = nullptr;
std::array<PyObject*, 15> g_by_code{};
static_assert(static_cast<std::size_t>(Errc::kUnsupported) + 1 == std::tuple_size_v<decltype(g_by_code)>,
              "one exception class per fbuf::Errc: add the new code to register_errors()");

PyObject* type_for(const std::error_code& ec) {
  if (ec.category() == fbuf_category()) {
    const auto i = static_cast<std::size_t>(ec.value());
    if (i < g_by_code.size() && g_by_code[i] != nullptr) return g_by_code[i];
  }
  return g_error;
}

}  // namespace

void register_errors(py::module_& m) {
  g_error = PyErr_NewExceptionWithDoc(
      "fbuf.Error",
      "An fbuf error. `code` is the fbuf error code (an int, as fbuf::Errc) or None, "
      "`errno` the OS error number or None.",
      PyExc_OSError, nullptr);
  if (g_error == nullptr) throw py::error_already_set();
  m.attr("Error") = py::handle(g_error);

  const ExceptionSpec specs[] = {
      {Errc::kWouldBlock, "WouldBlock", PyExc_BlockingIOError,
       "A try_* call found nothing free, the ring full or nothing to receive."},
      {Errc::kTimedOut, "TimedOut", PyExc_TimeoutError, "A timed call's deadline passed."},
      {Errc::kPeerGone, "PeerGone", nullptr,
       "The other end closed or died and everything it sent has been received: "
       "the end of the stream."},
      {Errc::kNoReceivers, "NoReceivers", nullptr, "send() with no receiver connected."},
      {Errc::kInvalidArgument, "InvalidArgument", PyExc_ValueError,
       "An argument out of range: a length beyond the buffer, a buffer of another pool, "
       "bad pool or sender options."},
      {Errc::kBadDescriptor, "BadDescriptor", nullptr,
       "A descriptor from the peer failed validation and was skipped (counted)."},
      {Errc::kVersionMismatch, "VersionMismatch", nullptr, "The handshake's versions differ."},
      {Errc::kProtocol, "Protocol", nullptr, "A malformed or unexpected control message."},
      {Errc::kClosed, "Closed", PyExc_ValueError,
       "The object was closed or released: a released View or Buffer, a Buffer already "
       "sent, a closed Sender or Receiver."},
      {Errc::kTooLarge, "TooLarge", nullptr, "No size class of the pool holds the size asked for."},
      {Errc::kCorrupt, "Corrupt", nullptr,
       "The peer corrupted the channel's shared memory: the stream ends (once, then PeerGone)."},
      {Errc::kCutOff, "CutOff", nullptr,
       "The sender cut this receiver off (slow-consumer policy); once, then PeerGone."},
      {Errc::kMessage, "MessageWaiting", nullptr,
       "receive() found a message of several slices next (an aggregate); the C++ and C APIs "
       "receive it whole, this binding does not yet."},
      {Errc::kUnsupported, "Unsupported", nullptr,
       "Not supported: a View of this process's own pool cannot be sent on."},
  };
  for (const ExceptionSpec& s : specs) {
    py::tuple bases = s.also != nullptr ? py::make_tuple(py::handle(g_error), py::handle(s.also))
                                        : py::make_tuple(py::handle(g_error));
    const std::string qualified = std::string("fbuf.") + s.name;
    PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), s.doc, bases.ptr(), nullptr);
    if (type == nullptr) throw py::error_already_set();
    g_by_code[static_cast<std::size_t>(s.code)] = type;
    m.attr(s.name) = py::handle(type);
  }

  // Setup calls (Pool, Sender, Receiver.connect, connect_local) throw
  // fbuf::Error, a std::system_error whose what() already has the context.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::system_error& e) {
      set_error(e.code(), e.what());
    }
  });
}

void set_error(const std::error_code& ec, const std::string& message) {
  PyObject* type = type_for(ec);
  const bool is_fbuf = ec.category() == fbuf_category();
  py::object exc;
  try {
    // OSError(errno, text) fills in `errno` and `strerror`; OSError(text)
    // leaves both None.
    exc = is_fbuf ? py::reinterpret_borrow<py::object>(type)(message)
                  : py::reinterpret_borrow<py::object>(type)(ec.value(), message);
    exc.attr("code") = is_fbuf ? py::object(py::int_(ec.value())) : py::object(py::none());
  } catch (py::error_already_set& e) {
    e.restore();  // could not even build the exception: report that instead
    return;
  }
  PyErr_SetObject(type, exc.ptr());
}

void raise_error(const std::error_code& ec, const std::string& context) {
  set_error(ec, context.empty() ? ec.message() : context + ": " + ec.message());
  throw py::error_already_set();
}

void raise_closed(const std::string& message) {
  set_error(make_error_code(Errc::kClosed), message);
  throw py::error_already_set();
}

}  // namespace fbuf::python
