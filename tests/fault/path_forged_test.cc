// The path against hostile peers (docs/design.md, "The path"): forged lend
// records from a stage (a buffer never lent to it, a stale generation, an
// unknown token, another stage's holder), and a lying stage upstream of a
// real receiver (descriptors for slots never announced, announcements with
// wrong fds or sizes, out of order). Each is rejected and counted, and
// nothing else is lost.
#include <capnp/message.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>

#include "fbuf/base/fd.h"
#include "fbuf/base/readiness.h"
#include "fbuf/buffers/doorbell.h"
#include "fbuf/buffers/returns.h"
#include "fbuf/fbuf.h"
#include "ipc/channel.h"
#include "ipc/control.h"
#include "ipc/handshake.capnp.h"
#include "ipc/handshake.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;
using detail::Mapping;
using detail::UniqueFd;

std::string service_name(const char* what) { return std::string("path-forged/") + what + "/" + std::to_string(getpid()); }

// A stage that speaks the protocol by hand, so it can lie.
struct RawStage {
  explicit RawStage(const std::string& service) {
    sock = ipc::connect_service(service, 5s);
    capnp::MallocMessageBuilder m;
    ipc::build_hello(m, ipc::HelloInfo{});
    EXPECT_FALSE(ipc::send_message(sock.get(), m, {}));
    ipc::Datagram dg;
    EXPECT_FALSE(ipc::receive_message(sock.get(), dg, 5s));
    info = ipc::decode_welcome(dg.words);
    fds = std::move(dg.fds);
    ring = detail::ChannelMemory(Mapping::map(fds[1].get(), info.ring_bytes, PROT_READ | PROT_WRITE, "ring"),
                                 info.send_capacity, info.return_capacity);
    in = detail::RingConsumer(&ring.header()->send, ring.send_slots(), info.send_capacity);
    out = detail::RingProducer(&ring.header()->ret, ring.return_slots(), info.return_capacity);
  }
  ipc::Descriptor take() {
    ipc::Descriptor d{};
    EXPECT_EQ(in.pop(d), detail::RingStatus::kOk);
    return d;
  }
  // A holder for a downstream of this stage: its token and its ring.
  struct Holder {
    std::uint32_t token = 0;
    detail::ChannelMemory ring;
    detail::RingProducer out;
    UniqueFd sock;
  };
  Holder holder() {
    capnp::MallocMessageBuilder m;
    ipc::build_holder_request(m);
    EXPECT_FALSE(ipc::send_message(sock.get(), m, {}));
    ipc::Datagram dg;
    EXPECT_FALSE(ipc::receive_message(sock.get(), dg, 5s));
    ipc::HolderGrantInfo g = ipc::decode_holder_grant(dg.words);
    Holder h;
    h.token = g.token;
    h.ring = detail::ChannelMemory(Mapping::map(dg.fds[0].get(), g.ring_bytes, PROT_READ | PROT_WRITE, "holder"),
                                   ipc::kHolderSendCapacity, g.return_capacity);
    h.out = detail::RingProducer(&h.ring.header()->ret, h.ring.return_slots(), g.return_capacity);
    h.sock = std::move(dg.fds[1]);
    return h;
  }
  void lend(ipc::Descriptor d, std::uint64_t token) {
    d.flags = detail::kLendRecord;
    d.sequence = token;
    ASSERT_TRUE(out.push(d));
  }

  UniqueFd sock;
  ipc::WelcomeInfo info;
  std::vector<UniqueFd> fds;
  detail::ChannelMemory ring;
  detail::RingConsumer in;
  detail::RingProducer out;
};

void send_one(Sender& tx) {
  auto b = tx.allocate(16, 1s);
  ASSERT_TRUE(b);
  std::memset(b->data(), 'x', 16);
  ASSERT_FALSE(tx.send(std::move(*b), 16, 1s));
}

TEST(ForgedLendRecords, AreRejectedCountedAndLoseNothing) {
  Pool pool(PoolOptions{.name = "path-forged-lends", .classes = {{4096, 4}}});
  const std::string service = service_name("lends");
  Sender tx(pool, service);
  RawStage m(service), other(service);
  ASSERT_TRUE(tx.wait_for_receivers(2, 5s));
  send_one(tx);
  send_one(tx);
  const ipc::Descriptor a = m.take(), b = m.take();
  (void)other.take();
  (void)other.take();
  RawStage::Holder mine = m.holder(), theirs = other.holder();
  ASSERT_NE(mine.token, 0u);
  ASSERT_NE(mine.token, theirs.token);

  ipc::Descriptor forged = a;
  forged.index = (a.index + 2) % 4 == b.index ? (a.index + 3) % 4 : (a.index + 2) % 4;  // never lent to it
  m.lend(forged, mine.token);
  forged = a;
  forged.generation += 1;  // stale or future generation
  m.lend(forged, mine.token);
  m.lend(a, mine.token + 1000);  // no such holder
  m.lend(a, theirs.token);       // another stage's holder
  m.lend(a, 0);                  // no holder at all
  forged = a;
  forged.flags = detail::kLendRecord | 1u;  // an unknown flag beside the lend
  forged.sequence = mine.token;
  ASSERT_TRUE(m.out.push(forged));
  m.lend(a, mine.token);  // valid: the holder now holds `a` too
  // A record that does not match waits one whole pass for a lend record
  // that may make it valid (PathCausality below), then is rejected.
  (void)tx.stats();
  SenderStats s = tx.stats();
  EXPECT_EQ(s.rejected_returns, 6u);

  // The stage returns `a`: still held by its holder, so still in flight.
  ipc::Descriptor ret = a;
  ASSERT_TRUE(m.out.push(ret));
  ASSERT_TRUE(m.out.push(b));
  PoolStats p = pool.stats();
  EXPECT_EQ(p.in_flight, 2u);  // the other stage still holds both
  // The other stage lets go of both; only the holder keeps `a`.
  ASSERT_TRUE(other.out.push(a));
  ASSERT_TRUE(other.out.push(b));
  p = pool.stats();
  EXPECT_EQ(p.in_flight, 1u);
  // A return on the wrong holder is rejected; on the right one it frees a.
  ASSERT_TRUE(theirs.out.push(a));
  p = pool.stats();
  EXPECT_EQ(p.in_flight, 1u);
  ASSERT_TRUE(mine.out.push(a));
  p = pool.stats();
  EXPECT_EQ(p.in_flight, 0u);
  EXPECT_EQ(p.free, 4u);
  EXPECT_EQ(tx.stats().rejected_returns, 7u);
}

TEST(ForgedLendRecords, AHolderThatHangsUpIsReclaimed) {
  Pool pool(PoolOptions{.name = "path-forged-hangup", .classes = {{4096, 4}}});
  const std::string service = service_name("hangup");
  Sender tx(pool, service);
  RawStage m(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  send_one(tx);
  const ipc::Descriptor a = m.take();
  RawStage::Holder h = m.holder();
  m.lend(a, h.token);
  ASSERT_TRUE(m.out.push(a));
  EXPECT_EQ(pool.stats().in_flight, 1u);
  h.sock.reset();  // the holder's process went
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (pool.stats().in_flight != 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(pool.stats().in_flight, 0u);
}

// --- Causality across a drain pass. ---

// What the stage and its downstream publish while the owner is between the
// reading of the stage's ring and the reading of the holder's in one pass.
struct Interleaving {
  RawStage* stage = nullptr;
  RawStage::Holder* holder = nullptr;
  ipc::Descriptor view{};
  bool done = false;
};
Interleaving interleaving;

void lend_and_return_behind_the_owner(std::size_t inlet) noexcept {
  // Inlet 0 is the stage's (it connected first); its ring has just been
  // read, the holder's (inlet 1) not yet.
  if (inlet != 0 || interleaving.done) return;
  interleaving.done = true;
  ipc::Descriptor lend = interleaving.view;
  lend.flags = detail::kLendRecord;
  lend.sequence = interleaving.holder->token;
  // The stage forwards the view: its lend record, then the descriptor
  // downstream; the downstream reads it and lets go at once.
  if (!interleaving.stage->out.push(lend) || !interleaving.holder->out.push(interleaving.view)) std::abort();
}

// The downstream's return is read in the same pass as the stage's ring,
// but that ring was read just before the stage wrote its lend record. The
// return must wait for the record (a later reading of the ring), not be
// rejected: a rejected return leaves the holder's count standing forever,
// and a rejected lend record would let the buffer be reused under it.
TEST(PathCausality, AReturnReadBeforeItsLendRecordWaitsForItAcrossThePass) {
  Pool pool(PoolOptions{.name = "path-causality", .classes = {{4096, 4}}});
  const std::string service = service_name("causality");
  Sender tx(pool, service);
  RawStage m(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  send_one(tx);
  const ipc::Descriptor a = m.take();
  RawStage::Holder h = m.holder();
  interleaving = Interleaving{&m, &h, a, false};
  detail::DrainHooks::set(lend_and_return_behind_the_owner);
  PoolStats p = pool.stats();  // one drain pass, with the stage and its downstream running "meanwhile"
  detail::DrainHooks::set(nullptr);
  ASSERT_TRUE(interleaving.done);
  EXPECT_EQ(tx.stats().rejected_returns, 0u);
  EXPECT_EQ(p.in_flight, 1u);  // the stage still holds `a`
  // The stage lets go too: nobody holds `a`, so it is free again.
  ASSERT_TRUE(m.out.push(a));
  p = pool.stats();
  EXPECT_EQ(p.in_flight, 0u);
  EXPECT_EQ(p.free, 4u);
  EXPECT_EQ(tx.stats().rejected_returns, 0u);
}

// A return that no lend record ever makes valid is still rejected and
// counted, one pass later than one that matches nothing at once.
TEST(PathCausality, AReturnNoLendRecordMatchesIsRejectedAfterAWholePass) {
  Pool pool(PoolOptions{.name = "path-causality-forged", .classes = {{4096, 4}}});
  const std::string service = service_name("causality-forged");
  Sender tx(pool, service);
  RawStage m(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  send_one(tx);
  const ipc::Descriptor a = m.take();
  RawStage::Holder h = m.holder();
  ASSERT_TRUE(h.out.push(a));  // never lent to the holder
  (void)pool.stats();
  (void)pool.stats();
  EXPECT_EQ(tx.stats().rejected_returns, 1u);
  ASSERT_TRUE(m.out.push(a));
  const PoolStats p = pool.stats();
  EXPECT_EQ(p.in_flight, 0u);
  EXPECT_EQ(p.free, 4u);
}

// A stage cut off (here: its ring full under kCutOff) with a lend record
// the owner has not read yet: the record is read before the stage's loans
// are taken back, so its holder's loan stays counted and the buffer is not
// reused under it.
TEST(PathCausality, AStageCutOffLeavesItsHoldersLoansCounted) {
  Pool pool(PoolOptions{.name = "path-cutoff", .classes = {{4096, 8}}});
  const std::string service = service_name("cutoff");
  Sender tx(pool, service, SenderOptions{.ring_capacity = 2, .slow_receiver = SlowReceiverPolicy::kCutOff});
  RawStage m(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  send_one(tx);
  const ipc::Descriptor a = m.take();
  RawStage::Holder h = m.holder();
  m.lend(a, h.token);  // forwarded downstream; the owner has not drained since
  send_one(tx);
  send_one(tx);  // the stage's ring is full now
  {
    auto b = tx.allocate(16, 1s);
    ASSERT_TRUE(b);
    (void)tx.send(std::move(*b), 16, 1s);  // cuts the stage off (it was the only receiver)
  }
  EXPECT_EQ(tx.stats().receivers_cut_off, 1u);
  PoolStats p = pool.stats();
  EXPECT_EQ(p.in_flight, 1u);  // `a`, for its holder downstream
  ASSERT_TRUE(h.out.push(a));
  p = pool.stats();
  EXPECT_EQ(p.in_flight, 0u);
  EXPECT_EQ(p.free, 8u);
}

// A holder that hung up leaves no trace at the owner's control thread that
// a later holder could inherit. The owner's end of the first holder's
// socket is closed after its hang-up while the inlet (not yet dropped by a
// drain) keeps a duplicate; the next holder's socketpair() takes the freed
// fd number. Had the hung-up socket stayed registered under that number,
// its hang-up would be reported as the new holder's, which would be
// reclaimed at once (and the loan the stage records for it rejected):
// the buffer would be reused under a live holder.
TEST(PathCausality, AHolderThatHungUpDoesNotEndTheNextOne) {
  Pool pool(PoolOptions{.name = "path-holder-fd", .classes = {{4096, 4}}});
  const std::string service = service_name("holder-fd");
  Sender tx(pool, service);
  RawStage m(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  // Whether the freed number is the one taken next depends on the other
  // fds of this process: tried a few times over.
  for (int round = 0; round < 8; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    send_one(tx);
    const ipc::Descriptor a = m.take();
    {
      RawStage::Holder first = m.holder();
      first.sock.reset();  // its process went, holding nothing
    }
    // Handled by the control thread after the hang-up above (that became
    // ready first), with no drain between them.
    RawStage::Holder second = m.holder();
    // Another round trip on the stage's socket: the control thread has
    // gone round its loop again since the grant, so a stale hang-up would
    // have been handled by now.
    RawStage::Holder third = m.holder();
    m.lend(a, second.token);
    ASSERT_TRUE(m.out.push(a));  // the stage lets go; its holder has not
    (void)pool.stats();
    PoolStats p = pool.stats();
    EXPECT_EQ(tx.stats().rejected_returns, 0u);
    ASSERT_EQ(p.in_flight, 1u);
    ASSERT_TRUE(second.out.push(a));
    p = pool.stats();
    EXPECT_EQ(p.in_flight, 0u);
    EXPECT_EQ(p.free, 4u);
  }
}

// --- Protection: a forwarded buffer stays guarded while a holder holds it. ---

// With eager restore the owner makes a buffer writable again the moment
// its last holder returns it; so a write through the owner's old pointer
// faults exactly while someone on the path still holds the buffer.
// `holder_returns`: the holder gives it back before the write.
void write_after_forwarding(bool holder_returns) {
  // Sealed copies off: the buffer itself is sent, protected.
  Pool pool(PoolOptions{.name = "path-guard", .classes = {{4096, 4}}, .policy = Policy::kReadOnly,
                        .eager_restore = true, .sealed_copies = SealedCopies::kNever});
  const std::string service = service_name(holder_returns ? "guard-free" : "guard-held");
  Sender tx(pool, service);
  RawStage m(service);
  if (!tx.wait_for_receivers(1, 5s)) _exit(10);
  auto b = tx.allocate(100, 1s);
  if (!b) _exit(11);
  std::byte* raw = b->data();
  std::memset(raw, 'A', 100);
  if (tx.send(std::move(*b), 100, 1s)) _exit(12);
  const ipc::Descriptor a = m.take();
  RawStage::Holder h = m.holder();
  m.lend(a, h.token);
  if (!m.out.push(a)) _exit(13);  // the stage itself is done with it
  if (pool.stats().in_flight != 1) _exit(14);
  if (holder_returns) {
    if (!h.out.push(a)) _exit(15);
    if (pool.stats().in_flight != 0) _exit(16);
  }
  *reinterpret_cast<volatile char*>(raw + 5) = 'B';
  _exit(0);
}

TEST(PathProtectionDeathTest, AForwardedBufferStaysReadOnlyAtTheOwnerWhileAHolderHoldsIt) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(write_after_forwarding(false), ::testing::KilledBySignal(SIGSEGV),
              "pool 'path-guard' buffer 0 .*policy read_only");
  // The same write once every holder has let go: restored, so it succeeds.
  EXPECT_EXIT(write_after_forwarding(true), ::testing::ExitedWithCode(0), "");
}

// --- A lying stage upstream of a real receiver. ---

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
        }) {}
  ~FakeSender() { thread_.join(); }

 private:
  UniqueFd listen_;
  std::thread thread_;
};

constexpr std::uint32_t kReturn = 16;  // holder ring: 4 buffers x kReturnRingPools, at least the pool

// An upstream pool of 4 x 4 KiB as a stage would announce it.
struct Announced {
  UniqueFd pool = detail::make_sealed_memfd("fake-upstream", 4 * 4096, /*final=*/false);
  Mapping pool_map = Mapping::map(pool.get(), 4 * 4096, PROT_READ | PROT_WRITE, "p");
  UniqueFd bell = detail::make_sealed_memfd("fake-bell2", detail::page_size());
  std::uint64_t ring_bytes = ipc::ChannelHeader::bytes(ipc::kHolderSendCapacity, kReturn);
  UniqueFd ring = detail::make_sealed_memfd("fake-holder", ring_bytes);
  Mapping ring_map = Mapping::map(ring.get(), ring_bytes, PROT_READ | PROT_WRITE, "h");
  Mapping bell_map = Mapping::map(bell.get(), detail::page_size(), PROT_READ | PROT_WRITE, "b");
  detail::ReadyPair sock = detail::make_ready_pair();
  Announced() {
    detail::init_channel_header(ring_map.data(), ipc::kHolderSendCapacity, kReturn);
    new (bell_map.data()) detail::DoorbellHeader{};
  }
  ipc::PoolAnnounceInfo info(std::uint32_t slot) const {
    ipc::PoolAnnounceInfo a;
    a.slot = slot;
    a.pool.pool_name = "fake-upstream";
    a.pool.pool_size = 4 * 4096;
    a.pool.classes = {{4096, 4}};
    a.pool.policy = Policy::kVolatile;
    a.pool.return_capacity = kReturn;
    a.pool.ring_bytes = ring_bytes;
    a.token = 7;
    return a;
  }
};

void announce(int s, const ipc::PoolAnnounceInfo& a, std::vector<int> fds) {
  capnp::MallocMessageBuilder m;
  ipc::build_pool_announce(m, a);
  ASSERT_FALSE(ipc::send_message(s, m, fds));
}

TEST(LyingStage, UnknownSlotsAndForgedAnnouncementsAreRejectedCountedAndTheStreamGoesOn) {
  // The Welcome's own pool, ring and doorbell (4 x 4 KiB, 8-slot ring).
  UniqueFd wpool = detail::make_sealed_memfd("fake-pool", 4 * 4096);
  UniqueFd wring = detail::make_sealed_memfd("fake-ring", ipc::ChannelHeader::bytes(8, 4));
  UniqueFd wbell = detail::make_sealed_memfd("fake-bell", detail::page_size());
  Mapping wring_map = Mapping::map(wring.get(), ipc::ChannelHeader::bytes(8, 4), PROT_READ | PROT_WRITE, "r");
  detail::init_channel_header(wring_map.data(), 8, 4);
  detail::ReadyPair ready = detail::make_ready_pair();
  Announced up, wrong;
  std::atomic<int> conn{-1};
  std::atomic<bool> done{false};
  const std::string service = service_name("announce");
  FakeSender fake(service, [&](int s) {
    capnp::MallocMessageBuilder m;
    auto w = m.initRoot<ipc::proto::ControlMessage>().initWelcome();
    w.setVersion(ipc::kProtocolVersion);
    w.setPoolName("fake");
    w.setPoolSize(4 * 4096);
    auto c = w.initClasses(1);
    c[0].setBufferSize(4096);
    c[0].setCount(4);
    w.setSendCapacity(8);
    w.setReturnCapacity(4);
    w.setRingBytes(ipc::ChannelHeader::bytes(8, 4));
    int fds[4] = {wpool.get(), wring.get(), wbell.get(), ready.receiver.get()};
    ipc::send_message(s, m, fds);
    conn = s;
    while (!done.load()) std::this_thread::sleep_for(1ms);
  });
  Receiver rx = Receiver::connect(service, {.connect_timeout = 3s});
  while (conn.load() < 0) std::this_thread::sleep_for(1ms);
  const int s = conn.load();
  auto* h = reinterpret_cast<ipc::ChannelHeader*>(wring_map.data());
  detail::RingProducer out(&h->send,
                           reinterpret_cast<ipc::Descriptor*>(wring_map.data() + ipc::ChannelHeader::send_slots_offset()), 8);
  auto expect_bad = [&](ipc::Descriptor d) {
    ASSERT_TRUE(out.push(d));
    auto v = rx.receive(1s);
    ASSERT_FALSE(v);
    EXPECT_EQ(v.error(), make_error_code(Errc::kBadDescriptor));
  };
  const ipc::Descriptor forwarded{1, 2, 5, 8, 16, 0, 0};
  std::uint64_t rejected = 0;
  // A slot nobody announced.
  expect_bad(forwarded);
  ++rejected;
  // Announcements with the wrong fds: a pool of the wrong size, a pipe for
  // the holder socket, a doorbell that is no memfd, too few fds; one for
  // slot 2 before slot 1; one with a slot past the limit.
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd pipe_r(pipe_fds[0]), pipe_w(pipe_fds[1]);
  UniqueFd small = detail::make_sealed_memfd("small", 4096);
  announce(s, up.info(1), {small.get(), up.bell.get(), up.ring.get(), up.sock.receiver.get()});
  announce(s, up.info(1), {up.pool.get(), up.bell.get(), up.ring.get(), pipe_r.get()});
  announce(s, up.info(1), {up.pool.get(), pipe_r.get(), up.ring.get(), up.sock.receiver.get()});
  announce(s, up.info(1), {up.pool.get(), up.bell.get(), up.ring.get()});
  announce(s, up.info(2), {up.pool.get(), up.bell.get(), up.ring.get(), up.sock.receiver.get()});
  expect_bad(forwarded);
  rejected += 6;  // five announcements and the descriptor
  // A good announcement: the slot's views read the upstream pool, and
  // return into the holder ring.
  std::memcpy(up.pool_map.data() + 2 * 4096 + 8, "forwarded bytes!", 16);
  announce(s, up.info(1), {up.pool.get(), up.bell.get(), up.ring.get(), up.sock.receiver.get()});
  ASSERT_TRUE(out.push(forwarded));
  {
    auto v = rx.receive(1s);
    ASSERT_TRUE(v) << v.error().message();
    EXPECT_EQ(std::memcmp(v->data(), "forwarded bytes!", 16), 0);
  }
  auto* hh = reinterpret_cast<ipc::ChannelHeader*>(up.ring_map.data());
  detail::RingConsumer returns(&hh->ret, reinterpret_cast<const ipc::Descriptor*>(
                                              up.ring_map.data() + ipc::ChannelHeader::return_slots_offset(1)),
                               kReturn);
  ipc::Descriptor back{};
  ASSERT_EQ(returns.pop(back), detail::RingStatus::kOk);
  EXPECT_EQ(back.index, 2u);
  EXPECT_EQ(back.generation, 5u);
  // Out of the buffer, or a slot past the announced ones: rejected.
  expect_bad(ipc::Descriptor{1, 2, 5, 4090, 16, 0, 0});
  expect_bad(ipc::Descriptor{2, 2, 5, 0, 16, 0, 0});
  rejected += 2;
  // The stream's own pool still works.
  ASSERT_TRUE(out.push(ipc::Descriptor{0, 1, 1, 0, 16, 0, 0}));
  auto v = rx.receive(1s);
  EXPECT_TRUE(v) << v.error().message();
  EXPECT_EQ(rx.stats().rejected_descriptors, rejected);
  done = true;
}

}  // namespace
}  // namespace fbuf
