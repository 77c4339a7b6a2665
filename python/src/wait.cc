#include "wait.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

namespace py = pybind11;

namespace fbuf::python {

std::chrono::nanoseconds to_timeout(const py::object& seconds) {
  if (seconds.is_none()) return kForever;
  const double s = seconds.cast<double>();
  if (std::isnan(s) || s < 0) throw py::value_error("a timeout is a number of seconds >= 0, or None");
  constexpr double kCentury = 100.0 * 365 * 24 * 3600;
  if (s >= kCentury) return kForever;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(s));
}

bool unsliced() {
  static const bool value = [] {
    const char* v = std::getenv("FBUF_TEST_UNSLICED_SLEEP");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return value;
}

}  // namespace fbuf::python
