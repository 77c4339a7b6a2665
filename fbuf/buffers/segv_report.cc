// Invariants
// - Entry::claim: a registrant takes a free slot with a CAS (kFree to kBusy)
//   in register_mapping() and hands it back with a store of kFree in
//   unregister_mapping(). In between, that registrant (the slot's owner, any
//   thread) is the only writer of every other field of the slot.
// - Entry::seq and the fields after it (a seqlock): the owner makes seq odd,
//   writes the fields, makes seq even again (begin_write()/end_write()).
//   Readers (find_mapping(), hence the signal handler, on any thread) never
//   write; they copy the fields into locals and keep the copy only if seq
//   was even and the same before and after. The fields are atomics accessed
//   relaxed, so a read that races a write is a stale or mixed copy that the
//   seq check throws away, never undefined behaviour.
// - g_previous: written once, by the sigaction() call that installs the
//   handler (so before the handler can run); read-only afterwards.
// - g_previous_spent: false until a previous handler installed with
//   SA_RESETHAND has been called once; then true for good (written by the
//   handler, any thread).
#include "fbuf/buffers/segv_report.h"

#include <signal.h>
#include <sys/ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>

namespace fbuf::detail {
namespace {

constexpr int kMaxMappings = 256;
constexpr int kMaxClasses = 64;
// A reader gives up on a slot whose owner stays mid-write for this many
// attempts (a write is a few hundred stores, so only an owner descheduled
// mid-write gets near it) and treats the slot as not matching: better an
// unreported pool write than a handler that never returns.
constexpr int kMaxReadAttempts = 1 << 22;

// One registered mapping; see Invariants for who writes what.
struct Entry {
  enum : int { kFree = 0, kBusy = 1 };
  std::atomic<int> claim{kFree};
  std::atomic<std::uint32_t> seq{0};  // odd while the owner writes the fields below
  std::atomic<bool> live{false};
  std::atomic<std::uintptr_t> begin{0};
  std::atomic<std::uintptr_t> end{0};
  std::atomic<MappingKind> kind{MappingKind::kSender};
  std::atomic<Policy> policy{Policy::kVolatile};
  std::atomic<char> name[kMaxPoolNameInReport] = {};
  std::atomic<int> nclasses{0};
  std::atomic<std::uint64_t> class_size[kMaxClasses] = {};
  std::atomic<std::uint64_t> class_count[kMaxClasses] = {};
  std::atomic<bool (*)(void*, void*) noexcept> hook_fn{nullptr};
  std::atomic<void*> hook_ctx{nullptr};
};
static_assert(std::atomic<int>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<bool>::is_always_lock_free);
static_assert(std::atomic<std::uintptr_t>::is_always_lock_free);
static_assert(std::atomic<MappingKind>::is_always_lock_free);
static_assert(std::atomic<Policy>::is_always_lock_free);
static_assert(std::atomic<char>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<void*>::is_always_lock_free);
static_assert(std::atomic<bool (*)(void*, void*) noexcept>::is_always_lock_free);

constinit Entry g_entries[kMaxMappings];

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Owner only: opens a write section on e.
void begin_write(Entry& e) noexcept {
  // relaxed: only the owner writes seq, and the acquire that claimed the
  // slot made the previous owner's last value visible.
  const std::uint32_t s = e.seq.load(std::memory_order_relaxed);
  // relaxed: ordered before the field stores by the fence below.
  e.seq.store(s + 1, std::memory_order_relaxed);
  // release fence: a reader whose relaxed load sees any field store that
  // follows also sees seq odd (or later) when it re-checks; pairs with the
  // acquire fence in read_slot().
  std::atomic_thread_fence(std::memory_order_release);
}

// Owner only: closes the write section opened by begin_write().
void end_write(Entry& e) noexcept {
  // relaxed: only the owner writes seq.
  const std::uint32_t s = e.seq.load(std::memory_order_relaxed);
  // release: publishes the field stores of this section; pairs with the
  // acquire load of seq in read_slot().
  e.seq.store(s + 1, std::memory_order_release);
}

// Copies e into *hit if it is live and covers addr. Runs inside a read
// section: every value may be stale or from two different writes, so each
// is checked before use (no division by zero, no index out of range) and
// the caller discards the result unless seq proves it consistent. relaxed
// throughout: read_slot()'s seq loads and fence order these loads.
bool copy_if_covers(const Entry& e, std::uintptr_t addr, MappingHit* hit) noexcept {
  if (!e.live.load(std::memory_order_relaxed)) return false;
  const std::uintptr_t begin = e.begin.load(std::memory_order_relaxed);
  const std::uintptr_t end = e.end.load(std::memory_order_relaxed);
  if (addr < begin || addr >= end) return false;
  hit->begin = begin;
  hit->end = end;
  hit->kind = e.kind.load(std::memory_order_relaxed);
  hit->policy = e.policy.load(std::memory_order_relaxed);
  for (std::size_t k = 0; k < kMaxPoolNameInReport; ++k) hit->pool_name[k] = e.name[k].load(std::memory_order_relaxed);
  hit->pool_name[kMaxPoolNameInReport - 1] = '\0';
  hit->hook.fn = e.hook_fn.load(std::memory_order_relaxed);
  hit->hook.ctx = e.hook_ctx.load(std::memory_order_relaxed);
  // Which buffer: walk the classes in index order.
  const int n = std::clamp(e.nclasses.load(std::memory_order_relaxed), 0, kMaxClasses);
  std::uint64_t off = addr - begin, first = 0;
  hit->buffer_index = hit->class_size = hit->byte_in_buffer = 0;
  for (int k = 0; k < n; ++k) {
    const std::uint64_t size = e.class_size[k].load(std::memory_order_relaxed);
    const std::uint64_t count = e.class_count[k].load(std::memory_order_relaxed);
    if (size == 0) break;
    const std::uint64_t span = size * count;
    if (off < span) {
      hit->buffer_index = first + off / size;
      hit->byte_in_buffer = off % size;
      hit->class_size = size;
      break;
    }
    off -= span;
    first += count;
  }
  return true;
}

// A consistent read of one slot: true and *hit filled if, at one instant,
// the slot held a live registration covering addr.
bool read_slot(const Entry& e, std::uintptr_t addr, MappingHit* hit) noexcept {
  for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
    // acquire: sees the fields published by the last end_write(); pairs
    // with its release store.
    const std::uint32_t before = e.seq.load(std::memory_order_acquire);
    if ((before & 1) != 0) {
      cpu_relax();
      continue;
    }
    const bool covers = copy_if_covers(e, addr, hit);
    // acquire fence: keeps the field loads above before the re-check of seq;
    // pairs with the release fence in begin_write().
    std::atomic_thread_fence(std::memory_order_acquire);
    // relaxed: ordered after the field loads by the fence above.
    if (e.seq.load(std::memory_order_relaxed) == before) return covers;
  }
  return false;
}

struct sigaction g_previous;
std::atomic<bool> g_previous_spent{false};
static_assert(std::atomic<bool>::is_always_lock_free);
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

void reset_to_default(int sig) noexcept {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
}

// True for a write fault the kernel raised for an instruction. Only then
// is si_addr an address: for kill() and raise() (si_code <= 0) the same
// bytes hold the sender's pid and uid. On x86-64 the page-fault error code
// says whether the access was a write (bit 1); a read or an instruction
// fetch inside a pool is not fbuf's to report. Elsewhere every fault in a
// pool counts as a write, the only access the pools refuse.
bool is_write_fault(const siginfo_t* info, const void* context) noexcept {
  if (info == nullptr || info->si_code <= 0) return false;
#if defined(__x86_64__)
  if (context != nullptr && (static_cast<const ucontext_t*>(context)->uc_mcontext.gregs[REG_ERR] & 2) == 0)
    return false;
#else
  (void)context;
#endif
  return true;
}

// What the disposition before fbuf's would have done with this SIGSEGV,
// done here, so that the process behaves as if fbuf's handler were not
// installed. The kernel has already blocked SIGSEGV for this handler (no
// SA_NODEFER) and will restore the interrupted code's mask from the
// ucontext when it returns.
void act_as_previous(int sig, siginfo_t* info, void* context) {
  const struct sigaction& prev = g_previous;
  // kill(), raise(), sigqueue() and the like set si_code <= 0: nothing
  // faulted, so returning does not bring the signal back. A fault the
  // kernel raised for an instruction (si_code > 0) comes back when the
  // instruction runs again.
  const bool asynchronous = info == nullptr || info->si_code <= 0;

  void (*handler)(int) = prev.sa_handler;  // SIG_DFL and SIG_IGN, even with SA_SIGINFO
  // SA_RESETHAND: the kernel would have reset the disposition to SIG_DFL
  // when it delivered the first SIGSEGV to that handler, so exactly one
  // delivery (across threads) gets it. relaxed: the exchange only has to be
  // atomic; it publishes nothing else.
  if (handler != SIG_DFL && handler != SIG_IGN && (prev.sa_flags & SA_RESETHAND) != 0 &&
      g_previous_spent.exchange(true, std::memory_order_relaxed))
    handler = SIG_DFL;

  if (handler == SIG_IGN) {
    if (asynchronous) return;  // ignored, as the kernel would have
    // The kernel does not let a fault be ignored: it resets the disposition
    // and kills. Returning re-runs the instruction, which does just that.
    reset_to_default(sig);
    return;
  }
  if (handler == SIG_DFL) {
    reset_to_default(sig);
    // A fault comes back by itself when the instruction runs again, with
    // the process's true siginfo and registers in the core. A signal that
    // was sent does not: send it again. It stays pending while SIGSEGV is
    // blocked here and kills as this handler returns.
    if (asynchronous) raise(sig);
    return;
  }

  // A handler: call it under the mask the kernel would have set for it, the
  // interrupted code's mask plus its sa_mask, plus SIGSEGV unless
  // SA_NODEFER. Once it returns, this handler's own mask comes back until
  // the kernel restores the interrupted code's from the ucontext (with any
  // change the previous handler made there); a handler that siglongjmp()s
  // out leaves with the mask it would have had without fbuf.
  sigset_t mask;
  if (context != nullptr) mask = static_cast<ucontext_t*>(context)->uc_sigmask;
  else pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  sigorset(&mask, &mask, &prev.sa_mask);
  if ((prev.sa_flags & SA_NODEFER) == 0) sigaddset(&mask, sig);
  sigset_t saved;
  pthread_sigmask(SIG_SETMASK, &mask, &saved);
  if ((prev.sa_flags & SA_SIGINFO) != 0) prev.sa_sigaction(sig, info, context);
  else handler(sig);
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
}

void on_segv(int sig, siginfo_t* info, void* context) {
  const std::optional<MappingHit> hit = is_write_fault(info, context) ? find_mapping(info->si_addr) : std::nullopt;
  // The registration's own answer first (copy_on_write gives the sender a
  // private copy of the page and the write is re-run).
  if (hit && hit->hook.fn != nullptr && hit->hook.fn(hit->hook.ctx, info->si_addr)) return;
  if (hit) {
    const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
    const MappingHit& e = *hit;
    Line l;
    l.put("fbuf: write to a buffer this process may not write: pool '");
    l.put(e.pool_name);
    l.put("' buffer ");
    l.num(e.buffer_index);
    l.put(" (");
    l.num(e.class_size);
    l.put("-byte class, byte ");
    l.num(e.byte_in_buffer);
    l.put(") policy ");
    l.put(to_string(e.policy));  // returns a literal: async-signal-safe
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
    // Returning re-runs the write, which now gets the default action: the
    // process dies by SIGSEGV, core and all.
    reset_to_default(sig);
    return;
  }
  act_as_previous(sig, info, context);
}

}  // namespace

void install_segv_report() {
  std::call_once(g_installed, [] {
    // SA_RESTART as the previous disposition had it: a sent SIGSEGV that
    // interrupts a system call restarts it or fails it with EINTR as it
    // would have without fbuf (SIG_IGN and SIG_DFL never interrupt one).
    // SA_ONSTACK always, so the report works on a thread that overflowed
    // its stack; a previous handler without SA_ONSTACK then runs on the
    // alternate stack too, the one difference act_as_previous() cannot
    // undo (the kernel would have run it on the thread's own stack).
    struct sigaction before {};
    sigaction(SIGSEGV, nullptr, &before);
    const bool calls_handler = before.sa_handler != SIG_DFL && before.sa_handler != SIG_IGN;
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    if (!calls_handler || (before.sa_flags & SA_RESTART) != 0) sa.sa_flags |= SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_previous);
  });
}

std::optional<MappingHit> find_mapping(const void* addr) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  MappingHit hit;
  for (const Entry& e : g_entries)
    if (read_slot(e, a, &hit)) return hit;
  return std::nullopt;
}

int register_mapping(const void* base, std::size_t size, MappingKind kind, Policy policy,
                     const char* pool_name, std::span<const SizeClass> classes, WriteFaultHook hook) noexcept {
  // Everything is read from the caller's memory before a write section
  // opens: a bad pointer then faults here, not while the slot is odd, where
  // the handler would spin on it.
  char name[kMaxPoolNameInReport] = {};
  if (pool_name != nullptr) std::strncpy(name, pool_name, sizeof name - 1);
  const int nclasses = static_cast<int>(std::min<std::size_t>(classes.size(), kMaxClasses));
  std::uint64_t class_size[kMaxClasses] = {};
  std::uint64_t class_count[kMaxClasses] = {};
  for (int k = 0; k < nclasses; ++k) {
    class_size[k] = classes[static_cast<std::size_t>(k)].buffer_size;
    class_count[k] = classes[static_cast<std::size_t>(k)].count;
  }
  const auto begin = reinterpret_cast<std::uintptr_t>(base);

  for (int i = 0; i < kMaxMappings; ++i) {
    Entry& e = g_entries[i];
    int expected = Entry::kFree;
    // acquire: sees the previous owner's last write section (its seq);
    // pairs with the release store in unregister_mapping(). relaxed on
    // failure: nothing is read from a slot someone else owns.
    if (!e.claim.compare_exchange_strong(expected, Entry::kBusy, std::memory_order_acquire,
                                         std::memory_order_relaxed))
      continue;
    begin_write(e);
    // relaxed stores: the write section orders them (see begin_write()).
    e.begin.store(begin, std::memory_order_relaxed);
    e.end.store(begin + size, std::memory_order_relaxed);
    e.kind.store(kind, std::memory_order_relaxed);
    e.policy.store(policy, std::memory_order_relaxed);
    for (std::size_t k = 0; k < sizeof name; ++k) e.name[k].store(name[k], std::memory_order_relaxed);
    e.nclasses.store(nclasses, std::memory_order_relaxed);
    for (int k = 0; k < kMaxClasses; ++k) {
      e.class_size[k].store(class_size[k], std::memory_order_relaxed);
      e.class_count[k].store(class_count[k], std::memory_order_relaxed);
    }
    e.hook_fn.store(hook.fn, std::memory_order_relaxed);
    e.hook_ctx.store(hook.ctx, std::memory_order_relaxed);
    e.live.store(true, std::memory_order_relaxed);
    end_write(e);
    return i;
  }
  return -1;
}

void unregister_mapping(int token) noexcept {
  if (token < 0 || token >= kMaxMappings) return;
  Entry& e = g_entries[token];
  begin_write(e);
  e.live.store(false, std::memory_order_relaxed);  // relaxed: the write section orders it
  end_write(e);
  // release: hands the slot, seq even, to the next registrant; pairs with
  // the acquire CAS in register_mapping().
  e.claim.store(Entry::kFree, std::memory_order_release);
}

}  // namespace fbuf::detail
