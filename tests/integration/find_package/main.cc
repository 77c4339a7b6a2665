// Uses an installed fbuf through both of its public APIs: a buffer handed
// from a Sender to an in-process Receiver, and the C API's error strings.
#include <fbuf/fbuf.h>
#include <fbuf/uf.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string_view>

int main() {
  using namespace std::chrono_literals;
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
  std::printf("find_package(fbuf) smoke test: ok\n");
  return 0;
}
