// A misbehaving peer on either side: forged returns, forged ring indices,
// garbage and lying handshakes, forged descriptors, truncation attempts.
// Each is rejected with a clear error, counted, and costs the honest side
// nothing: no crash, no leaked buffer, no lost buffer.
#include <capnp/message.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <poll.h>

#include <atomic>
#include <functional>
#include <thread>

#include "fbuf/fbuf.h"
#include "fbuf/base/fd.h"
#include "fbuf/base/readiness.h"
#include "fbuf/buffers/doorbell.h"
#include "ipc/channel.h"
#include "ipc/control.h"
#include "ipc/handshake.h"
#include "ipc/handshake.capnp.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;
using detail::Mapping;
using detail::UniqueFd;

std::string service_name(const char* what) {
  return std::string("forged/") + what + "/" + std::to_string(getpid());
}

template <class Pred>
bool eventually(Pred p, std::chrono::milliseconds within = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    if (p()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return p();
}

void send_hello(int sock, std::uint32_t version = ipc::kProtocolVersion) {
  capnp::MallocMessageBuilder m;
  auto h = m.initRoot<ipc::proto::ControlMessage>().initHello();
  h.setVersion(version);
  ASSERT_FALSE(ipc::send_message(sock, m, {}));
}

// A receiver that speaks the protocol by hand, so it can lie.
struct RawReceiver {
  explicit RawReceiver(const std::string& service) {
    sock = ipc::connect_service(service, 5s);
    send_hello(sock.get());
    ipc::Datagram dg;
    EXPECT_FALSE(ipc::receive_message(sock.get(), dg, 5s));
    info = ipc::decode_welcome(dg.words);
    fds = std::move(dg.fds);
    ring = detail::ChannelMemory(Mapping::map(fds[1].get(), info.ring_bytes, PROT_READ | PROT_WRITE, "ring"),
                                 info.send_capacity, info.return_capacity);
    bell = Mapping::map(fds[2].get(), detail::page_size(), PROT_READ | PROT_WRITE, "bell");
    header = ring.header();
    in = detail::RingConsumer(&header->send, ring.send_slots(), info.send_capacity);
    out = detail::RingProducer(&header->ret, ring.return_slots(), info.return_capacity);
  }
  ipc::Descriptor take() {
    ipc::Descriptor d{};
    EXPECT_EQ(in.pop(d), detail::RingStatus::kOk);
    return d;
  }
  void give_back(ipc::Descriptor d) {
    EXPECT_TRUE(out.push(d));
    detail::ring_doorbell(reinterpret_cast<detail::DoorbellHeader*>(bell.data()));
  }

  UniqueFd sock;
  ipc::WelcomeInfo info;
  std::vector<UniqueFd> fds;
  detail::ChannelMemory ring;
  Mapping bell;
  ipc::ChannelHeader* header = nullptr;
  detail::RingConsumer in;
  detail::RingProducer out;
};

Pool small_pool(const char* name) { return Pool(PoolOptions{.name = name, .classes = {{4096, 4}}}); }

void send_one(Sender& tx, char fill) {
  auto b = tx.allocate(16, 1s);
  ASSERT_TRUE(b);
  std::memset(b->data(), fill, 16);
  ASSERT_FALSE(tx.send(std::move(*b), 16, 1s));
}

TEST(ForgedReturns, AreRejectedCountedAndLoseNothing) {
  Pool pool = small_pool("forged-returns");
  const std::string service = service_name("returns");
  Sender tx(pool, service);
  RawReceiver r(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  send_one(tx, 'a');
  send_one(tx, 'b');
  ipc::Descriptor a = r.take(), b = r.take();
  const std::uint32_t never_lent = (a.index + 1 != b.index ? a.index + 1 : b.index + 1) % 4;

  // The return ring holds as many returns as the pool has buffers; stats()
  // drains it after each.
  auto give_back = [&](ipc::Descriptor d) {
    r.give_back(d);
    tx.stats();
  };
  auto forged = a;
  forged.index = 99;  // out of range
  give_back(forged);
  forged = a;
  forged.index = never_lent;  // never lent to this receiver
  give_back(forged);
  forged = a;
  forged.generation += 1;  // stale or future generation
  give_back(forged);
  forged = a;
  forged.pool = 7;  // no such pool
  give_back(forged);
  give_back(a);  // valid
  give_back(a);  // already returned

  SenderStats s = tx.stats();
  EXPECT_EQ(s.rejected_returns, 5u);
  EXPECT_EQ(s.returned, 1u);
  PoolStats p = pool.stats();
  EXPECT_EQ(p.in_flight, 1u);  // b is still lent, and still valid
  EXPECT_EQ(p.free, 3u);
  r.give_back(b);
  EXPECT_EQ(pool.stats().free, 4u);
  EXPECT_EQ(tx.stats().returned, 2u);
}

// A receiver that publishes an impossible send-ring head (tail + 1000) is
// cut off at the next send that reads it; the honest receiver is served on
// at once, without waiting for the liar's socket to close.
TEST(ForgedHead, CutsOnlyThatReceiverOffAndTheOthersGoOn) {
  Pool pool = small_pool("forged-head");
  const std::string service = service_name("head");
  Sender tx(pool, service, SenderOptions{.ring_capacity = 2});
  Receiver honest = Receiver::connect(service);
  auto r = std::make_unique<RawReceiver>(service);
  ASSERT_TRUE(tx.wait_for_receivers(2, 5s));
  send_one(tx, 'a');
  send_one(tx, 'b');
  for (char want : {'a', 'b'}) {
    auto v = honest.receive(1s);
    ASSERT_TRUE(v);
    EXPECT_EQ(v->data()[0], std::byte{static_cast<unsigned char>(want)});
  }
  // The liar's ring is full, so the next send must read its head: forged.
  r->header->send.head.store(r->header->send.tail.load() + 1000);
  auto buf = tx.allocate(16, 1s);
  ASSERT_TRUE(buf);
  std::memset(buf->data(), 'c', 16);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_FALSE(tx.send(std::move(*buf), 16, 2s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);  // not blocked until the timeout
  auto v = honest.receive(1s);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->data()[0], std::byte{'c'});
  v->reset();
  EXPECT_EQ(tx.receiver_count(), 1u);
  EXPECT_GE(tx.stats().receivers_lost, 1u);
  // What the liar held came back, and it was told: its socket is shut and
  // its header says it was cut off.
  EXPECT_TRUE(eventually([&] { return pool.stats().free == 4; }));
  EXPECT_EQ(r->header->cut_off.load(), 1u);
  char c;
  EXPECT_EQ(recv(r->sock.get(), &c, 1, MSG_DONTWAIT), 0);
}

TEST(ForgedReturnRing, ACorruptTailCutsTheReceiverOffAndReclaimsItsBuffers) {
  Pool pool = small_pool("forged-ret-tail");
  const std::string service = service_name("ret-tail");
  Sender tx(pool, service);
  RawReceiver r(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  send_one(tx, 'a');
  send_one(tx, 'b');
  r.header->ret.tail.store(~std::uint64_t{0});
  SenderStats s = tx.stats();
  EXPECT_GE(s.rejected_returns, 1u);
  EXPECT_TRUE(eventually([&] { return pool.stats().free == 4; }));
  // The control thread sees the hang-up it caused and drops the receiver.
  EXPECT_TRUE(eventually([&] { return tx.receiver_count() == 0; }));
}

// The cut-off receiver is told (its header says so, and its socket is
// shut) and counted as lost, and an honest receiver with room is not
// blocked by its full ring.
TEST(ForgedReturnRing, TheCutOffReceiverIsToldCountedAndBlocksNobody) {
  Pool pool = small_pool("forged-ret-told");
  const std::string service = service_name("ret-told");
  Sender tx(pool, service, SenderOptions{.ring_capacity = 1});
  RawReceiver r(service);
  Receiver honest = Receiver::connect(service);
  ASSERT_TRUE(tx.wait_for_receivers(2, 5s));
  send_one(tx, 'a');  // both rings are full now
  ASSERT_TRUE(honest.receive(1s));  // the honest one has room again
  r.header->ret.tail.store(~std::uint64_t{0});
  SenderStats s = tx.stats();  // drains: cuts the liar off
  EXPECT_EQ(s.receivers_lost, 1u);
  EXPECT_EQ(r.header->cut_off.load(), 1u);
  auto b = tx.try_allocate(16);
  ASSERT_TRUE(b);
  EXPECT_FALSE(tx.try_send(std::move(*b), 16));  // not blocked by the liar's full ring
  EXPECT_TRUE(honest.receive(1s));
}

// Every receiver of a pool maps its doorbell read-write. One that
// scribbles over the doorbell's header must not keep later receivers out.
TEST(ForgedDoorbell, AScribbledDoorbellHeaderLocksNobodyOut) {
  Pool pool = small_pool("forged-bell");
  const std::string service = service_name("bell");
  Sender tx(pool, service);
  RawReceiver r(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  std::memset(r.bell.data(), 0xff, 64);  // magic, version, reserved
  Receiver later = Receiver::connect(service, {.connect_timeout = 2s});
  ASSERT_TRUE(tx.wait_for_receivers(2, 5s));
  send_one(tx, 'z');
  auto v = later.receive(1s);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->data()[0], std::byte{'z'});
}

TEST(SealedPool, CannotBeTruncatedOrWrittenByAReceiver) {
  Pool pool = small_pool("sealed");
  const std::string service = service_name("sealed");
  Sender tx(pool, service);
  RawReceiver r(service);
  Receiver honest = Receiver::connect(service);
  ASSERT_TRUE(tx.wait_for_receivers(2, 5s));
  int pool_fd = r.fds[0].get();
  EXPECT_NE(ftruncate(pool_fd, 0), 0);  // read-only fd
  EXPECT_EQ(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, pool_fd, 0), MAP_FAILED);
  EXPECT_EQ(errno, EACCES);
  UniqueFd rw(open(("/proc/self/fd/" + std::to_string(pool_fd)).c_str(), O_RDWR | O_CLOEXEC));
  if (rw) {  // possible for the same user: the seals still refuse
    EXPECT_NE(ftruncate(rw.get(), 0), 0);
    EXPECT_EQ(errno, EPERM);
    EXPECT_NE(ftruncate(rw.get(), 1 << 30), 0);
    EXPECT_EQ(errno, EPERM);
    EXPECT_EQ(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, rw.get(), 0), MAP_FAILED);
    EXPECT_EQ(pwrite(rw.get(), "x", 1, 0), -1);
  }
  EXPECT_NE(fcntl(pool_fd, F_ADD_SEALS, F_SEAL_WRITE), 0);  // seals are closed
  EXPECT_NE(ftruncate(r.fds[1].get(), 0), 0);               // the ring: writable, but sealed
  EXPECT_EQ(errno, EPERM);
  // The sender and the honest receiver carry on.
  send_one(tx, 'z');
  auto v = honest.receive(1s);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->data()[15], std::byte{'z'});
}

// --- Garbage handshakes against a real sender. ---

void expect_handshake_rejected(Sender& tx, const std::function<void(int)>& attack) {
  const std::uint64_t before = tx.stats().rejected_handshakes;
  {
    UniqueFd sock = ipc::connect_service(tx.service(), 5s);
    attack(sock.get());
    // Whatever came back must not be a Welcome with fds.
    ipc::Datagram dg;
    if (!ipc::receive_message(sock.get(), dg, 2s)) {
      EXPECT_TRUE(dg.fds.empty());
      EXPECT_THROW(ipc::decode_welcome(dg.words), Error);
    }
  }
  EXPECT_TRUE(eventually([&] { return tx.stats().rejected_handshakes > before; }));
  // An honest receiver still gets in.
  Receiver honest = Receiver::connect(tx.service());
  EXPECT_TRUE(honest);
}

TEST(GarbageHandshake, IsRejectedAndCountedAndTheSenderKeepsServing) {
  Pool pool = small_pool("garbage");
  Sender tx(pool, service_name("garbage"));
  expect_handshake_rejected(tx, [](int s) { ASSERT_EQ(send(s, "hello?!\n", 8, 0), 8); });  // not words
  expect_handshake_rejected(tx, [](int s) {
    std::uint64_t junk[32];
    for (int i = 0; i < 32; ++i) junk[i] = 0x0123456789abcdefull * static_cast<std::uint64_t>(i + 1);
    ASSERT_EQ(send(s, junk, sizeof junk, 0), static_cast<ssize_t>(sizeof junk));
  });
  expect_handshake_rejected(tx, [](int s) { send_hello(s, 99); });  // version mismatch
  expect_handshake_rejected(tx, [](int s) {
    // A Welcome where a Hello belongs.
    capnp::MallocMessageBuilder m;
    m.initRoot<ipc::proto::ControlMessage>().initWelcome().setVersion(ipc::kProtocolVersion);
    ASSERT_FALSE(ipc::send_message(s, m, {}));
  });
  expect_handshake_rejected(tx, [](int s) {
    // A Hello that carries fds.
    capnp::MallocMessageBuilder m;
    m.initRoot<ipc::proto::ControlMessage>().initHello().setVersion(ipc::kProtocolVersion);
    int fds[2] = {0, 1};
    ASSERT_FALSE(ipc::send_message(s, m, fds));
  });
  expect_handshake_rejected(tx, [](int s) {
    // Larger than any control message may be: truncated, so rejected.
    std::vector<char> big(ipc::kMaxControlBytes + 4096, 'x');
    ASSERT_EQ(send(s, big.data(), big.size(), 0), static_cast<ssize_t>(big.size()));
  });
  EXPECT_EQ(tx.stats().rejected_handshakes, 6u);
}

// --- A lying sender against a real receiver. ---

// Listens under a name and answers the first Hello with whatever `reply`
// sends. Runs on its own thread.
class FakeSender {
 public:
  FakeSender(const std::string& service, std::function<void(int)> reply)
      : listen_(ipc::listen_service(service)), thread_([this, reply = std::move(reply)] {
          pollfd p{listen_.get(), POLLIN, 0};
          if (poll(&p, 1, 5000) != 1) return;
          UniqueFd conn(accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
          if (!conn) return;
          ipc::Datagram dg;
          if (ipc::receive_message(conn.get(), dg, 5s)) return;
          reply(conn.get());
          // Hold the connection until the receiver has judged the reply.
          char c;
          [[maybe_unused]] auto n = recv(conn.get(), &c, 1, 0);
        }) {}
  ~FakeSender() { thread_.join(); }

 private:
  UniqueFd listen_;
  std::thread thread_;
};

// A Welcome that matches a 4 x 4 KiB pool with an 8-slot ring.
void fill_welcome(ipc::proto::Welcome::Builder w) {
  w.setVersion(ipc::kProtocolVersion);
  w.setPoolName("fake");
  w.setPoolSize(4 * 4096);
  auto c = w.initClasses(1);
  c[0].setBufferSize(4096);
  c[0].setCount(4);
  w.setSendCapacity(8);
  w.setReturnCapacity(4);
  w.setRingBytes(ipc::ChannelHeader::bytes(8, 4));
}

struct FakeFds {
  UniqueFd pool = detail::make_sealed_memfd("fake-pool", 4 * 4096);
  UniqueFd ring = detail::make_sealed_memfd("fake-ring", ipc::ChannelHeader::bytes(8, 4));
  UniqueFd bell = detail::make_sealed_memfd("fake-bell", detail::page_size());
  Mapping ring_map = Mapping::map(ring.get(), ipc::ChannelHeader::bytes(8, 4), PROT_READ | PROT_WRITE, "r");
  Mapping bell_map = Mapping::map(bell.get(), detail::page_size(), PROT_READ | PROT_WRITE, "b");
  detail::ReadyPair ready = detail::make_ready_pair();
  FakeFds() {
    detail::init_channel_header(ring_map.data(), 8, 4);
    auto* d = new (bell_map.data()) detail::DoorbellHeader{};
    d->magic = detail::kDoorbellMagic;
    d->version = detail::kDoorbellVersion;
  }
};

std::error_code connect_against(const char* what, std::function<void(int)> reply) {
  const std::string service = service_name(what);
  FakeSender fake(service, std::move(reply));
  try {
    Receiver rx = Receiver::connect(service, {.connect_timeout = 3s});
  } catch (const Error& e) {
    return e.code();
  }
  return {};
}

TEST(LyingSender, VersionMismatchIsReportedAsSuch) {
  auto ec = connect_against("version", [](int s) {
    capnp::MallocMessageBuilder m;
    fill_welcome(m.initRoot<ipc::proto::ControlMessage>().initWelcome());
    m.getRoot<ipc::proto::ControlMessage>().getWelcome().setVersion(ipc::kProtocolVersion + 1);
    ipc::send_message(s, m, {});
  });
  EXPECT_EQ(ec, make_error_code(Errc::kVersionMismatch));
}

TEST(LyingSender, EveryMalformedWelcomeIsAProtocolError) {
  const std::vector<std::pair<const char*, std::function<void(int)>>> cases = {
      {"garbage", [](int s) { ASSERT_EQ(send(s, "12345678", 8, 0), 8); }},
      {"reject",
       [](int s) {
         capnp::MallocMessageBuilder m;
         m.initRoot<ipc::proto::ControlMessage>().initReject().setReason("go away");
         ipc::send_message(s, m, {});
       }},
      {"two-fds",
       [](int s) {
         FakeFds f;
         capnp::MallocMessageBuilder m;
         fill_welcome(m.initRoot<ipc::proto::ControlMessage>().initWelcome());
         int fds[2] = {f.pool.get(), f.ring.get()};
         ipc::send_message(s, m, fds);
       }},
      {"pipe-as-pool",
       [](int s) {
         FakeFds f;
         int p[2];
         ASSERT_EQ(pipe(p), 0);
         capnp::MallocMessageBuilder m;
         fill_welcome(m.initRoot<ipc::proto::ControlMessage>().initWelcome());
         int fds[4] = {p[0], f.ring.get(), f.bell.get(), f.ready.receiver.get()};
         ipc::send_message(s, m, fds);
         close(p[0]);
         close(p[1]);
       }},
      {"wrong-size",
       [](int s) {
         FakeFds f;
         UniqueFd small = detail::make_sealed_memfd("small-pool", 4096);
         capnp::MallocMessageBuilder m;
         fill_welcome(m.initRoot<ipc::proto::ControlMessage>().initWelcome());
         int fds[4] = {small.get(), f.ring.get(), f.bell.get(), f.ready.receiver.get()};
         ipc::send_message(s, m, fds);
       }},
      {"unsealed",
       [](int s) {
         FakeFds f;
         UniqueFd open_pool(memfd_create("unsealed", MFD_CLOEXEC));
         ASSERT_EQ(ftruncate(open_pool.get(), 4 * 4096), 0);
         capnp::MallocMessageBuilder m;
         fill_welcome(m.initRoot<ipc::proto::ControlMessage>().initWelcome());
         int fds[4] = {open_pool.get(), f.ring.get(), f.bell.get(), f.ready.receiver.get()};
         ipc::send_message(s, m, fds);
       }},
      {"inconsistent-size",
       [](int s) {
         capnp::MallocMessageBuilder m;
         auto w = m.initRoot<ipc::proto::ControlMessage>().initWelcome();
         fill_welcome(w);
         w.setPoolSize(1 << 20);
         ipc::send_message(s, m, {});
       }},
      {"small-return-ring",
       [](int s) {
         capnp::MallocMessageBuilder m;
         auto w = m.initRoot<ipc::proto::ControlMessage>().initWelcome();
         fill_welcome(w);
         w.setReturnCapacity(2);
         ipc::send_message(s, m, {});
       }},
      {"odd-buffer-size",
       [](int s) {
         capnp::MallocMessageBuilder m;
         auto w = m.initRoot<ipc::proto::ControlMessage>().initWelcome();
         fill_welcome(w);
         w.getClasses()[0].setBufferSize(4000);
         ipc::send_message(s, m, {});
       }},
      {"bad-ring-header",
       [](int s) {
         FakeFds f;
         f.ring_map.data()[0] = std::byte{0};  // magic
         capnp::MallocMessageBuilder m;
         fill_welcome(m.initRoot<ipc::proto::ControlMessage>().initWelcome());
         int fds[4] = {f.pool.get(), f.ring.get(), f.bell.get(), f.ready.receiver.get()};
         ipc::send_message(s, m, fds);
       }},
      {"three-fds",
       [](int s) {
         FakeFds f;
         capnp::MallocMessageBuilder m;
         fill_welcome(m.initRoot<ipc::proto::ControlMessage>().initWelcome());
         int fds[3] = {f.pool.get(), f.ring.get(), f.bell.get()};
         ipc::send_message(s, m, fds);
       }},
      {"pipe-as-readiness-socket",
       [](int s) {
         FakeFds f;
         int p[2];
         ASSERT_EQ(pipe(p), 0);
         capnp::MallocMessageBuilder m;
         fill_welcome(m.initRoot<ipc::proto::ControlMessage>().initWelcome());
         int fds[4] = {f.pool.get(), f.ring.get(), f.bell.get(), p[0]};
         ipc::send_message(s, m, fds);
         close(p[0]);
         close(p[1]);
       }},
      {"datagram-readiness-socket",
       [](int s) {
         FakeFds f;
         int sv[2];
         ASSERT_EQ(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
         capnp::MallocMessageBuilder m;
         fill_welcome(m.initRoot<ipc::proto::ControlMessage>().initWelcome());
         int fds[4] = {f.pool.get(), f.ring.get(), f.bell.get(), sv[0]};
         ipc::send_message(s, m, fds);
         close(sv[0]);
         close(sv[1]);
       }},
      {"unconnected-readiness-socket",
       [](int s) {
         FakeFds f;
         UniqueFd lone(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
         capnp::MallocMessageBuilder m;
         fill_welcome(m.initRoot<ipc::proto::ControlMessage>().initWelcome());
         int fds[4] = {f.pool.get(), f.ring.get(), f.bell.get(), lone.get()};
         ipc::send_message(s, m, fds);
       }},
  };
  // The Welcome every malformed one above is made from is accepted: each
  // case fails for its own fault, not for one they share.
  EXPECT_EQ(connect_against("well-formed", [](int s) {
              FakeFds f;
              capnp::MallocMessageBuilder m;
              fill_welcome(m.initRoot<ipc::proto::ControlMessage>().initWelcome());
              int fds[4] = {f.pool.get(), f.ring.get(), f.bell.get(), f.ready.receiver.get()};
              ipc::send_message(s, m, fds);
            }),
            std::error_code());
  for (const auto& [name, reply] : cases) {
    EXPECT_EQ(connect_against(name, reply), make_error_code(Errc::kProtocol)) << name;
  }
}

TEST(LyingSender, ForgedDescriptorsAreSkippedCountedAndTheStreamGoesOn) {
  FakeFds f;
  const std::string service = service_name("descriptors");
  std::atomic<bool> done{false};
  FakeSender fake(service, [&](int s) {
    capnp::MallocMessageBuilder m;
    fill_welcome(m.initRoot<ipc::proto::ControlMessage>().initWelcome());
    int fds[4] = {f.pool.get(), f.ring.get(), f.bell.get(), f.ready.receiver.get()};
    ipc::send_message(s, m, fds);
    while (!done.load()) std::this_thread::sleep_for(1ms);
  });
  Receiver rx = Receiver::connect(service, {.connect_timeout = 3s});
  auto* h = reinterpret_cast<ipc::ChannelHeader*>(f.ring_map.data());
  detail::RingProducer out(&h->send,
                        reinterpret_cast<ipc::Descriptor*>(f.ring_map.data() + ipc::ChannelHeader::send_slots_offset()), 8);
  const ipc::Descriptor forged[] = {
      {0, 4, 1, 0, 16, 0, 0},        // index out of range
      {0, 1, 1, 0, 4097, 0, 0},      // longer than the buffer
      {0, 1, 1, 4000, 200, 0, 0},    // offset + length past the end
      {0, 1, 1, 5000, 0, 0, 0},      // offset past the end
      {3, 1, 1, 0, 16, 0, 0},        // no such pool
  };
  for (const auto& d : forged) ASSERT_TRUE(out.push(d));
  ASSERT_TRUE(out.push(ipc::Descriptor{0, 2, 1, 96, 16, 0, 0}));  // valid
  for (std::size_t i = 0; i < std::size(forged); ++i) {
    auto v = rx.receive(1s);
    ASSERT_FALSE(v);
    EXPECT_EQ(v.error(), make_error_code(Errc::kBadDescriptor));
  }
  auto v = rx.receive(1s);
  ASSERT_TRUE(v) << v.error().message();
  EXPECT_EQ(v->size(), 16u);
  EXPECT_EQ(rx.stats().rejected_descriptors, std::size(forged));
  // A tail beyond any possible head is reported once, never followed, and
  // ends the stream: the next call says kPeerGone at once instead of
  // reporting the same corruption forever (a receive loop must not spin).
  h->send.tail.store(std::uint64_t{1} << 50);
  auto bad = rx.receive(50ms);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(), make_error_code(Errc::kCorrupt));
  for (int i = 0; i < 3; ++i) {
    auto after = rx.receive(100ms);
    ASSERT_FALSE(after);
    EXPECT_EQ(after.error(), make_error_code(Errc::kPeerGone));
  }
  EXPECT_EQ(rx.stats().rejected_descriptors, std::size(forged) + 1);
  done = true;
}

}  // namespace
}  // namespace fbuf

namespace fbuf {
namespace {

TEST(OtherUser, IsRefusedUnlessAllowed) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  for (bool allow : {false, true}) {
    const std::string service = service_name(allow ? "other-user-allowed" : "other-user");
    // A child process that becomes `nobody` and tries to connect (retrying
    // until the sender below listens). Forked before the sender starts its
    // control thread. Its exit status says what happened: 0 connected, 1
    // refused with kProtocol.
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      if (setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
      try {
        Receiver rx = Receiver::connect(service, {.connect_timeout = 10s});
        _exit(0);
      } catch (const Error& e) {
        if (e.code() == make_error_code(Errc::kProtocol)) _exit(1);
        std::fprintf(stderr, "other user's connect: %s\n", e.what());  // for the failure report
        _exit(2);
      }
    }
    Pool pool = small_pool("other-user");
    Sender tx(pool, service, SenderOptions{.allow_other_users = allow});
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), allow ? 0 : 1);
  }
}

}  // namespace
}  // namespace fbuf
