// The soak run: 10^7 frames of random sizes from one sender to three
// receiver processes, every frame checked for order and checksum by each.
// Label `stress`: skipped by the default test run; `./build.sh soak` runs
// it. FBUF_SOAK_MESSAGES overrides the count.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "child_process.h"
#include "fbuf/fbuf.h"
#include "frame.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;

TEST(Soak, TenMillionFramesToThreeReceiversArriveIntactAndInOrder) {
  std::uint64_t count = 10'000'000;
  if (const char* env = std::getenv("FBUF_SOAK_MESSAGES")) count = std::strtoull(env, nullptr, 10);
  Pool pool(PoolOptions{.name = "soak", .classes = {{4096, 64}, {65536, 16}, {1 << 20, 4}}});
  const std::string service = "soak/" + std::to_string(getpid());
  std::optional<Sender> tx(std::in_place, pool, service);
  std::vector<std::unique_ptr<fbuf::testing::Child>> receivers;
  for (int i = 0; i < 3; ++i) {
    // Each holds up to 4 views at a time, so returns arrive out of order.
    receivers.push_back(std::make_unique<fbuf::testing::Child>(FBUF_FAULT_PEER,
                                                      std::vector<std::string>{"consume", service, "4"}));
    ASSERT_EQ(receivers.back()->line(), "ready");
  }
  ASSERT_TRUE(tx->wait_for_receivers(3, 10s));
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    const std::size_t max = seq % 1024 == 0 ? (1 << 20) : seq % 16 == 0 ? 65536 : 4096;
    const std::size_t len = test::frame_length(seq, max);
    auto b = tx->allocate(len, 30s);
    if (!b) {
      auto ps = pool.stats();
      auto ss = tx->stats();
      FAIL() << b.error().message() << " at " << seq << " size " << len << ": free " << ps.free << " allocated "
             << ps.allocated << " in_flight " << ps.in_flight << " rejected " << ps.rejected_returns
             << "; sender returned " << ss.returned << " rejected " << ss.rejected_returns << " delivered "
             << ss.delivered;
    }
    test::fill_frame(b->data(), len, seq);
    ASSERT_FALSE(tx->send(std::move(*b), len, 30s)) << seq;
  }
  tx.reset();  // end of stream
  const std::string expected = "received " + std::to_string(count) + " last " + std::to_string(count - 1);
  for (auto& r : receivers) {
    EXPECT_EQ(r->line(std::chrono::minutes(10)), expected);
    int status = r->wait(60s).raw;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  auto s = pool.stats();
  EXPECT_EQ(s.free, s.total);
  EXPECT_EQ(s.rejected_returns, 0u);
  std::printf("soak: %llu frames to 3 receivers in %.1f s (%.0f frames/s)\n",
              static_cast<unsigned long long>(count), seconds, static_cast<double>(count) / seconds);
}

}  // namespace
}  // namespace fbuf
