// fbuf::WaitSet over epoll and the receivers' readiness fds.
#include "fbuf/wait_set.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "fbuf/base/assert.h"
#include "fbuf/base/deadline.h"
#include "fbuf/receiver.h"

namespace fbuf {

WaitSet::WaitSet() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
  if (epoll_ < 0) detail::throw_errno("epoll_create1(WaitSet)");
}

WaitSet::~WaitSet() {
  if (epoll_ >= 0) ::close(epoll_);
}

WaitSet::WaitSet(WaitSet&& o) noexcept
    : epoll_(std::exchange(o.epoll_, -1)), members_(std::move(o.members_)), ready_(std::move(o.ready_)) {}

WaitSet& WaitSet::operator=(WaitSet&& o) noexcept {
  if (this != &o) {
    if (epoll_ >= 0) ::close(epoll_);
    epoll_ = std::exchange(o.epoll_, -1);
    members_ = std::move(o.members_);
    ready_ = std::move(o.ready_);
  }
  return *this;
}

void WaitSet::add(Receiver& receiver) {
  if (receiver.fd() < 0) detail::throw_error(Errc::kInvalidArgument, "WaitSet::add of a moved-from Receiver");
  if (std::find(members_.begin(), members_.end(), &receiver) != members_.end())
    detail::throw_error(Errc::kInvalidArgument, "WaitSet::add of a Receiver already in the set");
  members_.reserve(members_.size() + 1);  // nothing throws after epoll_ctl
  ready_.reserve(members_.size() + 1);
  // Level-triggered: arm() drains the fd before each wait, so a record
  // left from an earlier arming cannot make the wait spin.
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &receiver;
  if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, receiver.fd(), &ev) != 0) detail::throw_errno("epoll_ctl(WaitSet::add)");
  members_.push_back(&receiver);
}

void WaitSet::remove(Receiver& receiver) noexcept {
  auto it = std::find(members_.begin(), members_.end(), &receiver);
  if (it == members_.end()) return;
  if (receiver.fd() >= 0) (void)::epoll_ctl(epoll_, EPOLL_CTL_DEL, receiver.fd(), nullptr);
  members_.erase(it);
}

std::span<Receiver* const> WaitSet::wait(std::chrono::nanoseconds timeout) noexcept {
  const auto deadline = detail::deadline_after(timeout);
  epoll_event events[16];
  for (;;) {
    // Arming every member is the check: a member that refuses to arm has
    // something waiting. Only when all are armed may the thread sleep, and
    // then any of them becoming ready wakes it (ReceiverCore::arm()).
    ready_.clear();
    for (Receiver* r : members_) {
      if (!r->arm()) ready_.push_back(r);
    }
    if (!ready_.empty()) return ready_;
    const auto left = detail::time_left(deadline, kForever);
    if (left.count() == 0) return ready_;
    int ms = -1;
    if (left < std::chrono::hours(24)) {
      // Rounded up, so that a wait never returns before its deadline only
      // to be called again at once.
      ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
    }
    // The events themselves are not needed: the next round of arm() says
    // which members are ready, and spurious wake-ups fall out there.
    (void)::epoll_wait(epoll_, events, 16, ms);
  }
}

}  // namespace fbuf
