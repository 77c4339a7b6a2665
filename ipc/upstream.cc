#include "ipc/upstream.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <poll.h>
#include <sys/socket.h>

#include "fbuf/base/assert.h"
#include "fbuf/base/wake.h"
#include "fbuf/buffers/returns.h"

namespace fbuf::detail::path {
namespace {

// A stage waiting for room in its return ring re-checks (and asks the
// owner to drain again) at least this often.
constexpr std::chrono::milliseconds kMaxSleep{20};

}  // namespace

HolderGrant request_holder(int sock, Clock::time_point deadline, std::vector<ipc::Datagram>* stash) {
  capnp::MallocMessageBuilder m;
  ipc::build_holder_request(m);
  if (auto ec = ipc::send_message(sock, m, {}); ec) throw Error(ec, "sending HolderRequest");
  for (;;) {
    const auto left = time_left(deadline, kForever);
    if (left.count() == 0) throw_error(Errc::kTimedOut, "waiting for HolderGrant");
    ipc::Datagram dg;
    if (auto ec = ipc::receive_message(sock, dg, left); ec) throw Error(ec, "waiting for HolderGrant");
    if (ipc::is_pool_announce(dg.words)) {
      // Announced by the stage upstream of this receiver, for a descriptor
      // it has not reached yet: kept for the receiving thread.
      if (stash == nullptr || stash->size() >= ipc::kMaxPoolSlots)
        throw_error(Errc::kProtocol, "unexpected PoolAnnounce while waiting for HolderGrant");
      stash->push_back(std::move(dg));
      continue;
    }
    HolderGrant g;
    g.info = ipc::decode_holder_grant(dg.words);
    if (dg.fds.size() != ipc::kHolderGrantFds)
      throw_error(Errc::kProtocol, "HolderGrant carried " + std::to_string(dg.fds.size()) + " fds, expected " +
                                       std::to_string(ipc::kHolderGrantFds));
    ipc::check_memfd(dg.fds[0].get(), g.info.ring_bytes, "holder ring fd");
    ipc::check_ready_socket(dg.fds[1].get(), "holder socket");
    g.ring = std::move(dg.fds[0]);
    g.sock = std::move(dg.fds[1]);
    return g;
  }
}

std::error_code push_lend(RingProducer& ring, std::mutex& mu, std::uint32_t keep, int sock, std::uint32_t index,
                          std::uint32_t generation, std::uint32_t token, Clock::time_point deadline) noexcept {
  const Descriptor record{0, index, generation, 0, 0, kLendRecord, token};
  auto try_push = [&] {
    std::lock_guard lock(mu);
    if (ring.reserve(keep + 1) != RingStatus::kOk) return false;
    ring.write(record);
    (void)ring.publish();  // the owner's pool never arms a return ring
    return true;
  };
  for (;;) {
    if (try_push()) return {};
    // The owner's process is gone (its end of the socket closed, which
    // happens only when it exits or dies): nobody can reuse the buffer any
    // more, and the mapping downstream keeps the bytes.
    pollfd p{sock, POLLRDHUP, 0};
    if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0) return {};
    // The owner collects returns lazily: ask it to drain now. Never
    // waits: an owner that reads nothing (its Sender closed) fills the
    // socket, and then the wait below runs to the deadline.
    try {
      capnp::MallocMessageBuilder m;
      ipc::build_drain_request(m);
      kj::Array<capnp::word> words = capnp::messageToFlatArray(m);
      auto bytes = words.asBytes();
      (void)::send(sock, bytes.begin(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    } catch (...) {
      // Out of memory for the request: the wait below is sliced anyway.
    }
    const auto left = time_left(deadline, sleep_slice(kMaxSleep));
    if (left.count() == 0) return Errc::kTimedOut;
    RingIndices* idx = ring.indices();
    // The owner's drain hands slots back with release(), which wakes
    // producer_waiters on space_seq.
    if (sleep_until(idx->producer_waiters, idx->space_seq, left, [&] {
          std::lock_guard lock(mu);
          return ring.reserve(keep + 1) == RingStatus::kOk;
        }))
      continue;
  }
}

}  // namespace fbuf::detail::path
