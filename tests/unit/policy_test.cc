// Immutability after send: what a sender's write after send does under each
// policy, in thread handoff and across processes, and that write access
// comes back once the buffer returns. The cross-process receiver is this
// binary re-executed with --receiver (see main() below).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "child_process.h"
#include "fbuf/fbuf.h"


namespace fbuf {
namespace {

using namespace std::chrono_literals;

std::string g_self;  // this binary, for re-exec

Pool make_pool(Policy policy, const char* name, std::uint32_t count = 1) {
  // Sealed copies off: these tests are about the protection itself
  // (sealed_copy_test.cc has the copies).
  return Pool(PoolOptions{.name = name, .classes = {{16384, count}}, .policy = policy,
                          .sealed_copies = SealedCopies::kNever});
}

// A receiver process with a pipe to its stdin and one from its stdout.
class ReceiverProcess {
 public:
  // The receiver role of this binary, with a pipe on its stdin for the
  // test's commands.
  explicit ReceiverProcess(const std::string& service)
      : stdin_(make_pipe()), child_(g_self, {"--receiver", service}, {{stdin_.first, 0}}) {
    close(stdin_.first);
  }
  ~ReceiverProcess() {
    if (stdin_.second >= 0) close(stdin_.second);
  }
  std::string line() { return child_.line(std::chrono::seconds(20)); }
  void say(const char* what) {
    std::string cmd = std::string(what) + "\n";
    EXPECT_EQ(write(stdin_.second, cmd.data(), cmd.size()), static_cast<ssize_t>(cmd.size()));
  }
  int wait() { return child_.wait(std::chrono::seconds(30)).raw; }

 private:
  static std::pair<int, int> make_pipe() {
    int p[2] = {-1, -1};
    EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
    return {p[0], p[1]};
  }

  std::pair<int, int> stdin_;  // read end (given to the child), write end
  testing::Child child_;
};

// The receiver role: reports the first byte of what it holds at each step.
int run_receiver(const char* service) {
  try {
    Receiver rx = Receiver::connect(service);
    auto v = rx.receive(10s);
    if (!v) return 2;
    printf("got %c\n", static_cast<char>(v->data()[0]));
    fflush(stdout);
    char cmd[64];
    if (fgets(cmd, sizeof cmd, stdin) == nullptr) return 3;  // "check"
    printf("now %c\n", static_cast<char>(v->data()[0]));
    v->reset();
    printf("released\n");
    fflush(stdout);
    auto w = rx.receive(10s);
    if (!w) return 4;
    printf("second %c\n", static_cast<char>(w->data()[0]));
    fflush(stdout);
    return 0;
  } catch (const std::exception& e) {
    fprintf(stderr, "receiver: %s\n", e.what());
    return 1;
  }
}

std::string service_name(const char* what) { return std::string("policy/") + what + "/" + std::to_string(getpid()); }

// Sends one 'A' buffer, then writes 'B' through the old pointer when
// `write_after_send`; returns what the receiver saw before and after.
struct Observed {
  std::string got, now, second;
  char sender_sees = 0;
};

Observed cross_process_round(Policy policy, const char* name, bool write_after_send) {
  Observed o;
  Pool pool = make_pool(policy, name);
  const std::string service = service_name(name);
  ReceiverProcess child(service);
  Sender tx(pool, service);
  EXPECT_TRUE(tx.wait_for_receivers(1, 10s));
  auto b = tx.allocate(100, 1s);
  EXPECT_TRUE(b);
  std::byte* raw = b->data();
  std::memset(raw, 'A', 100);
  EXPECT_FALSE(tx.send(std::move(*b), 100, 1s));
  o.got = child.line();
  if (write_after_send) std::memset(raw, 'B', 100);  // the bug fbufs exist to catch
  o.sender_sees = static_cast<char>(raw[0]);
  child.say("check");
  o.now = child.line();
  EXPECT_EQ(child.line(), "released");
  // The only buffer comes back; writes work again and reach the receiver.
  auto again = tx.allocate(100, 5s);
  EXPECT_TRUE(again) << again.error().message();
  if (again) {
    EXPECT_EQ(again->data(), raw);
    std::memset(again->data(), 'C', 100);
    EXPECT_FALSE(tx.send(std::move(*again), 100, 1s));
  }
  o.second = child.line();
  int status = child.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  return o;
}

TEST(CrossProcessPolicy, VolatileLetsALateWriteReachTheReceiver) {
  Observed o = cross_process_round(Policy::kVolatile, "xp-volatile", true);
  EXPECT_EQ(o.got, "got A");
  EXPECT_EQ(o.now, "now B");  // the documented hazard
  EXPECT_EQ(o.second, "second C");
}

TEST(CrossProcessPolicy, CopyOnWriteKeepsTheReceiversBytesAndGivesTheSenderItsOwn) {
  Observed o = cross_process_round(Policy::kCopyOnWrite, "xp-cow", true);
  EXPECT_EQ(o.got, "got A");
  EXPECT_EQ(o.now, "now A");
  EXPECT_EQ(o.sender_sees, 'B');
  EXPECT_EQ(o.second, "second C");
}

TEST(CrossProcessPolicy, ReadOnlyRestoresWriteAccessOnReallocation) {
  Observed o = cross_process_round(Policy::kReadOnly, "xp-ro", false);
  EXPECT_EQ(o.got, "got A");
  EXPECT_EQ(o.now, "now A");
  EXPECT_EQ(o.second, "second C");
}

TEST(CrossProcessPolicyDeathTest, ReadOnlyKillsASenderThatWritesAfterSending) {
  EXPECT_EXIT(
      {
        Pool pool = make_pool(Policy::kReadOnly, "xp-ro-death");
        const std::string service = service_name("xp-ro-death");
        ReceiverProcess child(service);
        Sender tx(pool, service);
        if (!tx.wait_for_receivers(1, 10s)) _exit(10);
        auto b = tx.allocate(100, 1s);
        if (!b) _exit(11);
        std::byte* raw = b->data();
        std::memset(raw, 'A', 100);
        if (tx.send(std::move(*b), 100, 1s)) _exit(12);
        if (child.line() != "got A") _exit(13);
        *reinterpret_cast<volatile char*>(raw + 5) = 'B';
        _exit(0);
      },
      ::testing::KilledBySignal(SIGSEGV), "pool 'xp-ro-death' buffer 0 .*policy read_only");
}

// --- Thread handoff: the receiver reads through a read-only alias. ---

TEST(ThreadPolicy, VolatileLetsALateWriteReachTheReceiver) {
  Pool pool = make_pool(Policy::kVolatile, "th-volatile");
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  auto b = tx.try_allocate(10);
  ASSERT_TRUE(b);
  std::byte* raw = b->data();
  std::memset(raw, 'A', 10);
  ASSERT_FALSE(tx.try_send(std::move(*b), 10));
  std::thread t([&] {
    auto v = rx.receive(1s);
    ASSERT_TRUE(v);
    EXPECT_EQ(v->data()[0], std::byte{'A'});
    std::memset(raw, 'B', 10);
    EXPECT_EQ(v->data()[0], std::byte{'B'});
  });
  t.join();
}

TEST(ThreadPolicy, CopyOnWriteKeepsTheReceiversBytes) {
  Pool pool = make_pool(Policy::kCopyOnWrite, "th-cow");
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  auto b = tx.try_allocate(10);
  ASSERT_TRUE(b);
  std::byte* raw = b->data();
  std::memset(raw, 'A', 10);
  ASSERT_FALSE(tx.try_send(std::move(*b), 10));
  auto v = rx.try_receive();
  ASSERT_TRUE(v);
  EXPECT_NE(v->data(), raw);  // the read-only alias, not the sender's mapping
  std::memset(raw, 'B', 10);
  EXPECT_EQ(raw[0], std::byte{'B'});
  EXPECT_EQ(v->data()[0], std::byte{'A'});
  EXPECT_EQ(v->data()[9], std::byte{'A'});
  v->reset();
  // Back from the receiver: the shared mapping is restored and the
  // private copy dropped.
  auto again = tx.try_allocate(10);
  ASSERT_TRUE(again);
  ASSERT_EQ(again->data(), raw);
  EXPECT_EQ(raw[0], std::byte{'A'});
  std::memset(raw, 'C', 10);
  ASSERT_FALSE(tx.try_send(std::move(*again), 10));
  auto w = rx.try_receive();
  ASSERT_TRUE(w);
  EXPECT_EQ(w->data()[0], std::byte{'C'});
}

TEST(ThreadPolicy, ReadOnlyRestoresWriteAccessOnReallocation) {
  for (bool eager : {false, true}) {
    Pool pool(PoolOptions{.name = "th-ro", .classes = {{4096, 1}}, .policy = Policy::kReadOnly,
                          .eager_restore = eager, .sealed_copies = SealedCopies::kNever});
    Sender tx(pool);
    Receiver rx = tx.connect_local();
    for (char c : {'A', 'C', 'D'}) {
      auto b = tx.allocate(10, 1s);
      ASSERT_TRUE(b);
      std::memset(b->data(), c, 10);  // would fault if still protected
      ASSERT_FALSE(tx.try_send(std::move(*b), 10));
      auto v = rx.try_receive();
      ASSERT_TRUE(v);
      EXPECT_EQ(v->data()[0], std::byte(c));
    }
  }
}

TEST(ThreadPolicyDeathTest, ReadOnlyKillsASenderThatWritesAfterSending) {
  EXPECT_EXIT(
      {
        Pool pool = make_pool(Policy::kReadOnly, "th-ro-death", 3);
        Sender tx(pool);
        Receiver rx = tx.connect_local();
        Buffer keep[2];
        for (auto& k : keep) k = std::move(*tx.try_allocate(10));
        auto b = tx.try_allocate(10);
        std::byte* raw = b->data();
        if (tx.try_send(std::move(*b), 10)) _exit(12);
        auto v = rx.try_receive();
        if (!v) _exit(13);
        *reinterpret_cast<volatile char*>(raw + 100) = 'B';
        _exit(0);
      },
      ::testing::KilledBySignal(SIGSEGV), "pool 'th-ro-death' buffer 2 .*byte 100.*policy read_only");
}

TEST(ThreadPolicyDeathTest, AReceiverThatWritesIntoAViewDies) {
  EXPECT_EXIT(
      {
        Pool pool = make_pool(Policy::kVolatile, "th-view-write");
        Sender tx(pool);
        Receiver rx = tx.connect_local();
        auto b = tx.try_allocate(10);
        if (tx.try_send(std::move(*b), 10)) _exit(12);
        auto v = rx.try_receive();
        *const_cast<volatile std::byte*>(v->data()) = std::byte{1};
        _exit(0);
      },
      ::testing::KilledBySignal(SIGSEGV), "pool 'th-view-write' buffer 0.*receivers may only read");
}

TEST(ThreadPolicy, SendManyProtectsAWholeBatch) {
  Pool pool = make_pool(Policy::kCopyOnWrite, "batch", 8);
  Sender tx(pool);
  Receiver rx = tx.connect_local();
  Buffer bufs[8];
  std::size_t lengths[8];
  std::byte* raw[8];
  for (int i = 0; i < 8; ++i) {
    auto b = tx.try_allocate(10);
    ASSERT_TRUE(b);
    raw[i] = b->data();
    std::memset(raw[i], 'a' + i, 10);
    bufs[i] = std::move(*b);
    lengths[i] = 10;
  }
  ASSERT_FALSE(tx.send_many(bufs, lengths, 1s));
  for (int i = 0; i < 8; ++i) {
    EXPECT_FALSE(bufs[i]);
    std::memset(raw[i], 'Z', 10);
  }
  for (int i = 0; i < 8; ++i) {
    auto v = rx.try_receive();
    ASSERT_TRUE(v);
    EXPECT_EQ(v->data()[0], std::byte('a' + i));
  }
}

TEST(ThreadPolicy, SendManyIsAllOrNothing) {
  Pool pool = make_pool(Policy::kReadOnly, "batch-fail", 4);
  Sender tx(pool, SenderOptions{.ring_capacity = 2});
  Receiver rx = tx.connect_local();
  Buffer bufs[3];
  std::size_t lengths[3] = {1, 1, 1};
  for (auto& b : bufs) b = std::move(*tx.try_allocate(10));
  // Three do not fit a ring of two: nothing is sent or protected.
  EXPECT_EQ(tx.send_many(bufs, lengths, 0ns), make_error_code(Errc::kInvalidArgument));
  for (auto& b : bufs) {
    ASSERT_TRUE(b);
    b.data()[0] = std::byte{1};  // still writable
  }
}

TEST(FaultHandlerDeathTest, FaultsOutsideAnyPoolReachTheApplicationsHandler) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // a fresh process: fbuf installs after the app
  EXPECT_EXIT(
      {
        struct sigaction sa {};
        sa.sa_flags = SA_SIGINFO;
        sa.sa_sigaction = [](int, siginfo_t*, void*) {
          const char msg[] = "application handler ran\n";
          [[maybe_unused]] auto n = write(2, msg, sizeof msg - 1);
          _exit(42);
        };
        sigaction(SIGSEGV, &sa, nullptr);
        Pool pool = make_pool(Policy::kReadOnly, "chain");  // installs fbuf's handler
        void* p = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        *static_cast<volatile int*>(p) = 1;
        _exit(0);
      },
      ::testing::ExitedWithCode(42), "application handler ran");
}

}  // namespace
}  // namespace fbuf

int main(int argc, char** argv) {
  fbuf::g_self = "/proc/self/exe";
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) fbuf::g_self.assign(exe, static_cast<std::size_t>(n));
  if (argc == 3 && std::strcmp(argv[1], "--receiver") == 0) return fbuf::run_receiver(argv[2]);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
