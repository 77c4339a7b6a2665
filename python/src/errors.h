// fbuf's errors as Python exceptions: fbuf.Error (an OSError) and one
// subclass per fbuf::Errc, named as the Errc without its k (WouldBlock,
// TimedOut, PeerGone, ...). Each carries `code` (the fbuf::Errc value, or
// None for an errno) and `errno` (the errno, or None for an fbuf code).
#pragma once

#include <pybind11/pybind11.h>

#include <string>
#include <system_error>

namespace fbuf::python {

// Creates the exception classes in `m` and registers the translator that
// turns a thrown fbuf::Error (setup calls) into them.
void register_errors(pybind11::module_& m);

// Sets the Python error for `ec`; `message` is the whole text.
void set_error(const std::error_code& ec, const std::string& message);

// Raises the exception for `ec` (hot-path results), with `context` before
// the error's own text.
[[noreturn]] void raise_error(const std::error_code& ec, const std::string& context);

// Raises fbuf.Closed: a released View or Buffer, a closed Sender or Receiver.
[[noreturn]] void raise_closed(const std::string& message);

}  // namespace fbuf::python
