#include "handles.h"

#include <cstdio>
#include <string>

#include "errors.h"

namespace py = pybind11;

namespace fbuf::python {
namespace {

[[noreturn]] void raise_buffer_error(const std::string& message) {
  PyErr_SetString(PyExc_BufferError, message.c_str());
  throw py::error_already_set();
}

// The C++ object behind `self`; null with a Python error set if it is not
// one (cannot happen for instances of the classes the slots are installed
// on, which Python code cannot construct half-way).
template <class T>
T* handle_of(PyObject* self) {
  try {
    return py::handle(self).cast<T*>();
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_TypeError, e.what());
  }
  return nullptr;
}

// The buffer protocol's two slots for a handle type: `describe(handle)`
// yields the exported bytes and whether they are read-only; every export
// that succeeds is counted, and the release slot uncounts it.
struct Exported {
  void* data;
  std::size_t size;
  bool readonly;
};

template <class Handle, Exported (*describe)(Handle&, int flags)>
int getbuffer(PyObject* self, Py_buffer* out, int flags) {
  auto* h = handle_of<Handle>(self);
  if (h == nullptr) return -1;
  try {
    const Exported e = describe(*h, flags);
    // Fills `out` and takes a reference to `self` in out->obj, which the
    // consumer's PyBuffer_Release drops after calling the release slot.
    if (PyBuffer_FillInfo(out, self, e.data, static_cast<Py_ssize_t>(e.size), e.readonly ? 1 : 0, flags) != 0) {
      return -1;
    }
  } catch (py::error_already_set& e) {
    e.restore();
    return -1;
  }
  ++h->exports;
  return 0;
}

template <class Handle>
void releasebuffer(PyObject* self, Py_buffer*) {
  // The release slot cannot fail; the object is alive (out->obj holds it).
  if (auto* h = handle_of<Handle>(self)) {
    --h->exports;
  } else {
    PyErr_Clear();
  }
}

Exported describe_buffer(BufferHandle& h, int) {
  fbuf::Buffer& b = h.get("export");
  return {b.data(), h.size, false};
}

Exported describe_view(ViewHandle& h, int flags) {
  const fbuf::View& v = h.get("export");
  if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE) {
    raise_buffer_error("an fbuf.View is read-only (the pool is mapped read-only in receivers)");
  }
  // PyBuffer_FillInfo takes a non-const pointer; readonly tells every
  // consumer not to write, and the pages are mapped PROT_READ anyway.
  return {const_cast<std::byte*>(v.data()), v.size(), true};
}

void install(py::handle cls, getbufferproc get, releasebufferproc release) {
  // pybind11 makes every class a heap type; with py::buffer_protocol() it
  // has already pointed tp_as_buffer at the type's own as_buffer slots,
  // which are ours to fill before the first instance exists.
  auto* type = reinterpret_cast<PyHeapTypeObject*>(cls.ptr());
  type->as_buffer.bf_getbuffer = get;
  type->as_buffer.bf_releasebuffer = release;
  type->ht_type.tp_as_buffer = &type->as_buffer;
}

}  // namespace

fbuf::Buffer& BufferHandle::get(const char* what) {
  if (busy) {
    raise_buffer_error(std::string("fbuf.Buffer ") + what + ": the buffer is being sent by another thread");
  }
  if (!buffer) {
    raise_closed(std::string("fbuf.Buffer ") + what + ": the buffer was already sent or released");
  }
  return buffer;
}

void BufferHandle::check_can_give_up(const char* what) {
  get(what);
  if (exports > 0) {
    raise_buffer_error(std::string("fbuf.Buffer ") + what + ": " + std::to_string(exports) +
                       " memoryview(s) or array(s) still export it; release or delete them first");
  }
}

std::string BufferHandle::repr() const {
  if (busy) return "<fbuf.Buffer being sent>";
  if (!buffer) return "<fbuf.Buffer released>";
  return "<fbuf.Buffer index=" + std::to_string(buffer.index()) + " size=" + std::to_string(size) +
         " capacity=" + std::to_string(buffer.capacity()) + ">";
}

const fbuf::View& ViewHandle::get(const char* what) const {
  if (!view) raise_closed(std::string("fbuf.View ") + what + ": the view was released");
  return view;
}

void ViewHandle::release() {
  if (!view) return;
  if (exports > 0) {
    raise_buffer_error("fbuf.View release: " + std::to_string(exports) +
                       " memoryview(s) or array(s) still export it; release or delete them first");
  }
  view.reset();
}

std::string ViewHandle::repr() const {
  if (!view) return "<fbuf.View released>";
  return "<fbuf.View index=" + std::to_string(view.index()) + " size=" + std::to_string(view.size()) +
         ">";
}

void install_buffer_protocol(py::handle buffer_class, py::handle view_class) {
  install(buffer_class, getbuffer<BufferHandle, describe_buffer>, releasebuffer<BufferHandle>);
  install(view_class, getbuffer<ViewHandle, describe_view>, releasebuffer<ViewHandle>);
}

}  // namespace fbuf::python
