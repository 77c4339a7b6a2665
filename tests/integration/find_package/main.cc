// Uses an installed fbuf through both of its public APIs: a buffer handed
// from a Sender to an in-process Receiver, and the C API's error strings.
//
//   fbuf_find_package_smoke                          the in-process exchange
//   fbuf_find_package_smoke consume SERVICE COUNT    then verify COUNT test
//                                                    frames from SERVICE and
//                                                    the end of the stream
#include <fbuf/fbuf.h>
#include <fbuf/uf.h>

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#if FBUF_SMOKE_CAPNP
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fbuf/typed/capnp.h>
#endif
#if FBUF_SMOKE_FRAMES
#include "test_frame.h"
#endif

namespace {

using namespace std::chrono_literals;

int exchange_in_process() {
  fbuf::Pool pool(fbuf::PoolOptions{.name = "find-package", .classes = {{4096, 4}}});
  fbuf::Sender sender(pool);
  fbuf::Receiver rx = sender.connect_local();

  constexpr std::string_view kText = "hello from an installed fbuf";
  fbuf::Result<fbuf::Buffer> b = sender.allocate(kText.size(), 1s);
  if (!b) {
    std::fprintf(stderr, "allocate: %s\n", b.error().message().c_str());
    return 1;
  }
  std::memcpy(b->data(), kText.data(), kText.size());
  if (std::error_code ec = sender.send(std::move(*b), kText.size(), 1s)) {
    std::fprintf(stderr, "send: %s\n", ec.message().c_str());
    return 1;
  }
  fbuf::Result<fbuf::View> v = rx.receive(1s);
  if (!v) {
    std::fprintf(stderr, "receive: %s\n", v.error().message().c_str());
    return 1;
  }
  const std::string_view got(reinterpret_cast<const char*>(v->data()), v->size());
  if (got != kText) {
    std::fprintf(stderr, "received '%.*s'\n", static_cast<int>(got.size()), got.data());
    return 1;
  }
  std::printf("received '%.*s'; uf_strerror(UF_EPEERGONE) = '%s'\n", static_cast<int>(got.size()),
              got.data(), uf_strerror(UF_EPEERGONE));
  return 0;
}

#if FBUF_SMOKE_CAPNP
// The project's own Cap'n Proto, linked beside fbuf's.
int use_capnp() {
  capnp::MallocMessageBuilder message;
  message.getRoot<capnp::AnyPointer>().setAs<capnp::Text>("fbuf");
  const kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  if (words.size() == 0) {
    std::fprintf(stderr, "Cap'n Proto: an empty message\n");
    return 1;
  }
  std::printf("Cap'n Proto usable beside fbuf (%zu words)\n", words.size());
  return 0;
}

// The installed typed adapter: a message built in a pool buffer, read in
// place.
int use_typed_capnp() {
  fbuf::Pool pool(fbuf::PoolOptions{.name = "find-package-typed", .classes = {{4096, 4}}});
  fbuf::Sender sender(pool);
  fbuf::Receiver rx = sender.connect_local();
  fbuf::typed::CapnpBuilder b(pool);
  b.getRoot<capnp::AnyPointer>().setAs<capnp::Text>("typed, in place");
  if (std::error_code ec = b.send(sender, 1s)) {
    std::fprintf(stderr, "typed send: %s\n", ec.message().c_str());
    return 1;
  }
  auto m = fbuf::typed::receive_capnp(rx, 1s);
  if (!m || m->root<capnp::AnyPointer>().getAs<capnp::Text>() != "typed, in place") {
    std::fprintf(stderr, "typed receive failed\n");
    return 1;
  }
  std::printf("fbuf/typed/capnp.h: a message read in place\n");
  return 0;
}
#endif

#if FBUF_SMOKE_FRAMES
// Verifies `count` frames of test_frame.h from `service`, in order, then
// the end of the stream.
int consume(const char* service, std::uint64_t count) {
  fbuf::Receiver rx = fbuf::Receiver::connect(service, {.connect_timeout = 20s});
  std::uint64_t checksum = TF_FNV_OFFSET;
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    fbuf::Result<fbuf::View> v = rx.receive(20s);
    if (!v) {
      std::fprintf(stderr, "receive of frame %" PRIu64 ": %s\n", seq, v.error().message().c_str());
      return 1;
    }
    tf_header h;
    const int status = tf_check(reinterpret_cast<const unsigned char*>(v->data()), v->size(), seq, &h);
    if (status != TF_OK) {
      std::fprintf(stderr, "frame %" PRIu64 ": %s\n", seq, tf_status_text(status));
      return 1;
    }
    checksum = tf_stream_add(checksum, h.checksum);
  }
  fbuf::Result<fbuf::View> end = rx.receive(60s);
  if (end || end.error() != fbuf::Errc::kPeerGone) {
    std::fprintf(stderr, "after the last frame: %s\n",
                 end ? "another buffer" : end.error().message().c_str());
    return 1;
  }
  std::printf("consume ok frames=%" PRIu64 " checksum=%016" PRIx64 "\n", count, checksum);
  return 0;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  if (int rc = exchange_in_process(); rc != 0) return rc;
#if FBUF_SMOKE_CAPNP
  if (int rc = use_capnp(); rc != 0) return rc;
  if (int rc = use_typed_capnp(); rc != 0) return rc;
#endif
  if (argc == 4 && std::string_view(argv[1]) == "consume") {
#if FBUF_SMOKE_FRAMES
    if (int rc = consume(argv[2], std::strtoull(argv[3], nullptr, 10)); rc != 0) return rc;
#else
    std::fprintf(stderr, "built without FBUF_SMOKE_FRAMES: cannot consume\n");
    return 2;
#endif
  } else if (argc != 1) {
    std::fprintf(stderr, "usage: fbuf_find_package_smoke [consume SERVICE COUNT]\n");
    return 2;
  }
  std::printf("find_package(fbuf) smoke test: ok\n");
  return 0;
}
