#include "fbuf/buffers/segv_report.h"

#include <signal.h>
#include <sys/ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace fbuf::detail {
namespace {

constexpr int kMaxMappings = 256;
constexpr int kMaxClasses = 64;

// One registered mapping. The handler reads entries whose state is kReady;
// everything in an entry is plain data written before the state is
// published, so the handler needs no lock (it may run on any thread, at any
// time, including inside the registering call).
struct Entry {
  enum : int { kFree = 0, kBusy = 1, kReady = 2 };
  std::atomic<int> state{kFree};
  std::uintptr_t begin = 0;
  std::uintptr_t end = 0;
  MappingKind kind = MappingKind::kSender;
  Policy policy = Policy::kVolatile;
  char name[64] = {};
  int nclasses = 0;
  std::uint64_t class_size[kMaxClasses] = {};
  std::uint64_t class_count[kMaxClasses] = {};
};
static_assert(std::atomic<int>::is_always_lock_free);

Entry g_entries[kMaxMappings];
struct sigaction g_previous;
std::once_flag g_installed;

// Async-signal-safe output: write(2) and hand-made number formatting.
struct Line {
  char buf[512];
  std::size_t n = 0;
  void put(const char* s) {
    while (*s != '\0' && n < sizeof buf) buf[n++] = *s++;
  }
  void num(std::uint64_t v, int base = 10) {
    char tmp[24];
    int k = 0;
    do {
      int d = static_cast<int>(v % static_cast<unsigned>(base));
      tmp[k++] = static_cast<char>(d < 10 ? '0' + d : 'a' + d - 10);
      v /= static_cast<unsigned>(base);
    } while (v != 0 && k < 24);
    if (base == 16) put("0x");
    while (k > 0 && n < sizeof buf) buf[n++] = tmp[--k];
  }
  void flush() {
    std::size_t off = 0;
    while (off < n) {
      ssize_t w = ::write(STDERR_FILENO, buf + off, n - off);
      if (w <= 0) break;
      off += static_cast<std::size_t>(w);
    }
    n = 0;
  }
};

const char* policy_name(Policy p) {
  switch (p) {
    case Policy::kVolatile: return "volatile";
    case Policy::kReadOnly: return "read_only";
    case Policy::kCopyOnWrite: return "copy_on_write";
  }
  return "?";
}

void chain(int sig, siginfo_t* info, void* context) {
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if (g_previous.sa_handler == SIG_DFL || g_previous.sa_handler == SIG_IGN) {
    // Returning re-runs the faulting instruction, which now gets the
    // default action: the process dies by SIGSEGV, core and all.
    signal(sig, SIG_DFL);
    return;
  }
  g_previous.sa_handler(sig);
}

void on_segv(int sig, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
  for (auto& e : g_entries) {
    if (e.state.load(std::memory_order_acquire) != Entry::kReady) continue;
    if (addr < e.begin || addr >= e.end) continue;
    // Which buffer: walk the classes in index order.
    std::uint64_t off = addr - e.begin, first = 0, index = 0, within = 0, cls = 0;
    for (int k = 0; k < e.nclasses; ++k) {
      std::uint64_t span = e.class_size[k] * e.class_count[k];
      if (off < span) {
        index = first + off / e.class_size[k];
        within = off % e.class_size[k];
        cls = e.class_size[k];
        break;
      }
      off -= span;
      first += e.class_count[k];
    }
    Line l;
    l.put("fbuf: write to a buffer this process may not write: pool '");
    l.put(e.name);
    l.put("' buffer ");
    l.num(index);
    l.put(" (");
    l.num(cls);
    l.put("-byte class, byte ");
    l.num(within);
    l.put(") policy ");
    l.put(policy_name(e.policy));
    l.put(", fault address ");
    l.num(addr, 16);
#if defined(__x86_64__)
    l.put(", instruction ");
    l.num(static_cast<std::uint64_t>(static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_RIP]), 16);
#endif
    l.put("\n");
    l.flush();
    switch (e.kind) {
      case MappingKind::kSender:
        l.put("fbuf: the buffer was sent; the sender's write access ends at send (uf_write) and "
              "returns when the buffer is allocated again\n");
        break;
      case MappingKind::kReceived:
      case MappingKind::kAlias:
        l.put("fbuf: this is a received buffer (fbuf::View): receivers may only read it\n");
        break;
    }
    l.flush();
    signal(sig, SIG_DFL);
    return;
  }
  chain(sig, info, context);
}

}  // namespace

void install_segv_report() {
  std::call_once(g_installed, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_previous);
  });
}

int register_mapping(const void* base, std::size_t size, MappingKind kind, Policy policy,
                     const char* pool_name, std::span<const SizeClass> classes) noexcept {
  for (int i = 0; i < kMaxMappings; ++i) {
    Entry& e = g_entries[i];
    int expected = Entry::kFree;
    if (!e.state.compare_exchange_strong(expected, Entry::kBusy, std::memory_order_acquire)) continue;
    e.begin = reinterpret_cast<std::uintptr_t>(base);
    e.end = e.begin + size;
    e.kind = kind;
    e.policy = policy;
    std::strncpy(e.name, pool_name, sizeof e.name - 1);
    e.name[sizeof e.name - 1] = '\0';
    e.nclasses = static_cast<int>(std::min<std::size_t>(classes.size(), kMaxClasses));
    for (int k = 0; k < e.nclasses; ++k) {
      e.class_size[k] = classes[static_cast<std::size_t>(k)].buffer_size;
      e.class_count[k] = classes[static_cast<std::size_t>(k)].count;
    }
    // release: publishes the fields above; pairs with the acquire in on_segv().
    e.state.store(Entry::kReady, std::memory_order_release);
    return i;
  }
  return -1;
}

void unregister_mapping(int token) noexcept {
  if (token < 0 || token >= kMaxMappings) return;
  // release: the entry is reusable once a new registration claims it.
  g_entries[token].state.store(Entry::kFree, std::memory_order_release);
}

}  // namespace fbuf::detail
