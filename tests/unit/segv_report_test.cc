// The SIGSEGV reporter: a write into a pool is reported and kills; every
// other SIGSEGV behaves exactly as if fbuf's handler were not installed.
// The handler and the disposition found before it are per process, so each
// scenario runs in a forked child: it installs the application's
// disposition, then makes a pool (which installs fbuf's handler after it),
// then faults or raises. The parent asserts on how the child ended, on its
// stderr, and on what the application's handler wrote into a shared
// mapping. The table test at the end needs no child.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <thread>

#include "fbuf/buffers/segv_report.h"
#include "fbuf/fbuf.h"

namespace fbuf {
namespace {

using namespace std::chrono_literals;

// What the child's signal handlers record, in a MAP_SHARED mapping made
// before the fork so the parent reads it after the child is gone.
struct Shared {
  std::atomic<int> calls{0};
  std::atomic<int> signo{0};
  std::atomic<std::uintptr_t> fault_address{0};
  std::atomic<std::uintptr_t> written_address{0};  // where the child wrote
  std::atomic<int> usr1_blocked_inside{-1};
  std::atomic<int> segv_blocked_inside{-1};
  std::atomic<int> usr1_blocked_after{-1};
};
static_assert(std::atomic<std::uintptr_t>::is_always_lock_free);

Shared* g_shared = nullptr;
void* g_page = nullptr;  // the child's PROT_NONE page

struct Outcome {
  int status = 0;
  bool timed_out = false;
  std::string output;  // the child's stderr
};

std::string describe(const Outcome& o) {
  std::string s = o.timed_out ? "timed out and was killed; " : "";
  if (WIFEXITED(o.status)) s += "exited with " + std::to_string(WEXITSTATUS(o.status));
  if (WIFSIGNALED(o.status)) s += std::string("killed by ") + strsignal(WTERMSIG(o.status));
  return s + "; calls " + std::to_string(g_shared->calls.load()) + "; stderr:\n" + o.output;
}

bool killed_by_segv(const Outcome& o) { return !o.timed_out && WIFSIGNALED(o.status) && WTERMSIG(o.status) == SIGSEGV; }
bool exited_cleanly(const Outcome& o) { return !o.timed_out && WIFEXITED(o.status) && WEXITSTATUS(o.status) == 0; }

class SegvReport : public ::testing::Test {
 protected:
  void SetUp() override {
    void* p = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    g_shared = new (p) Shared{};
  }
  void TearDown() override {
    munmap(g_shared, sizeof(Shared));
    g_shared = nullptr;
  }

  // Runs scenario in a forked child with stderr into a pipe, and waits for
  // it to end; a child still running after `timeout` (a handler called
  // forever, say) is killed and reported as timed out.
  static Outcome run_in_child(void (*scenario)(), std::chrono::milliseconds timeout = 10s) {
    Outcome o;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe2: " << strerror(errno);
      return o;
    }
    const pid_t pid = fork();
    if (pid == 0) {
      dup2(fds[1], STDERR_FILENO);
      const rlimit no_core{0, 0};
      setrlimit(RLIMIT_CORE, &no_core);  // the children die by SIGSEGV on purpose
      scenario();
      _exit(0);
    }
    close(fds[1]);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      using std::chrono::milliseconds;
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd pfd{fds[0], POLLIN, 0};
      if (left.count() <= 0 || poll(&pfd, 1, static_cast<int>(left.count())) == 0) {
        o.timed_out = true;
        kill(pid, SIGKILL);
        break;
      }
      char buf[4096];
      const ssize_t n = read(fds[0], buf, sizeof buf);
      if (n <= 0) break;  // EOF: the child has exited or died
      o.output.append(buf, static_cast<std::size_t>(n));
    }
    close(fds[0]);
    waitpid(pid, &o.status, 0);
    return o;
  }
};

void install_app_handler(int flags, void (*action)(int, siginfo_t*, void*), const sigset_t* mask = nullptr) {
  struct sigaction sa {};
  sa.sa_flags = flags | SA_SIGINFO;
  sa.sa_sigaction = action;
  if (mask != nullptr) sa.sa_mask = *mask;
  else sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, nullptr);
}

void install_app_disposition(void (*handler)(int), int flags = 0) {
  struct sigaction sa {};
  sa.sa_flags = flags;
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, nullptr);
}

// A pool, which installs fbuf's handler after whatever the application set.
Pool make_pool(const char* name, Policy policy = Policy::kReadOnly) {
  // Sealed copies off: a send must protect the buffer for a write to fault.
  return Pool(PoolOptions{.name = name, .classes = {{16384, 1}}, .policy = policy,
                          .sealed_copies = SealedCopies::kNever});
}

// Writes to byte 100 of a fresh PROT_NONE page, outside any pool.
void write_outside_any_pool() {
  g_page = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  auto* p = static_cast<volatile char*>(g_page) + 100;
  g_shared->written_address = reinterpret_cast<std::uintptr_t>(p);
  *p = 1;
}

void say(const char* s) { [[maybe_unused]] auto n = write(STDERR_FILENO, s, std::strlen(s)); }

bool blocked_now(int sig) {
  sigset_t cur;
  pthread_sigmask(SIG_BLOCK, nullptr, &cur);
  return sigismember(&cur, sig) == 1;
}

// The application's handlers. Those that return make the page writable
// first, so the write goes through when it is retried.
void count_and_return(int, siginfo_t*, void*) { g_shared->calls.fetch_add(1); }

void record_signo_and_fix(int sig) {
  g_shared->calls.fetch_add(1);
  g_shared->signo = sig;
  mprotect(g_page, 4096, PROT_READ | PROT_WRITE);
}

void record_address_and_fix(int, siginfo_t* info, void*) {
  g_shared->calls.fetch_add(1);
  g_shared->fault_address = reinterpret_cast<std::uintptr_t>(info->si_addr);
  mprotect(g_page, 4096, PROT_READ | PROT_WRITE);
}

void record_mask_and_fix(int, siginfo_t*, void*) {
  g_shared->calls.fetch_add(1);
  g_shared->usr1_blocked_inside = blocked_now(SIGUSR1);
  g_shared->segv_blocked_inside = blocked_now(SIGSEGV);
  mprotect(g_page, 4096, PROT_READ | PROT_WRITE);
}

TEST_F(SegvReport, AResetHandHandlerRunsOnceAndTheNextFaultKills) {
  Outcome o = run_in_child([] {
    install_app_handler(SA_RESETHAND, count_and_return);
    Pool pool = make_pool("segv-resethand");
    // The handler returns without fixing anything: the write faults again,
    // and the disposition is SIG_DFL by then.
    write_outside_any_pool();
  });
  EXPECT_TRUE(killed_by_segv(o)) << describe(o);
  EXPECT_EQ(g_shared->calls.load(), 1) << describe(o);
}

TEST_F(SegvReport, RaiseWithTheDefaultDispositionKills) {
  Outcome o = run_in_child([] {
    install_app_disposition(SIG_DFL);
    Pool pool = make_pool("segv-dfl-raise");
    raise(SIGSEGV);
    say("survived raise\n");
  });
  EXPECT_TRUE(killed_by_segv(o)) << describe(o);
  EXPECT_EQ(o.output.find("survived"), std::string::npos) << describe(o);
}

TEST_F(SegvReport, RaiseWithTheDefaultDispositionKillsEvenFromAnotherThread) {
  Outcome o = run_in_child([] {
    install_app_disposition(SIG_DFL);
    Pool pool = make_pool("segv-dfl-kill");
    std::thread([] { kill(getpid(), SIGSEGV); }).join();
    sleep(5);  // the signal may be delivered to this thread or the other
    say("survived kill\n");
  });
  EXPECT_TRUE(killed_by_segv(o)) << describe(o);
}

TEST_F(SegvReport, RaiseWithSigIgnIsIgnoredEveryTime) {
  Outcome o = run_in_child([] {
    install_app_disposition(SIG_IGN);
    Pool pool = make_pool("segv-ign-raise");
    raise(SIGSEGV);
    raise(SIGSEGV);
    say("survived both\n");
  });
  EXPECT_TRUE(exited_cleanly(o)) << describe(o);
  EXPECT_NE(o.output.find("survived both"), std::string::npos) << describe(o);
}

TEST_F(SegvReport, ARealFaultWithSigIgnStillKillsAsTheKernelWould) {
  Outcome o = run_in_child([] {
    install_app_disposition(SIG_IGN);
    Pool pool = make_pool("segv-ign-fault");
    write_outside_any_pool();
    say("survived the fault\n");
  });
  EXPECT_TRUE(killed_by_segv(o)) << describe(o);
}

TEST_F(SegvReport, APlainHandlerReceivesTheSignalNumber) {
  Outcome o = run_in_child([] {
    install_app_disposition(record_signo_and_fix);
    Pool pool = make_pool("segv-plain");
    write_outside_any_pool();
  });
  EXPECT_TRUE(exited_cleanly(o)) << describe(o);
  EXPECT_EQ(g_shared->calls.load(), 1);
  EXPECT_EQ(g_shared->signo.load(), SIGSEGV);
}

TEST_F(SegvReport, ASigInfoHandlerReceivesTheFaultAddress) {
  Outcome o = run_in_child([] {
    install_app_handler(0, record_address_and_fix);
    Pool pool = make_pool("segv-siginfo");
    write_outside_any_pool();
  });
  EXPECT_TRUE(exited_cleanly(o)) << describe(o);
  EXPECT_EQ(g_shared->calls.load(), 1);
  EXPECT_NE(g_shared->written_address.load(), 0u);
  EXPECT_EQ(g_shared->fault_address.load(), g_shared->written_address.load());
}

TEST_F(SegvReport, ThePreviousHandlersMaskIsInForceWhileItRunsAndRestoredAfter) {
  Outcome o = run_in_child([] {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    install_app_handler(0, record_mask_and_fix, &usr1);
    Pool pool = make_pool("segv-mask");
    write_outside_any_pool();
    g_shared->usr1_blocked_after = blocked_now(SIGUSR1);
  });
  EXPECT_TRUE(exited_cleanly(o)) << describe(o);
  EXPECT_EQ(g_shared->calls.load(), 1);
  EXPECT_EQ(g_shared->usr1_blocked_inside.load(), 1);
  EXPECT_EQ(g_shared->segv_blocked_inside.load(), 1);  // no SA_NODEFER: the kernel blocks the signal itself
  EXPECT_EQ(g_shared->usr1_blocked_after.load(), 0);
}

TEST_F(SegvReport, NoDeferLeavesSigsegvUnblockedWhileThePreviousHandlerRuns) {
  Outcome o = run_in_child([] {
    install_app_handler(SA_NODEFER, record_mask_and_fix);
    Pool pool = make_pool("segv-nodefer");
    write_outside_any_pool();
  });
  EXPECT_TRUE(exited_cleanly(o)) << describe(o);
  EXPECT_EQ(g_shared->calls.load(), 1);
  EXPECT_EQ(g_shared->segv_blocked_inside.load(), 0);
  EXPECT_EQ(g_shared->usr1_blocked_inside.load(), 0);
}

TEST_F(SegvReport, AWriteIntoASentReadOnlyBufferIsReportedAndKillsWithoutTheApplicationsHandler) {
  Outcome o = run_in_child([] {
    install_app_handler(0, count_and_return);
    Pool pool = make_pool("segv-ro-write");
    Sender tx(pool);
    Receiver rx = tx.connect_local();
    auto b = tx.try_allocate(10);
    if (!b) _exit(11);
    std::byte* raw = b->data();
    if (tx.try_send(std::move(*b), 10)) _exit(12);
    auto v = rx.try_receive();
    if (!v) _exit(13);
    *reinterpret_cast<volatile char*>(raw + 100) = 'B';
    say("survived the write\n");
  });
  EXPECT_TRUE(killed_by_segv(o)) << describe(o);
  EXPECT_EQ(g_shared->calls.load(), 0) << describe(o);
  EXPECT_NE(o.output.find("pool 'segv-ro-write' buffer 0 (16384-byte class, byte 100) policy read_only"),
            std::string::npos)
      << describe(o);
  EXPECT_NE(o.output.find("the buffer was sent"), std::string::npos) << describe(o);
}

// raise() and kill() put the sender's pid and uid where a fault's si_addr
// would be; the handler must not take them for an address.
TEST_F(SegvReport, AnAsynchronousSigsegvIsNeverTakenForAPoolWrite) {
  Outcome o = run_in_child([] {
    install_app_disposition(SIG_IGN);
    detail::install_segv_report();
    // A registration covering the address raise()'s siginfo would spell.
    const std::uintptr_t spelled = (std::uintptr_t{getuid()} << 32) | static_cast<std::uint32_t>(getpid());
    const SizeClass cls[] = {{4096, 4}};
    detail::register_mapping(reinterpret_cast<const void*>(spelled & ~std::uintptr_t{4095}), 16384,
                             detail::MappingKind::kSender, Policy::kReadOnly, "segv-spelled", cls);
    raise(SIGSEGV);
    say("survived raise\n");
  });
  EXPECT_TRUE(exited_cleanly(o)) << describe(o);
  EXPECT_EQ(o.output.find("fbuf:"), std::string::npos) << describe(o);
}

// --- The table the handler reads -----------------------------------------

// One slot flips between ranges A and B while another thread looks up an
// address in the gap between them: it lies in [A.begin, B.end) and in no
// registration, so only a read that mixes A and B can match it.
TEST(SegvReportTable, ALookupNeverMixesTwoRegistrationsOfTheSameSlot) {
  constexpr std::size_t kRange = 65536;
  // Reserved so that nothing else in this process is registered there.
  void* area = mmap(nullptr, 3 * kRange, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(area, MAP_FAILED);
  auto* a = static_cast<const char*>(area);
  const char* b = a + 2 * kRange;
  const char* gap = a + kRange + kRange / 2;
  const SizeClass cls[] = {{4096, 16}};

  std::atomic<bool> stop{false};
  std::thread writer([&] {
    // Each registration lives for a varying short while, so that lookups
    // see A whole as well as every moment of the changes.
    unsigned hold = 0;
    volatile unsigned sink = 0;
    auto linger = [&] {
      hold = hold * 1103515245u + 12345u;
      for (unsigned k = 0; k < (hold >> 24) % 64; ++k) sink = sink + k;
    };
    while (!stop.load(std::memory_order_relaxed)) {
      const int ta =
          detail::register_mapping(a, kRange, detail::MappingKind::kSender, Policy::kReadOnly, "torn-a", cls);
      linger();
      detail::unregister_mapping(ta);
      const int tb =
          detail::register_mapping(b, kRange, detail::MappingKind::kAlias, Policy::kVolatile, "torn-b", cls);
      linger();
      detail::unregister_mapping(tb);
    }
  });
  long lookups = 0, mixed = 0, hits = 0, inconsistent = 0;
  const auto until = std::chrono::steady_clock::now() + 1s;
  while (std::chrono::steady_clock::now() < until) {
    for (int i = 0; i < 1000; ++i, ++lookups) {
      if (detail::find_mapping(gap)) ++mixed;
      // A hit inside A is all of A: its bounds, its name, its policy.
      if (auto h = detail::find_mapping(a + 4096 * 3 + 7)) {
        ++hits;
        if (h->begin != reinterpret_cast<std::uintptr_t>(a) || h->end != h->begin + kRange ||
            std::strcmp(h->pool_name, "torn-a") != 0 || h->policy != Policy::kReadOnly || h->buffer_index != 3 ||
            h->byte_in_buffer != 7)
          ++inconsistent;
      }
    }
  }
  stop = true;
  writer.join();
  munmap(area, 3 * kRange);
  EXPECT_EQ(mixed, 0) << "of " << lookups << " lookups";
  EXPECT_EQ(inconsistent, 0) << "of " << hits << " hits";
}

TEST(SegvReportTable, ALookupFindsARegistrationUntilItIsUnregistered) {
  void* area = mmap(nullptr, 65536, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(area, MAP_FAILED);
  auto* p = static_cast<const char*>(area);
  const SizeClass cls[] = {{4096, 2}, {8192, 7}};
  {
    detail::SegvRegistration reg(
        detail::register_mapping(p, 65536, detail::MappingKind::kReceived, Policy::kCopyOnWrite, "found", cls));
    auto h = detail::find_mapping(p + 2 * 4096 + 8192 + 5);  // second buffer of the 8 KiB class
    ASSERT_TRUE(h);
    EXPECT_EQ(h->begin, reinterpret_cast<std::uintptr_t>(p));
    EXPECT_EQ(h->end, h->begin + 65536);
    EXPECT_EQ(h->kind, detail::MappingKind::kReceived);
    EXPECT_EQ(h->policy, Policy::kCopyOnWrite);
    EXPECT_STREQ(h->pool_name, "found");
    EXPECT_EQ(h->buffer_index, 3u);
    EXPECT_EQ(h->class_size, 8192u);
    EXPECT_EQ(h->byte_in_buffer, 5u);
    EXPECT_FALSE(detail::find_mapping(p - 1));
    EXPECT_FALSE(detail::find_mapping(p + 65536));
  }
  EXPECT_FALSE(detail::find_mapping(p));
  munmap(area, 65536);
}

}  // namespace
}  // namespace fbuf
