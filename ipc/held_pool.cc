#include "ipc/held_pool.h"

#include <sys/mman.h>
#include <sys/socket.h>

#include <mutex>

#include "fbuf/base/assert.h"
#include "fbuf/buffers/doorbell.h"
#include "fbuf/buffers/segv_report.h"
#include "fbuf/buffers/view_owner.h"
#include "ipc/channel.h"
#include "ipc/validate.h"

namespace fbuf::detail {

class HeldPool final : public ViewOwner, public Upstream, public std::enable_shared_from_this<HeldPool> {
 public:
  HeldPool(const ipc::PoolAnnounceInfo& info, std::vector<UniqueFd> fds) : info_(info.pool) {
    if (fds.size() != ipc::kPoolAnnounceFds)
      throw_error(Errc::kProtocol, "PoolAnnounce carried " + std::to_string(fds.size()) + " fds, expected " +
                                       std::to_string(ipc::kPoolAnnounceFds));
    ipc::check_memfd(fds[0].get(), info_.pool_size, "announced pool fd");
    ipc::check_memfd(fds[1].get(), page_size(), "announced doorbell fd");
    ipc::check_memfd(fds[2].get(), info_.ring_bytes, "holder ring fd");
    ipc::check_ready_socket(fds[3].get(), "holder socket");
    pool_fd_ = std::move(fds[0]);
    bell_fd_ = std::move(fds[1]);
    UniqueFd ring_fd = std::move(fds[2]);
    sock_ = std::move(fds[3]);
    pool_map_ = Mapping::map(pool_fd_.get(), info_.pool_size, PROT_READ, "pool '" + info_.pool_name + "'");
    bell_map_ = Mapping::map(bell_fd_.get(), page_size(), PROT_READ | PROT_WRITE, "announced doorbell");
    ring_ = ChannelMemory(Mapping::map(ring_fd.get(), info_.ring_bytes, PROT_READ | PROT_WRITE, "holder ring"),
                          info_.send_capacity, info_.return_capacity);
    // Checked once, here, as a Welcome's ring header is.
    ipc::ChannelHeader* h = ring_.header();
    const std::uint64_t magic = h->magic;
    const std::uint32_t version = h->version, send_cap = h->send_capacity, ret_cap = h->return_capacity;
    if (magic != ipc::kChannelMagic || version != ipc::kProtocolVersion || send_cap != info_.send_capacity ||
        ret_cap != info_.return_capacity)
      throw_error(Errc::kProtocol, "holder ring header does not match the announcement");
    install_segv_report();
    segv_ = SegvRegistration(register_mapping(pool_map_.data(), pool_map_.size(), MappingKind::kReceived,
                                              info_.policy, info_.pool_name.c_str(), info_.classes));
    bell_ = reinterpret_cast<DoorbellHeader*>(bell_map_.data());
    returns_ = RingProducer(&h->ret, ring_.return_slots(), info_.return_capacity);
    geometry_ = ipc::PoolGeometry(info_.classes);
  }

  Result<View> make_view(const Descriptor& d) noexcept {
    Descriptor local = d;
    local.pool = 0;  // the slot was resolved by the caller
    std::optional<std::uint64_t> at = geometry_.locate(local);
    if (!at) return Errc::kBadDescriptor;
    return ViewAccess::make(std::shared_ptr<ViewOwner>(shared_from_this(), this), pool_map_.data() + *at, d.length,
                            d.pool, d.index, d.generation);
  }

  void release(std::uint32_t slot, std::uint32_t index, std::uint32_t generation) noexcept override {
    // A View shared with a receiver in this process (forwarded to it) goes
    // back when the last of them does.
    if (shares_.take(slot, index, generation)) return;
    bool pushed;
    {
      std::lock_guard lock(return_mu_);
      // Room for the returns of everything lent to this holder is kept by
      // push_lend(); a view forwarded to this receiver more often than the
      // ring holds loses the excess (reclaimed when the holder goes).
      pushed = returns_.push(Descriptor{0, index, generation, 0, 0, 0, 0});
    }
    // push() issued the fence the doorbell needs.
    if (pushed) ring_doorbell_fenced(bell_);
  }

  std::shared_ptr<Upstream> upstream() noexcept override {
    return std::shared_ptr<Upstream>(shared_from_this(), this);
  }

  bool share(std::uint32_t slot, std::uint32_t index, std::uint32_t generation) noexcept override {
    return shares_.add(slot, index, generation);
  }

  // --- Upstream: this receiver forwards views of the pool on. ---
  const ipc::WelcomeInfo& pool_info() const noexcept override { return info_; }
  int pool_fd() const noexcept override { return pool_fd_.get(); }
  int doorbell_fd() const noexcept override { return bell_fd_.get(); }
  std::optional<std::uint32_t> offset_in_buffer(std::uint32_t index, const std::byte* data,
                                                std::size_t size) const noexcept override {
    return ipc::offset_in_buffer(geometry_, pool_map_.data(), index, data, size);
  }
  HolderGrant request_holder(Clock::time_point deadline) override {
    std::lock_guard lock(sock_mu_);
    return path::request_holder(sock_.get(), deadline, nullptr);
  }
  std::error_code lend(std::uint32_t index, std::uint32_t generation, std::uint32_t token,
                       Clock::time_point deadline) noexcept override {
    // Keep room for a return of every buffer of the pool.
    return path::push_lend(returns_, return_mu_, static_cast<std::uint32_t>(geometry_.buffer_count()), sock_.get(),
                           index, generation, token, deadline);
  }

 private:
  ipc::WelcomeInfo info_;
  UniqueFd pool_fd_;
  UniqueFd bell_fd_;
  Mapping pool_map_;
  Mapping bell_map_;
  DoorbellHeader* bell_ = nullptr;
  SegvRegistration segv_;
  ChannelMemory ring_;
  ipc::PoolGeometry geometry_;
  std::mutex return_mu_;
  RingProducer returns_;  // guarded by return_mu_
  SharedRefs shares_;     // views forwarded to receivers of this process
  std::mutex sock_mu_;    // serialises requests on sock_
  UniqueFd sock_;         // the holder socket: the owner watches it for a hang-up
};

std::shared_ptr<HeldPool> make_held_pool(const ipc::PoolAnnounceInfo& info, std::vector<UniqueFd> fds) {
  return std::make_shared<HeldPool>(info, std::move(fds));
}

Result<View> make_held_view(HeldPool& pool, const Descriptor& d) noexcept { return pool.make_view(d); }

void return_held(HeldPool& pool, std::uint32_t index, std::uint32_t generation) noexcept {
  pool.release(0, index, generation);
}

}  // namespace fbuf::detail
