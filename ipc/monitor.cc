// The client side of the monitoring request (the server side is the
// Listener's, ipc/listener.cc, with SenderCore::monitor()).
#include "ipc/monitor.h"

#include <capnp/message.h>

#include "fbuf/base/assert.h"
#include "fbuf/base/deadline.h"
#include "ipc/control.h"
#include "ipc/handshake.h"

namespace fbuf::ipc {

MonitorInfo query_monitor(std::string_view service, std::chrono::nanoseconds timeout) {
  const auto deadline = detail::deadline_after(timeout);
  detail::UniqueFd sock = connect_service(service, timeout);
  capnp::MallocMessageBuilder request;
  build_monitor_request(request);
  Datagram dg;
  bool send_failed = false;
  const std::error_code ec =
      exchange(sock.get(), request, dg, detail::time_left(deadline, timeout), send_failed);  // reads a Reject too
  if (ec)
    throw Error(ec, std::string(send_failed ? "sending MonitorRequest to '" : "waiting for the monitoring reply of '") +
                        std::string(service) + "'");
  // A reply never carries fds; any that came are closed with `dg`.
  if (!dg.fds.empty()) detail::throw_error(Errc::kProtocol, "MonitorReply carried fds");
  return decode_monitor_reply(dg.words);
}

const char* to_string(SlowReceiverPolicy p) noexcept {
  switch (p) {
    case SlowReceiverPolicy::kBlock:
      return "block";
    case SlowReceiverPolicy::kFailFast:
      return "fail_fast";
    case SlowReceiverPolicy::kSkip:
      return "skip";
    case SlowReceiverPolicy::kCutOff:
      return "cut_off";
  }
  return "unknown";
}

}  // namespace fbuf::ipc
