#include "ipc/listener.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <capnp/message.h>

#include <algorithm>
#include <cerrno>

#include "fbuf/base/assert.h"
#include "fbuf/buffers/pool_core.h"
#include "ipc/control.h"
#include "ipc/handshake.h"
#include "ipc/monitor.h"
#include "ipc/outlet.h"
#include "ipc/sender_core.h"

namespace fbuf::detail {
namespace {

// A connection that has not said Hello by then is dropped.
constexpr std::chrono::seconds kHelloTimeout{5};
// Handshakes pending at once, in all and per process. When all slots are
// taken, the oldest pending connection makes room for a new one: an honest
// receiver says Hello within microseconds of connecting, so only idle
// connections are ever evicted (and connect() retries a cut-off handshake).
constexpr std::size_t kMaxPending = 64;
constexpr std::size_t kMaxPendingPerProcess = 4;
// How long accepting pauses when the process is out of fds.
constexpr std::chrono::milliseconds kAcceptPause{100};

}  // namespace

Listener::Listener(SenderCore& sender, const std::string& service) : sender_(sender) {
  listen_fd_ = ipc::listen_service(service);
  epoll_fd_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd_) throw_errno("epoll_create1");
  stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_fd_) throw_errno("eventfd");
  watch(listen_fd_.get(), EPOLLIN);
  watch(stop_fd_.get(), EPOLLIN);
  thread_ = std::thread([this] { loop(); });
}

Listener::~Listener() { stop(); }

void Listener::stop() noexcept {
  if (stopped_) return;
  stopped_ = true;
  if (thread_.joinable()) {
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_fd_.get(), &one, sizeof one);
    thread_.join();
  }
  listen_fd_.reset();
  pending_.clear();
}

void Listener::close_remotes_locked() noexcept {
  for (auto& [fd, r] : remotes_) r->close_locked();
  remotes_.clear();
  // Holders stay with the pool, which watches their sockets (a duplicate
  // in each inlet) until they hang up.
  for (auto& [fd, h] : holders_) {
    sender_.orphan_holder(*h.second);
    // As in on_holder(): the inlet's duplicate would keep it registered.
    ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
  }
  holders_.clear();
}

void Listener::watch(int fd, std::uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl");
}

void Listener::loop() noexcept {
  epoll_event events[16];
  for (;;) {
    int timeout_ms = pending_.empty() ? -1 : 1000;
    if (accept_paused_) timeout_ms = static_cast<int>(kAcceptPause.count());
    // Receivers under a hold timeout are checked while sends are idle too.
    const int hold_ms = sender_.hold_check_ms();
    if (hold_ms > 0 && (timeout_ms < 0 || hold_ms < timeout_ms)) timeout_ms = hold_ms;
    int n = ::epoll_wait(epoll_fd_.get(), events, 16, timeout_ms);
    if (n < 0 && errno != EINTR) return;
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == stop_fd_.get()) return;
      if (fd == listen_fd_.get()) {
        accept_all();
      } else if (pending_.count(fd) != 0) {
        on_pending(fd, events[i].events);
      } else if (auto it = remotes_.find(fd); it != remotes_.end()) {
        on_remote(it, events[i].events);
      } else if (auto h = holders_.find(fd); h != holders_.end()) {
        on_holder(h, events[i].events);
      }
    }
    if (accept_paused_ && Clock::now() >= accept_paused_until_) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = listen_fd_.get();
      if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, listen_fd_.get(), &ev) == 0) accept_paused_ = false;
    }
    expire_pending();
    if (hold_ms > 0) sender_.check_holds();
  }
}

void Listener::accept_all() noexcept {
  for (;;) {
    UniqueFd fd(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The connection stays in the backlog; stop watching the listening
        // socket for a while rather than waking for it in a loop.
        epoll_event ev{};
        ev.data.fd = listen_fd_.get();
        ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, listen_fd_.get(), &ev);
        accept_paused_ = true;
        accept_paused_until_ = Clock::now() + kAcceptPause;
      }
      return;
    }
    try {
      // Who is it? Checked before the connection may hold a pending slot.
      ucred peer{};
      socklen_t len = sizeof peer;
      if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0) {
        sender_.count_rejected_handshake();
        continue;
      }
      if (!sender_.options().allow_other_users && peer.uid != ::geteuid() && peer.uid != 0) {
        reject(fd.get(), "user id " + std::to_string(peer.uid) + " may not connect");
        continue;
      }
      const auto per_process = static_cast<std::size_t>(std::count_if(
          pending_.begin(), pending_.end(), [&](const auto& p) { return p.second.pid == peer.pid; }));
      if (per_process >= kMaxPendingPerProcess) {
        reject(fd.get(), "too many pending handshakes from process " + std::to_string(peer.pid));
        continue;
      }
      if (pending_.size() >= kMaxPending) {
        auto oldest = std::min_element(pending_.begin(), pending_.end(),
                                       [](const auto& a, const auto& b) { return a.second.since < b.second.since; });
        sender_.count_rejected_handshake();
        drop_pending(oldest);
      }
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.fd = fd.get();
      if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) continue;
      const int raw = fd.get();
      pending_.emplace(raw, Pending{std::move(fd), Clock::now(), peer.pid, peer.uid});
    } catch (...) {
      // Out of memory for the bookkeeping: this connection is dropped.
      sender_.count_rejected_handshake();
    }
  }
}

void Listener::drop_pending(std::map<int, Pending>::iterator it) noexcept {
  // Closing the fd also removes it from the epoll set.
  pending_.erase(it);
}

void Listener::expire_pending() noexcept {
  const auto now = Clock::now();
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now - it->second.since < kHelloTimeout) {
      ++it;
      continue;
    }
    sender_.count_rejected_handshake();
    it = pending_.erase(it);
  }
}

void Listener::reject(int fd, const std::string& reason) noexcept {
  // Counted before the peer is told: a peer that reads the refusal and then
  // asks for the counters must find it there.
  sender_.count_rejected_handshake();
  try {
    capnp::MallocMessageBuilder m;
    ipc::build_reject(m, reason);
    (void)ipc::send_message(fd, m, {});
  } catch (...) {
    // The connection is being dropped anyway.
  }
}

void Listener::on_pending(int fd, std::uint32_t events) noexcept {
  auto node = pending_.extract(fd);
  // Owned here until the end of this call, or handed to a new outlet: a
  // Reject is only ever written to a socket this function still owns.
  UniqueFd sock = std::move(node.mapped().fd);
  const Pending& peer = node.mapped();
  if ((events & EPOLLIN) == 0) return;  // hung up before saying Hello
  try {
    ipc::Datagram dg;
    if (auto ec = ipc::receive_message(sock.get(), dg, std::chrono::nanoseconds(0)); ec) {
      reject(sock.get(), "unreadable Hello: " + ec.message());
      return;
    }
    if (ipc::request_kind(dg.words) == ipc::Request::kMonitor) {
      answer_monitor(sock.get(), dg.fds, dg.words);
      return;  // closes the connection
    }
    const ipc::HelloInfo hello = ipc::decode_hello(dg.words);
    if (!dg.fds.empty()) throw_error(Errc::kProtocol, "Hello carried fds");
    sender_.check_room(remotes_.size());
    const int raw = sock.get();
    std::shared_ptr<RemoteOutlet> outlet = sender_.add_remote(sock, hello);  // consumes `sock` on success
    sender_.set_peer(*outlet, static_cast<std::uint32_t>(peer.pid), peer.uid);
    remotes_.emplace(raw, std::move(outlet));
  } catch (const std::exception& e) {
    if (sock) reject(sock.get(), e.what());
  } catch (...) {
    if (sock) reject(sock.get(), "handshake failed");
  }
}

void Listener::answer_monitor(int fd, const std::vector<UniqueFd>& fds, kj::ArrayPtr<const capnp::word> words) {
  // Throws (and the caller rejects) for a bad version or attached fds.
  ipc::decode_monitor_request(words);
  if (!fds.empty()) throw_error(Errc::kProtocol, "MonitorRequest carried fds");
  std::vector<std::shared_ptr<RemoteOutlet>> remotes;
  remotes.reserve(remotes_.size());
  for (const auto& [raw, r] : remotes_) remotes.push_back(r);
  const ipc::MonitorInfo info = sender_.monitor(remotes);
  capnp::MallocMessageBuilder m;
  ipc::build_monitor_reply(m, info);
  // The socket is non-blocking and the reply one datagram: a client that
  // does not read cannot stall this thread (a full buffer just fails).
  if (auto ec = ipc::send_message(fd, m, {}); ec) throw Error(ec, "sending MonitorReply");
}

void Listener::handle_peer_message(int fd, const ipc::Datagram& dg, ReturnInlet& requester) noexcept {
  try {
    const ipc::PeerMessage kind = ipc::decode_peer_message(dg.words);
    if (!dg.fds.empty()) throw_error(Errc::kProtocol, "a request carried fds");
    if (kind == ipc::PeerMessage::kDrainRequest) {
      sender_.drain_returns();
      return;
    }
    auto [own, inlet] = sender_.grant_holder(fd, requester);
    const int raw = own.get();
    watch(raw, EPOLLIN | EPOLLRDHUP);
    holders_.emplace(raw, std::pair{std::move(own), std::move(inlet)});
  } catch (const std::exception& e) {
    reject(fd, e.what());
  } catch (...) {
    reject(fd, "request failed");
  }
}

void Listener::on_holder(std::map<int, std::pair<UniqueFd, std::shared_ptr<ReturnInlet>>>::iterator it,
                         std::uint32_t events) noexcept {
  const int fd = it->first;
  ReturnInlet& inlet = *it->second.second;
  bool gone = (events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)) != 0;
  if (!gone) {
    ipc::Datagram dg;
    std::error_code ec = ipc::receive_message(fd, dg, std::chrono::nanoseconds(0));
    if (ec == make_error_code(Errc::kPeerGone)) {
      gone = true;
    } else if (!ec) {
      // A holder that forwards on asks for holders of its own.
      handle_peer_message(fd, dg, inlet);
    }
  }
  if (gone) {
    // Its process closed the socket or died: everything it holds comes
    // back (a holder never detaches; its views end with its socket).
    sender_.on_holder_hang_up(inlet);
    // Out of the epoll set before the fd closes: the inlet keeps a
    // duplicate of this socket (to watch it once the Sender is gone), so
    // closing the fd alone would leave the hung-up socket registered under
    // this fd's number, which the next socketpair() reuses: its hang-up
    // would then be reported as the new holder's, reclaiming what that
    // holder's process still holds (docs/design.md, "The path", crashes).
    ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
    holders_.erase(it);
  }
}

void Listener::on_remote(std::map<int, std::shared_ptr<RemoteOutlet>>::iterator it,
                         std::uint32_t events) noexcept {
  RemoteOutlet& outlet = *it->second;
  const int fd = it->first;
  bool finished = false;
  if ((events & (EPOLLHUP | EPOLLERR)) != 0) {
    // The receiver's process closed its socket or died.
    sender_.on_hang_up(outlet);
    finished = true;
  } else {
    // A receiver sends nothing after Hello but its end-of-file (detach).
    ipc::Datagram dg;
    std::error_code ec = ipc::receive_message(fd, dg, std::chrono::nanoseconds(0));
    if (ec == make_error_code(Errc::kPeerGone) || (events & EPOLLRDHUP) != 0) {
      finished = sender_.on_detach(outlet);
      if (!finished) {
        // Only a hang-up is of interest now (it is always reported).
        epoll_event ev{};
        ev.data.fd = fd;
        ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, fd, &ev);
      }
    } else if (!ec) {
      // After the Hello, a receiver that forwards what it holds asks for
      // holders and for drains (the path).
      handle_peer_message(fd, dg, *outlet.inlet());
    }
  }
  if (finished) {
    ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
    remotes_.erase(it);
  }
}

}  // namespace fbuf::detail
