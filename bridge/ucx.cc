#include "bridge/ucx.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "fbuf/base/assert.h"
#include "fbuf/error.h"

namespace fbuf::bridge {

void throw_ucx(ucs_status_t status, const std::string& context) {
  throw Error(std::error_code(EIO, std::generic_category()),
              context + ": " + ucs_status_string(status));
}

Worker::Worker() {
  ucp_config_t* config = nullptr;
  ucs_status_t s = ucp_config_read(nullptr, nullptr, &config);
  if (s != UCS_OK) throw_ucx(s, "ucp_config_read");
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.name = "fbuf-bridge";
  s = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  if (s != UCS_OK) throw_ucx(s, "ucp_init");
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  s = ucp_worker_create(context_, &wp, &worker_);
  if (s != UCS_OK) {
    ucp_cleanup(context_);
    throw_ucx(s, "ucp_worker_create");
  }
  s = ucp_worker_get_efd(worker_, &efd_);
  if (s != UCS_OK) {
    ucp_worker_destroy(worker_);
    ucp_cleanup(context_);
    throw_ucx(s, "ucp_worker_get_efd");
  }
}

Worker::~Worker() {
  ucp_worker_destroy(worker_);
  ucp_cleanup(context_);
}

void Worker::progress() noexcept {
  while (ucp_worker_progress(worker_) != 0) {
  }
}

bool Worker::wait(int extra_fd, int extra_fd2, std::chrono::milliseconds timeout) noexcept {
  ucs_status_t s = ucp_worker_arm(worker_);
  if (s == UCS_ERR_BUSY) return false;
  pollfd fds[3] = {{efd_, POLLIN, 0}, {extra_fd, POLLIN, 0}, {extra_fd2, POLLIN, 0}};
  int n = ::poll(fds, 3, static_cast<int>(timeout.count()));
  return n > 0 && ((fds[1].revents | fds[2].revents) & (POLLIN | POLLHUP | POLLERR)) != 0;
}

void Worker::close(ucp_ep_h ep) noexcept {
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  p.flags = UCP_EP_CLOSE_FLAG_FORCE;
  ucs_status_ptr_t req = ucp_ep_close_nbx(ep, &p);
  if (UCS_PTR_IS_PTR(req)) {
    while (ucp_request_check_status(req) == UCS_INPROGRESS) ucp_worker_progress(worker_);
    ucp_request_free(req);
  }
}

SockAddr resolve(const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    throw Error(std::error_code(EINVAL, std::generic_category()),
                "resolve '" + host + "': " + ::gai_strerror(rc));
  }
  SockAddr out;
  std::memcpy(&out.storage, res->ai_addr, res->ai_addrlen);
  out.length = res->ai_addrlen;
  ::freeaddrinfo(res);
  return out;
}

}  // namespace fbuf::bridge
