// The public Receiver handle.
#include "fbuf/receiver.h"

#include <thread>

#include "fbuf/base/deadline.h"
#include "ipc/receiver_core.h"
#include "ipc/remote_receiver.h"

namespace fbuf {
namespace {

bool cut_off(const std::error_code& ec) {
  return ec == make_error_code(Errc::kPeerGone) || ec == std::error_code(ECONNRESET, std::system_category()) ||
         ec == std::error_code(EPIPE, std::system_category());
}

}  // namespace

Receiver Receiver::connect(std::string_view service, ReceiverOptions options) {
  const auto deadline = detail::deadline_after(options.connect_timeout);
  for (;;) {
    try {
      return Receiver(detail::connect_remote(service, deadline, options));
    } catch (const Error& e) {
      // A sender that closes while this handshake is in its backlog cuts
      // the connection off; its successor may already be listening.
      if (!cut_off(e.code()) || detail::Clock::now() >= deadline) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
}

Receiver::Receiver() noexcept = default;
Receiver::Receiver(std::shared_ptr<detail::ReceiverCore> core) noexcept : core_(std::move(core)) {}
Receiver::~Receiver() {
  if (core_) core_->finish();
}
Receiver::Receiver(Receiver&&) noexcept = default;
Receiver& Receiver::operator=(Receiver&& o) noexcept {
  if (this != &o) {
    if (core_) core_->finish();
    core_ = std::move(o.core_);
  }
  return *this;
}

Result<View> Receiver::try_receive() noexcept {
  if (!core_) return Errc::kClosed;
  return core_->try_receive();
}
Result<View> Receiver::receive(std::chrono::nanoseconds timeout) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->receive(timeout);
}
Result<Message> Receiver::try_receive_message() noexcept {
  if (!core_) return Errc::kClosed;
  return core_->try_receive_message();
}
Result<Message> Receiver::receive_message(std::chrono::nanoseconds timeout) noexcept {
  if (!core_) return Errc::kClosed;
  return core_->receive_message(timeout);
}
int Receiver::fd() const noexcept { return core_ ? core_->fd() : -1; }
bool Receiver::arm() noexcept { return core_ && core_->arm(); }
ReceiverStats Receiver::stats() const { return core_ ? core_->stats() : ReceiverStats{}; }

}  // namespace fbuf
