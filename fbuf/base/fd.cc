#include "fbuf/base/fd.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "fbuf/base/assert.h"

namespace fbuf::detail {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);  // close() errors leave nothing to recover here.
  fd_ = fd;
}

Mapping Mapping::map(int fd, std::size_t length, int prot, const std::string& context) {
  void* p = ::mmap(nullptr, length, prot, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw_errno("mmap(" + context + ")");
  return Mapping(p, length);
}

void Mapping::reset() noexcept {
  if (addr_ != nullptr) ::munmap(addr_, length_);
  addr_ = nullptr;
  length_ = 0;
}

UniqueFd make_sealed_memfd(const std::string& name, std::size_t size, bool final) {
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) throw_errno("memfd_create(" + name + ")");
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) throw_errno("ftruncate(" + name + ")");
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | (final ? F_SEAL_SEAL : 0)) != 0)
    throw_errno("F_ADD_SEALS(" + name + ")");
  return fd;
}

UniqueFd reopen_read_only(int fd, const std::string& context) {
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  UniqueFd ro(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ro) throw_errno("open(" + path + ", O_RDONLY) for " + context);
  return ro;
}

std::size_t page_size() noexcept {
  static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

}  // namespace fbuf::detail
