// The Python objects over fbuf::Buffer and fbuf::View, and their buffer
// protocol.
//
// Lifetime, the one rule that keeps Python from reading freed memory: every
// export (a memoryview, a numpy array, anything that called
// PyObject_GetBuffer) holds a reference to the fbuf.View or fbuf.Buffer it
// came from (Py_buffer.obj) and is counted in `exports`. While an export
// lives, the handle refuses to give its buffer up: release() and send()
// raise BufferError, as memoryview.release() does while the memory is
// exported. So the fbuf::View or fbuf::Buffer, and with it the mapping
// (held by its shared owner), outlives every pointer Python has into it.
// Once released, the handle raises fbuf.Closed on any use, and a new
// export is refused the same way.
//
// All counts and state change only with the GIL held, so they need no
// atomics. A Buffer being sent is moved out of its handle before the GIL is
// released (`busy` marks it), so no other thread can reach it meanwhile.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <string>

#include "fbuf/buffer.h"

namespace fbuf::python {

struct BufferHandle {
  fbuf::Buffer buffer;
  std::size_t size = 0;      // the size asked for: the exported length
  Py_ssize_t exports = 0;    // live Py_buffers over this buffer
  bool busy = false;         // moved out for a send on some thread

  // The buffer, for a use that keeps it here; raises if it is gone.
  fbuf::Buffer& get(const char* what);
  // Checks that the buffer may leave the handle (send, release): raises
  // fbuf.Closed if already gone, BufferError while exported.
  void check_can_give_up(const char* what);
  std::string repr() const;
};

struct ViewHandle {
  fbuf::View view;
  Py_ssize_t exports = 0;

  const fbuf::View& get(const char* what) const;
  // Returns the buffer to its owner; BufferError while exported, nothing
  // if already released.
  void release();
  std::string repr() const;
};

// Replaces pybind11's buffer protocol slots of the two classes with ones
// that count exports (pybind11's cannot: its release slot does not reach
// the C++ object).
void install_buffer_protocol(pybind11::handle buffer_class, pybind11::handle view_class);

}  // namespace fbuf::python
