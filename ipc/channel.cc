#include "ipc/channel.h"

#include <sys/mman.h>

#include <new>

#include "fbuf/base/assert.h"

namespace fbuf::detail {
ipc::ChannelHeader* init_channel_header(std::byte* memory, std::uint32_t send_capacity,
                                        std::uint32_t return_capacity) noexcept {
  auto* h = new (memory) ipc::ChannelHeader{};
  h->magic = ipc::kChannelMagic;
  h->version = ipc::kProtocolVersion;
  h->send_capacity = send_capacity;
  h->return_capacity = return_capacity;
  return h;
}

ChannelMemory ChannelMemory::anonymous(std::uint32_t send_capacity) {
  const std::size_t bytes = ipc::ChannelHeader::bytes(send_capacity, 0);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw_errno("mmap(in-process ring)");
  Mapping map(p, bytes);
  init_channel_header(map.data(), send_capacity, 0);
  return ChannelMemory(std::move(map), send_capacity, 0);
}

ChannelMemory ChannelMemory::shared(std::uint32_t send_capacity, std::uint32_t return_capacity, UniqueFd& fd,
                                    const std::string& name) {
  const std::size_t bytes = ipc::ChannelHeader::bytes(send_capacity, return_capacity);
  fd = make_sealed_memfd("fbuf-ring:" + name, bytes);
  Mapping map = Mapping::map(fd.get(), bytes, PROT_READ | PROT_WRITE, "ring of '" + name + "'");
  init_channel_header(map.data(), send_capacity, return_capacity);
  return ChannelMemory(std::move(map), send_capacity, return_capacity);
}

}  // namespace fbuf::detail
