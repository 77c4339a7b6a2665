// The UCX bridge between two network namespaces joined by a veth pair, the
// test's "host A" (producer, exporter) and "host B" (importer, two
// consumers): every mixed-size frame arrives intact and in order, also
// across a link cut (`ip link set ... down`, then up). Needs root and
// iproute2; skipped otherwise. The namespaces are removed in TearDown, also
// after a failure (their veth ends go with them).
//
// FBUF_BRIDGE_COUNT (default 20000) sets the frames; FBUF_BRIDGE_ROUNDS
// (default 1) the link cuts.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "child_process.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;
using fbuf::testing::Child;
using fbuf::testing::field;
using fbuf::testing::unique_service;

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtoull(v, nullptr, 10) : fallback;
}

const char* ip_program() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return nullptr;
}

bool run(const std::string& command) { return std::system(command.c_str()) == 0; }

class BridgeVeth : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || ip_program() == nullptr) GTEST_SKIP() << "needs root and iproute2 (ip netns)";
    const std::string id = std::to_string(::getpid() % 100000);
    ns_a_ = "fbufA" + id;
    ns_b_ = "fbufB" + id;
    veth_a_ = "fba" + id;
    veth_b_ = "fbb" + id;
    const std::string ip = ip_program();
    ASSERT_TRUE(run(ip + " netns add " + ns_a_) && run(ip + " netns add " + ns_b_));
    created_ = true;
    // `ip -n` enters the namespace with a mount namespace of its own (it
    // makes / a slave mount): where that is refused (a chroot whose / is
    // no mount point, a container without CAP_SYS_ADMIN) nothing here can
    // run, which is the environment, not the bridge.
    if (!run(ip + " -n " + ns_a_ + " link show lo > /dev/null 2>&1"))
      GTEST_SKIP() << "`ip -n` cannot enter a network namespace here (try: " << ip << " -n " << ns_a_ << " link)";
    ASSERT_TRUE(run(ip + " link add " + veth_a_ + " netns " + ns_a_ + " type veth peer name " + veth_b_ +
                    " netns " + ns_b_));
    ASSERT_TRUE(run(ip + " -n " + ns_a_ + " addr add 10.77.0.1/24 dev " + veth_a_));
    ASSERT_TRUE(run(ip + " -n " + ns_b_ + " addr add 10.77.0.2/24 dev " + veth_b_));
    for (const auto& [ns, dev] : {std::pair{ns_a_, veth_a_}, std::pair{ns_b_, veth_b_}}) {
      ASSERT_TRUE(run(ip + " -n " + ns + " link set lo up"));
      ASSERT_TRUE(run(ip + " -n " + ns + " link set " + dev + " up"));
    }
    // Both ends operationally up before the bridges start (the importer
    // copes with a link that comes up later, but slower: fresh UCX context).
    for (int i = 0; i < 100; ++i) {
      if (run(ip + " -n " + ns_b_ + " -o link show dev " + veth_b_ + " | grep -q 'state UP'") &&
          run(ip + " -n " + ns_a_ + " -o link show dev " + veth_a_ + " | grep -q 'state UP'")) {
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
  }
  void TearDown() override {
    if (!created_) return;
    const std::string ip = ip_program();
    run(ip + " netns del " + ns_a_ + " 2>/dev/null");
    run(ip + " netns del " + ns_b_ + " 2>/dev/null");
  }

  // `program args...` in namespace `ns`: ip netns exec replaces itself with
  // the program, so the Child's pid is the program's.
  Child in(const std::string& ns, const std::string& program, std::vector<std::string> args) {
    std::vector<std::string> all = {"netns", "exec", ns, program};
    all.insert(all.end(), args.begin(), args.end());
    return Child(ip_program(), all);
  }

  void link(bool up) {
    ASSERT_TRUE(run(std::string(ip_program()) + " -n " + ns_a_ + " link set " + veth_a_ + (up ? " up" : " down")));
  }

  std::string ns_a_, ns_b_, veth_a_, veth_b_;
  bool created_ = false;
};

TEST_F(BridgeVeth, MixedSizesCrossTheLinkIntactAndInOrderThroughLinkCuts) {
  const std::uint64_t n = env_number("FBUF_BRIDGE_COUNT", 20000);
  const std::uint64_t cuts = env_number("FBUF_BRIDGE_ROUNDS", 1);
  const std::string src = unique_service("veth-src");
  const std::string dst = unique_service("veth-dst");
  Child ex = in(ns_a_, FBUF_BRIDGE_PROGRAM, {"export", src, "--listen", "10.77.0.1:18515"});
  ASSERT_TRUE(ex.wait_for_output("exporting", 20s)) << ex.output();
  Child im = in(ns_b_, FBUF_BRIDGE_PROGRAM, {"import", src, "--connect", "10.77.0.1:18515", "--as", dst,
                                            "--buffers", "32", "--buffer-size", "1048576",
                                            "--wait-consumers", "2"});
  ASSERT_TRUE(im.wait_for_output("importing", 20s)) << im.output();
  Child c1 = in(ns_b_, FBUF_IT_PEER, {"consume", "--service", dst, "--count", std::to_string(n), "--end", "1"});
  Child c2 = in(ns_b_, FBUF_IT_PEER, {"consume", "--service", dst, "--count", std::to_string(n), "--end", "1"});
  ASSERT_TRUE(c1.wait_for_output("connected", 20s)) << c1.output();
  ASSERT_TRUE(c2.wait_for_output("connected", 20s)) << c2.output();
  Child pr = in(ns_a_, FBUF_IT_PEER, {"produce", "--service", src, "--count", std::to_string(n),
                                      "--receivers", "1", "--classes", "mixed", "--then", "check"});
  std::mt19937 rng(static_cast<unsigned>(::getpid()));
  for (std::uint64_t r = 0; r < cuts; ++r) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 300));
    link(false);
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 700));
    link(true);
  }
  auto sp = pr.wait(300s);
  auto s1 = c1.wait(300s);
  auto s2 = c2.wait(300s);
  auto si = im.wait(60s);
  ex.kill(SIGINT);
  auto se = ex.wait(30s);
  ASSERT_TRUE(sp.exited_with(0)) << pr.output() << ex.output() << im.output() << c1.output();
  ASSERT_TRUE(s1.exited_with(0)) << c1.output() << im.output();
  ASSERT_TRUE(s2.exited_with(0)) << c2.output();
  ASSERT_TRUE(si.exited_with(0)) << im.output();
  ASSERT_TRUE(se.exited_with(0)) << ex.output();
  EXPECT_EQ(field(pr.output(), "checksum"), field(c1.output(), "checksum"));
  EXPECT_EQ(field(pr.output(), "checksum"), field(c2.output(), "checksum"));
  const std::string io = im.output();
  EXPECT_EQ(field(io, "received"), std::to_string(n)) << io;
  EXPECT_EQ(field(io, "pool_free"), field(io, "pool_total")) << io;
  EXPECT_EQ(field(ex.output(), "in_flight"), "0") << ex.output();
  std::printf("importer: %s", io.c_str());
  std::printf("consumer: %s", c1.output().c_str());
}

}  // namespace
}  // namespace fbuf
