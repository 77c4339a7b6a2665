// A receiver in another process than its sender: the client side of the
// handshake and the receiving end that maps the sender's pool read-only.
// Private to the library.
#pragma once

#include <memory>
#include <string_view>

#include "fbuf/base/deadline.h"
#include "ipc/receiver_core.h"

namespace fbuf::detail {

// One handshake on a fresh connection to `service`, asking in the Hello
// for what `options` ask of the sender. Throws Error.
std::shared_ptr<ReceiverCore> connect_remote(std::string_view service, Clock::time_point deadline,
                                             const ReceiverOptions& options);

}  // namespace fbuf::detail
