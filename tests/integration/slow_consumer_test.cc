// Slow consumers: a receiver process that connects and then stops taking
// (fbuf_it_peer stall) must not stop the others, within what the Sender's
// policy promises, and what it missed is counted on both sides. The honest
// receiver is a consume process that checks every frame in order.
//
// Under a budget, a receiver keeps up when it has fewer than `budget`
// buffers out each time the next one is sent: the tests pace their sends on
// the consumer's returns (a window of budget - 1 frames), so that only the
// staller is ever over budget. The pools are small (8 buffers): without the
// policy under test the staller pins the whole pool (or fills its ring) and
// the sends time out.
#include <gtest/gtest.h>
#include <signal.h>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fbuf/fbuf.h"
#include "ipc/control.h"
#include "ipc/handshake.capnp.h"
#include "ipc/handshake.h"
#include "ipc/layout.h"
#include "pool_check.h"
#include "child_process.h"
#include "test_frame.h"

namespace fbuf::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kFrames = 1000;

std::chrono::milliseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

// Sends test frames [first, first + count), each allocated and sent with a
// 5 s timeout. With a `window`, each send first waits until fewer than
// `window` sent buffers are still out with the receivers that return
// (SenderStats::sent - returned: a staller returns nothing). Returns "" or
// what failed.
std::string send_frames(Sender& tx, std::uint64_t first, std::uint64_t count, std::uint64_t window = 0) {
  const std::size_t max_frame = tx.pool().max_buffer_size();
  for (std::uint64_t seq = first; seq < first + count; ++seq) {
    const auto deadline = Clock::now() + 10s;
    for (SenderStats s = tx.stats(); window != 0 && s.sent - s.returned >= window; s = tx.stats()) {
      if (Clock::now() > deadline)
        return "the consumer did not keep up before frame " + std::to_string(seq) + " (sent " +
               std::to_string(s.sent) + ", returned " + std::to_string(s.returned) + ")";
      std::this_thread::yield();
    }
    const std::size_t payload = tf_mixed_payload_size(seq, max_frame);
    Result<Buffer> b = tx.allocate(TF_HEADER_SIZE + payload, 5s);
    if (!b) return "allocate for frame " + std::to_string(seq) + ": " + b.error().message();
    tf_write(reinterpret_cast<unsigned char*>(b->data()), seq, payload);
    const std::error_code ec = tx.send(std::move(*b), TF_HEADER_SIZE + payload, 5s);
    if (ec) return "send of frame " + std::to_string(seq) + ": " + ec.message();
  }
  return {};
}

// True once `pool` has exactly `n` buffers in flight, within `timeout`.
bool wait_in_flight(Pool& pool, std::uint32_t n, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (pool.stats().in_flight != n) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

Pool small_pool(const char* name, std::uint32_t buffers = 8) {
  return Pool(PoolOptions{.name = name, .classes = {{4096, buffers}}, .policy = Policy::kVolatile});
}

std::vector<std::string> consume_args(const std::string& service, std::uint64_t frames) {
  return {"consume", "--service", service, "--count", std::to_string(frames), "--end", "1"};
}

// The scenario shared by the skip tests: a staller that holds 4 views and
// a consumer that takes every frame, then the staller reports.
void expect_staller_skipped(const SenderOptions& options, const std::vector<std::string>& staller_args,
                            const char* tag) {
  const std::string service = unique_service(tag);
  Pool pool = small_pool(tag);
  std::optional<Sender> tx;
  tx.emplace(pool, service, options);
  std::vector<std::string> args = {"stall", "--service", service, "--views", "4"};
  args.insert(args.end(), staller_args.begin(), staller_args.end());
  Child staller(FBUF_IT_PEER, args);
  Child honest(FBUF_IT_PEER, consume_args(service, kFrames));
  ASSERT_TRUE(tx->wait_for_receivers(2, 20s)) << staller.output() << honest.output();

  const auto start = Clock::now();
  ASSERT_EQ(send_frames(*tx, 0, kFrames, 3), "") << describe(pool.stats()) << "\n" << staller.output();
  const auto took = since(start);
  EXPECT_LT(took, 20s);
  std::printf("%llu frames past the staller in %lld ms\n", static_cast<unsigned long long>(kFrames),
              static_cast<long long>(took.count()));
  ASSERT_TRUE(staller.wait_for_output("holding views=4", 20s)) << staller.output();

  // Frames 0-3 reached both; every later one reached the consumer only.
  const SenderStats s = tx->stats();
  EXPECT_EQ(s.sent, kFrames);
  EXPECT_EQ(s.dropped, kFrames - 4);
  EXPECT_EQ(s.delivered, kFrames + 4);
  EXPECT_EQ(s.receivers_cut_off, 0u);
  EXPECT_EQ(tx->receiver_count(), 2u);

  // The staller sees the same count in its own stats.
  staller.kill(SIGUSR1);
  ASSERT_TRUE(staller.wait_for_output("stalled dropped=", 20s)) << staller.output();
  tx.reset();
  const ExitStatus hs = honest.wait(60s);
  const ExitStatus ss = staller.wait(60s);
  EXPECT_TRUE(hs.exited_with(0)) << hs.describe() << "\n" << honest.output();
  EXPECT_EQ(field(honest.output(), "frames"), std::to_string(kFrames)) << honest.output();
  ASSERT_TRUE(ss.exited_with(0)) << ss.describe() << "\n" << staller.output();
  EXPECT_NE(staller.output().find("stalled dropped=" + std::to_string(kFrames - 4) + "\n"), std::string::npos)
      << staller.output();
  EXPECT_NE(staller.output().find("stall ok end=peer-gone after=0 dropped=" + std::to_string(kFrames - 4)),
            std::string::npos)
      << staller.output();
  EXPECT_EQ(check_all_buffers_return(pool, 20s), "");
}

TEST(SlowConsumer, SkipPolicyKeepsTheOthersStreamingAndCountsWhatTheStallerMissed) {
  expect_staller_skipped(SenderOptions{.ring_capacity = 16,
                                       .slow_receiver = SlowReceiverPolicy::kSkip,
                                       .receiver_budget = 4},
                         {}, "skip");
}

TEST(SlowConsumer, AReceiverMayAskABlockingSenderToSkipIt) {
  // The Sender blocks by default; only the staller asks, in its Hello.
  expect_staller_skipped(SenderOptions{.ring_capacity = 16}, {"--policy", "skip", "--budget", "4"}, "ask-skip");
}

TEST(SlowConsumer, AReceiverCannotAskToBeTreatedLessLeniently) {
  // Asking to block, with a larger budget, changes nothing.
  expect_staller_skipped(SenderOptions{.ring_capacity = 16,
                                       .slow_receiver = SlowReceiverPolicy::kSkip,
                                       .receiver_budget = 4},
                         {"--policy", "block", "--budget", "100"}, "ask-block");
}

TEST(SlowConsumer, CutOffPolicyReclaimsEverythingTheStallerHeldAtOnce) {
  const std::string service = unique_service("cut-off");
  Pool pool = small_pool("cut-off");
  std::optional<Sender> tx;
  tx.emplace(pool, service,
             SenderOptions{.ring_capacity = 16, .slow_receiver = SlowReceiverPolicy::kCutOff, .receiver_budget = 4});
  Child staller(FBUF_IT_PEER, {"stall", "--service", service, "--views", "4"});
  Child honest(FBUF_IT_PEER, consume_args(service, kFrames));
  ASSERT_TRUE(tx->wait_for_receivers(2, 20s)) << staller.output() << honest.output();

  ASSERT_EQ(send_frames(*tx, 0, 4, 3), "");
  ASSERT_TRUE(staller.wait_for_output("holding views=4", 20s)) << staller.output();
  // The consumer has given its four back (the staller returns nothing); the
  // staller holds its four.
  const auto deadline = Clock::now() + 20s;
  while (tx->stats().returned != 4 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(tx->stats().returned, 4u);
  ASSERT_EQ(pool.stats().in_flight, 4u) << describe(pool.stats());

  // The fifth takes the staller past its budget: it is cut off within this
  // send, and its four buffers are free when the send returns.
  ASSERT_EQ(send_frames(*tx, 4, 1), "");
  const PoolStats after = pool.stats();
  EXPECT_LE(after.in_flight, 1u) << describe(after);
  EXPECT_GE(after.free, after.total - 1) << describe(after);
  SenderStats s = tx->stats();
  EXPECT_EQ(s.receivers_cut_off, 1u);
  EXPECT_EQ(s.receivers_lost, 0u);
  EXPECT_EQ(tx->receiver_count(), 1u);

  const auto start = Clock::now();
  ASSERT_EQ(send_frames(*tx, 5, kFrames - 5, 3), "") << describe(pool.stats());
  EXPECT_LT(since(start), 20s);
  s = tx->stats();
  EXPECT_EQ(s.sent, kFrames);
  EXPECT_EQ(s.delivered, kFrames + 4);
  EXPECT_EQ(s.dropped, 0u);

  // The staller learns it was cut off, after what it was sent before.
  staller.kill(SIGUSR1);
  const ExitStatus ss = staller.wait(60s);
  ASSERT_TRUE(ss.exited_with(0)) << ss.describe() << "\n" << staller.output();
  EXPECT_NE(staller.output().find("stall ok end=cut-off after=0 dropped=0"), std::string::npos) << staller.output();
  tx.reset();
  const ExitStatus hs = honest.wait(60s);
  EXPECT_TRUE(hs.exited_with(0)) << hs.describe() << "\n" << honest.output();
  EXPECT_EQ(field(honest.output(), "frames"), std::to_string(kFrames)) << honest.output();
  EXPECT_EQ(check_all_buffers_return(pool, 20s), "");
}

// A staller with one view taken and its ring (capacity 4) full.
struct FullRing {
  std::string service;
  Pool pool;
  std::optional<Sender> tx;
  std::optional<Child> staller;

  FullRing(const char* tag, SlowReceiverPolicy policy)
      : service(unique_service(tag)), pool(small_pool(tag, 16)) {
    tx.emplace(pool, service, SenderOptions{.ring_capacity = 4, .slow_receiver = policy});
    staller.emplace(FBUF_IT_PEER, std::vector<std::string>{"stall", "--service", service, "--views", "1"});
  }

  void fill() {
    ASSERT_TRUE(tx->wait_for_receivers(1, 20s)) << staller->output();
    ASSERT_EQ(send_frames(*tx, 0, 1), "");
    ASSERT_TRUE(staller->wait_for_output("holding views=1", 20s)) << staller->output();
    ASSERT_EQ(send_frames(*tx, 1, 4), "");
  }

  void finish() {
    staller->kill(SIGUSR1);
    tx.reset();
    const ExitStatus st = staller->wait(60s);
    EXPECT_TRUE(st.exited_with(0)) << st.describe() << "\n" << staller->output();
    EXPECT_NE(staller->output().find("stall ok end=peer-gone after=4 dropped=0"), std::string::npos)
        << staller->output();
    EXPECT_EQ(check_all_buffers_return(pool, 20s), "");
  }
};

TEST(SlowConsumer, FailFastReturnsWouldBlockAtOnceAndKeepsTheBuffer) {
  FullRing f("fail-fast", SlowReceiverPolicy::kFailFast);
  ASSERT_NO_FATAL_FAILURE(f.fill());
  Result<Buffer> b = f.tx->try_allocate(64);
  ASSERT_TRUE(b);
  std::memset(b->data(), 0x5a, 64);
  std::byte* where = b->data();
  const auto start = Clock::now();
  const std::error_code ec = f.tx->send(std::move(*b), 64, 5s);
  const auto took = since(start);
  EXPECT_EQ(ec, Errc::kWouldBlock) << ec.message();
  EXPECT_LT(took, 1s) << "a full ring must not make a fail-fast send wait";
  // The buffer is still the caller's, untouched.
  ASSERT_TRUE(*b);
  EXPECT_EQ(b->data(), where);
  EXPECT_EQ(b->data()[63], std::byte{0x5a});
  EXPECT_EQ(f.tx->stats().sent, 5u);
  b->reset();
  f.finish();
}

TEST(SlowConsumer, BlockPolicyStillWaitsForRingSpaceUpToTheTimeout) {
  FullRing f("block", SlowReceiverPolicy::kBlock);
  ASSERT_NO_FATAL_FAILURE(f.fill());
  Result<Buffer> b = f.tx->try_allocate(64);
  ASSERT_TRUE(b);
  const auto start = Clock::now();
  const std::error_code ec = f.tx->send(std::move(*b), 64, 300ms);
  const auto took = since(start);
  EXPECT_EQ(ec, Errc::kTimedOut) << ec.message();
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 5s);
  EXPECT_TRUE(*b) << "the buffer stays the caller's";
  EXPECT_EQ(f.tx->try_send(std::move(*b), 64), Errc::kWouldBlock);
  b->reset();
  f.finish();
}

TEST(SlowConsumer, AHoldTimeoutAskedForInTheHelloCutsOffAReceiverThatHoldsABufferTooLong) {
  // The Sender blocks (the default) and has no hold timeout: only the
  // staller asks for one, so a consumer slowed down by a loaded machine is
  // never at risk. Without it the staller's queue would pin the whole pool
  // and the sends would time out.
  const std::string service = unique_service("hold");
  Pool pool = small_pool("hold");
  std::optional<Sender> tx;
  tx.emplace(pool, service, SenderOptions{.ring_capacity = 16});
  Child staller(FBUF_IT_PEER, {"stall", "--service", service, "--views", "1", "--hold-ms", "300"});
  Child honest(FBUF_IT_PEER, consume_args(service, kFrames));
  ASSERT_TRUE(tx->wait_for_receivers(2, 20s)) << staller.output() << honest.output();

  const auto start = Clock::now();
  ASSERT_EQ(send_frames(*tx, 0, kFrames), "") << describe(pool.stats()) << "\n" << staller.output();
  const auto took = since(start);
  // The staller held frame 0 from the start: nothing may cut it off early.
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 20s);
  const SenderStats s = tx->stats();
  EXPECT_EQ(s.receivers_cut_off, 1u);
  EXPECT_EQ(s.dropped, 0u);
  EXPECT_EQ(tx->receiver_count(), 1u);

  staller.kill(SIGUSR1);
  const ExitStatus ss = staller.wait(60s);
  ASSERT_TRUE(ss.exited_with(0)) << ss.describe() << "\n" << staller.output();
  EXPECT_NE(staller.output().find("stall ok end=cut-off"), std::string::npos) << staller.output();
  tx.reset();
  const ExitStatus hs = honest.wait(60s);
  EXPECT_TRUE(hs.exited_with(0)) << hs.describe() << "\n" << honest.output();
  EXPECT_EQ(check_all_buffers_return(pool, 20s), "");
}

TEST(SlowConsumer, HoldTimeoutIsCheckedWhileNoSendIsMade) {
  const std::string service = unique_service("hold-idle");
  Pool pool = small_pool("hold-idle");
  std::optional<Sender> tx;
  tx.emplace(pool, service, SenderOptions{.hold_timeout = 200ms});
  Child staller(FBUF_IT_PEER, {"stall", "--service", service, "--views", "1"});
  ASSERT_TRUE(tx->wait_for_receivers(1, 20s)) << staller.output();
  const auto start = Clock::now();
  ASSERT_EQ(send_frames(*tx, 0, 1), "");
  ASSERT_TRUE(staller.wait_for_output("holding views=1", 20s)) << staller.output();

  // No send, no Sender::stats(): only the control thread can take it back.
  ASSERT_TRUE(wait_in_flight(pool, 0, 10s)) << describe(pool.stats());
  const auto took = since(start);
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(tx->stats().receivers_cut_off, 1u);

  staller.kill(SIGUSR1);
  const ExitStatus ss = staller.wait(60s);
  ASSERT_TRUE(ss.exited_with(0)) << ss.describe() << "\n" << staller.output();
  EXPECT_NE(staller.output().find("stall ok end=cut-off after=0 dropped=0"), std::string::npos) << staller.output();
}

TEST(SlowConsumer, HoldTimeoutAppliesToInProcessReceiversOnTheSendPath) {
  // No listener: only the send path checks. The consumer thread is under
  // the same hold timeout, long enough for a loaded machine.
  Pool pool = small_pool("hold-local", 32);
  std::optional<Sender> tx;
  tx.emplace(pool, SenderOptions{.ring_capacity = 8, .hold_timeout = 500ms});
  Receiver stalled = tx->connect_local();
  Receiver honest = tx->connect_local();
  std::atomic<std::uint64_t> got{0};
  std::thread consumer([&] {
    for (;;) {
      Result<View> v = honest.receive(10s);
      if (!v) break;
      ++got;
    }
  });
  const auto start = Clock::now();
  std::string problem;
  for (int i = 0; i < 700 && problem.empty(); ++i) {
    problem = send_frames(*tx, static_cast<std::uint64_t>(i), 1);
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(problem, "") << "after " << since(start).count() << " ms; got " << got;
  EXPECT_LT(since(start), 10s);
  const SenderStats s = tx->stats();
  EXPECT_EQ(s.receivers_cut_off, 1u);
  EXPECT_EQ(tx->receiver_count(), 1u);

  // What was queued before the cut-off is still there, then kCutOff once.
  std::uint64_t queued = 0;
  Result<View> v = stalled.try_receive();
  for (; v; v = stalled.try_receive()) ++queued;
  EXPECT_EQ(v.error(), Errc::kCutOff) << v.error().message();
  EXPECT_LE(queued, 8u);
  EXPECT_EQ(stalled.try_receive().error(), Errc::kPeerGone);

  tx.reset();
  consumer.join();
  EXPECT_EQ(got.load(), 700u);
}

// --- Hostile Hello fields. ---

kj::Array<capnp::word> hello_words(std::uint8_t policy, std::uint32_t budget, std::uint64_t hold_ns) {
  capnp::MallocMessageBuilder m;
  auto h = m.initRoot<ipc::proto::ControlMessage>().initHello();
  h.setVersion(ipc::kProtocolVersion);
  h.setPid(1);
  h.setSlowPolicy(policy);
  h.setReceiverBudget(budget);
  h.setHoldTimeoutNs(hold_ns);
  return capnp::messageToFlatArray(m);
}

TEST(SlowConsumerHello, DecodesWhatTheReceiverAsksFor) {
  const ipc::HelloInfo h = ipc::decode_hello(hello_words(2, 7, 1'000'000));
  EXPECT_EQ(h.slow_policy, SlowReceiverPolicy::kSkip);
  EXPECT_EQ(h.receiver_budget, 7u);
  EXPECT_EQ(h.hold_timeout_ns, 1'000'000u);
}

TEST(SlowConsumerHello, RejectsAnUnknownPolicyAndAnOutOfRangeHoldTimeout) {
  for (std::uint8_t bad : {std::uint8_t{4}, std::uint8_t{255}}) {
    try {
      ipc::decode_hello(hello_words(bad, 0, 0));
      ADD_FAILURE() << "policy " << int{bad} << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kProtocol) << e.what();
    }
  }
  try {
    ipc::decode_hello(hello_words(0, 0, std::uint64_t{1} << 63));
    ADD_FAILURE() << "a hold timeout of 2^63 ns accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kProtocol) << e.what();
  }
}

TEST(SlowConsumerHello, ASenderRejectsAHelloWithAnUnknownPolicy) {
  const std::string service = unique_service("bad-hello");
  Pool pool = small_pool("bad-hello");
  Sender tx(pool, service);
  detail::UniqueFd sock = ipc::connect_service(service, 5s);
  capnp::MallocMessageBuilder m;
  auto h = m.initRoot<ipc::proto::ControlMessage>().initHello();
  h.setVersion(ipc::kProtocolVersion);
  h.setSlowPolicy(9);
  ASSERT_FALSE(ipc::send_message(sock.get(), m, {}));
  ipc::Datagram dg;
  ASSERT_FALSE(ipc::receive_message(sock.get(), dg, 5s));
  try {
    ipc::decode_welcome(dg.words);
    ADD_FAILURE() << "a Welcome for a Hello with policy 9";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("slow-receiver policy 9"), std::string::npos) << e.what();
  }
  // The Reject goes out before the control thread counts it.
  const auto deadline = Clock::now() + 5s;
  while (tx.stats().rejected_handshakes == 0 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(tx.stats().rejected_handshakes, 1u);
  EXPECT_EQ(tx.receiver_count(), 0u);
}

}  // namespace
}  // namespace fbuf::testing
