// The readiness fd of a receiving end (Receiver::fd(), arm()) in one
// process, step by step: when it polls readable, that arming is needed for
// a signal, that arm() drains what an earlier arming left, and the C calls.
// The interleavings across threads and processes are
// tests/integration/event_loop_test.cc.
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fbuf/fbuf.h"
#include "fbuf/uf.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;

bool readable(int fd, int ms = 0) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1 && (p.revents & POLLIN) != 0;
}

void send_one(Sender& tx, std::uint64_t value) {
  auto b = tx.allocate(64, 1s);
  ASSERT_TRUE(b);
  std::memcpy(b->data(), &value, sizeof value);
  ASSERT_FALSE(tx.send(std::move(*b), sizeof value, 1s));
}

Pool make_pool() { return Pool(PoolOptions{.name = "readiness-test", .classes = {{4096, 64}}}); }

TEST(ReadinessFd, IsReadableOnlyAfterAnArmingAndASend) {
  Pool pool = make_pool();
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  ASSERT_GE(rx.fd(), 0);
  EXPECT_FALSE(readable(rx.fd()));
  // Not armed: sends do not touch the fd (no syscall per message while the
  // receiver keeps up).
  for (int i = 0; i < 10; ++i) send_one(tx, i);
  EXPECT_FALSE(readable(rx.fd()));
  // Something is waiting: arm() refuses.
  EXPECT_FALSE(rx.arm());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(rx.try_receive());
  EXPECT_EQ(rx.try_receive().error(), make_error_code(Errc::kWouldBlock));
  ASSERT_TRUE(rx.arm());
  EXPECT_FALSE(readable(rx.fd()));
  send_one(tx, 10);
  EXPECT_TRUE(readable(rx.fd()));
  // One signal per arming: more sends add nothing to drain.
  for (int i = 11; i < 20; ++i) send_one(tx, i);
  for (int i = 10; i < 20; ++i) ASSERT_TRUE(rx.try_receive());
  // Arming again drains the old signal, so a level-triggered loop does not
  // spin on it.
  ASSERT_TRUE(rx.arm());
  EXPECT_FALSE(readable(rx.fd()));
}

TEST(ReadinessFd, AnArmingThatFindsABufferIsTakenBackAndCostsNoSignal) {
  Pool pool = make_pool();
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  ASSERT_TRUE(rx.arm());
  send_one(tx, 1);
  ASSERT_TRUE(readable(rx.fd()));
  send_one(tx, 2);
  // A buffer is waiting: arm() drains the signal and refuses.
  EXPECT_FALSE(rx.arm());
  EXPECT_FALSE(readable(rx.fd()));
  ASSERT_TRUE(rx.try_receive());
  ASSERT_TRUE(rx.try_receive());
  ASSERT_TRUE(rx.arm());
  EXPECT_FALSE(readable(rx.fd()));
}

TEST(ReadinessFd, TheEndOfTheStreamMakesAnArmedFdReadable) {
  Pool pool = make_pool();
  auto tx = std::make_unique<Sender>(pool);
  Receiver rx = tx->connect_local();
  send_one(*tx, 7);
  ASSERT_TRUE(rx.try_receive());
  ASSERT_TRUE(rx.arm());
  std::thread closer([&] {
    std::this_thread::sleep_for(20ms);
    tx.reset();
  });
  EXPECT_TRUE(readable(rx.fd(), 5000));
  closer.join();
  EXPECT_FALSE(rx.arm());
  EXPECT_EQ(rx.try_receive().error(), make_error_code(Errc::kPeerGone));
  // The stream has ended: arm() keeps saying "receive", never "sleep".
  EXPECT_FALSE(rx.arm());
}

TEST(ReadinessFd, AReceiverConnectedThroughItsServiceHasOneToo) {
  Pool pool = make_pool();
  const std::string service = "unit/readiness/" + std::to_string(::getpid());
  Sender tx(pool, service);
  Receiver rx = Receiver::connect(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  ASSERT_GE(rx.fd(), 0);
  ASSERT_TRUE(rx.arm());
  send_one(tx, 3);
  EXPECT_TRUE(readable(rx.fd(), 5000));
  auto v = rx.try_receive();
  ASSERT_TRUE(v);
  ASSERT_TRUE(rx.arm());
  EXPECT_FALSE(readable(rx.fd()));
}

TEST(ReadinessFd, AMovedFromReceiverHasNoneAndNeverArms) {
  Pool pool = make_pool();
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  Receiver other = std::move(rx);
  EXPECT_EQ(rx.fd(), -1);  // NOLINT(bugprone-use-after-move): the moved-from state is what is tested
  EXPECT_FALSE(rx.arm());
  EXPECT_GE(other.fd(), 0);
}

// --- The sending end. ---

TEST(SenderReadinessFd, AnExhaustedPoolArmsAndAReturnedViewMakesItReadable) {
  Pool pool(PoolOptions{.name = "readiness-tx", .classes = {{4096, 4}}});
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  ASSERT_GE(tx.fd(), 0);
  // Buffers free: nothing to wait for.
  EXPECT_FALSE(tx.arm(64));
  std::vector<View> held;
  for (int i = 0; i < 4; ++i) {
    send_one(tx, i);
    auto v = rx.try_receive();
    ASSERT_TRUE(v);
    held.push_back(std::move(*v));
  }
  ASSERT_EQ(tx.try_allocate(64).error(), make_error_code(Errc::kWouldBlock));
  // Ring room is there (size 0 asks only for that): no wait.
  EXPECT_FALSE(tx.arm(0));
  ASSERT_TRUE(tx.arm(64));
  EXPECT_FALSE(readable(tx.fd()));
  held.pop_back();  // the view goes back to the pool
  EXPECT_TRUE(readable(tx.fd(), 5000));
  EXPECT_FALSE(tx.arm(64));
  EXPECT_FALSE(readable(tx.fd()));  // drained
  ASSERT_TRUE(tx.try_allocate(64));
}

TEST(SenderReadinessFd, AFullRingArmsAndAReceiverTakingMakesItReadable) {
  Pool pool(PoolOptions{.name = "readiness-ring", .classes = {{4096, 16}}});
  Sender tx(pool, SenderOptions{.ring_capacity = 2});
  Receiver rx = tx.connect_local();
  send_one(tx, 1);
  send_one(tx, 2);
  auto b = tx.try_allocate(64);
  ASSERT_TRUE(b);
  ASSERT_EQ(tx.try_send(std::move(*b), 8), make_error_code(Errc::kWouldBlock));
  ASSERT_TRUE(tx.arm());
  ASSERT_TRUE(tx.arm());  // arming twice is harmless
  EXPECT_FALSE(readable(tx.fd()));
  std::thread taker([&] {
    std::this_thread::sleep_for(20ms);
    ASSERT_TRUE(rx.try_receive());
  });
  EXPECT_TRUE(readable(tx.fd(), 5000));
  taker.join();
  EXPECT_FALSE(tx.arm());
  EXPECT_FALSE(tx.try_send(std::move(*b), 8));
}

TEST(SenderReadinessFd, AReceiverInAnotherProcessSignalsRoomAndReturns) {
  Pool pool(PoolOptions{.name = "readiness-remote", .classes = {{4096, 2}}});
  const std::string service = "unit/readiness-tx/" + std::to_string(::getpid());
  Sender tx(pool, service, SenderOptions{.ring_capacity = 2});
  // In this process, but through the service socket, the rings and the
  // doorbell exactly as a receiver in another process.
  Receiver rx = Receiver::connect(service);
  ASSERT_TRUE(tx.wait_for_receivers(1, 5s));
  send_one(tx, 1);
  send_one(tx, 2);
  ASSERT_TRUE(tx.arm(64));  // both buffers lent, the ring full
  auto v = rx.try_receive();
  ASSERT_TRUE(v);
  EXPECT_TRUE(readable(tx.fd(), 5000));  // room in the ring
  ASSERT_TRUE(tx.arm(64));               // still no buffer
  EXPECT_FALSE(readable(tx.fd()));
  v->reset();
  EXPECT_TRUE(readable(tx.fd(), 5000));  // a return through the doorbell
  EXPECT_FALSE(tx.arm(64));
}

TEST(SenderReadinessFd, AMovedFromSenderHasNone) {
  Pool pool = make_pool();
  Sender tx(pool);
  Sender other = std::move(tx);
  EXPECT_EQ(tx.fd(), -1);  // NOLINT(bugprone-use-after-move): the moved-from state is what is tested
  EXPECT_FALSE(tx.arm(64));
  EXPECT_GE(other.fd(), 0);
}

TEST(WaitSet, ReportsOnlyTheReceiversWithSomethingWaiting) {
  Pool a = make_pool(), b = make_pool(), c = make_pool();
  Sender ta(a), tb(b), tc(c);
  Receiver ra = ta.connect_local(), rb = tb.connect_local(), rc = tc.connect_local();
  WaitSet set;
  set.add(ra);
  set.add(rb);
  set.add(rc);
  EXPECT_THROW(set.add(rb), Error);
  EXPECT_EQ(set.size(), 3u);
  EXPECT_TRUE(set.wait(0ms).empty());
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(set.wait(30ms).empty());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 30ms);

  std::thread later([&] {
    std::this_thread::sleep_for(20ms);
    send_one(tb, 1);
  });
  auto ready = set.wait(5s);
  later.join();
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0], &rb);
  ASSERT_TRUE(rb.try_receive());

  send_one(ta, 2);
  send_one(tc, 3);
  ready = set.wait(5s);
  ASSERT_EQ(ready.size(), 2u);
  EXPECT_EQ(ready[0], &ra);
  EXPECT_EQ(ready[1], &rc);
  ASSERT_TRUE(ra.try_receive());
  ASSERT_TRUE(rc.try_receive());
  set.remove(rc);
  send_one(tc, 4);
  EXPECT_TRUE(set.wait(20ms).empty());
}

TEST(UfChannelFd, ArmsAndPollsFromC) {
  uf_size_class cls{4096, 8};
  uf_pool* pool = nullptr;
  ASSERT_EQ(uf_pool_create("readiness-c", &cls, 1, UF_POLICY_VOLATILE, &pool), UF_OK);
  uf_channel* tx = nullptr;
  ASSERT_EQ(uf_channel_listen(pool, nullptr, &tx), UF_OK);
  uf_channel* rx = nullptr;
  ASSERT_EQ(uf_channel_connect_local(tx, &rx), UF_OK);
  EXPECT_GE(uf_channel_fd(tx), 0);
  EXPECT_NE(uf_channel_fd(tx), uf_channel_fd(rx));
  EXPECT_EQ(uf_channel_fd(nullptr), -1);
  EXPECT_EQ(uf_channel_arm(nullptr), 0);
  const int fd = uf_channel_fd(rx);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(uf_channel_arm(rx), 1);
  uf_buf* b = nullptr;
  ASSERT_EQ(uf_allocb(tx, 64, 0, &b), UF_OK);
  ASSERT_EQ(uf_write(tx, b, 8, -1), UF_OK);
  EXPECT_TRUE(readable(fd, 5000));
  EXPECT_EQ(uf_channel_arm(rx), 0);
  uf_buf* v = nullptr;
  ASSERT_EQ(uf_get(rx, 0, &v), UF_OK);
  uf_deallocate(v);
  EXPECT_EQ(uf_get(rx, 0, &v), UF_EAGAIN);
  EXPECT_EQ(uf_channel_arm(rx), 1);

  // The sending end: 8 buffers, all sent and held by the receiver.
  std::vector<uf_buf*> held;
  for (int i = 0; i < 8; ++i) {
    ASSERT_EQ(uf_allocb(tx, 64, 0, &b), UF_OK);
    ASSERT_EQ(uf_write(tx, b, 8, -1), UF_OK);
    ASSERT_EQ(uf_get(rx, 0, &v), UF_OK);
    held.push_back(v);
  }
  EXPECT_EQ(uf_allocb(tx, 64, 0, &b), UF_EAGAIN);
  const int tfd = uf_channel_fd(tx);
  ASSERT_EQ(uf_channel_arm_alloc(tx, 64), 1);
  EXPECT_FALSE(readable(tfd));
  uf_deallocate(held.back());
  held.pop_back();
  EXPECT_TRUE(readable(tfd, 5000));
  EXPECT_EQ(uf_channel_arm_alloc(tx, 64), 0);
  EXPECT_EQ(uf_channel_arm_alloc(rx, 64), 0);  // not a sending end
  for (uf_buf* h : held) uf_deallocate(h);
  uf_channel_close(rx);
  uf_channel_close(tx);
  uf_pool_destroy(pool);
}

}  // namespace
}  // namespace fbuf
