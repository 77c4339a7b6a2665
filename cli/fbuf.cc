// fbuf: inspects the fbuf services of this machine.
//
//   fbuf list                 services (listening sockets @fbuf/...), owner pid and user
//   fbuf info SERVICE         pool geometry and policy, receivers, holdings, counters
//   fbuf top                  a refreshing view of rates and holdings of every service
//   fbuf hz SERVICE           message rate and sizes, as a receiver
//   fbuf peek SERVICE         the next messages: size and a hex dump, as a receiver
//
// list, info and top ask each service's control thread with the monitoring
// request (ipc/monitor.h); hz and peek connect as ordinary receivers that
// ask to be skipped when they fall behind, so they never stall the
// pipeline they watch. Exit status: 0 done, 1 a service could not be
// reached or answered badly, 3 the stream ended before hz or peek was
// done; bad usage exits with CLI11's codes (above 100).
#include <pwd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/chrono.h>
#include <fmt/core.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <exception>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fbuf/fbuf.h"
#include "ipc/monitor.h"

namespace {

using Clock = std::chrono::steady_clock;
using fbuf::ipc::MonitorInfo;
using fbuf::ipc::MonitorReceiver;

constexpr int kUnreachable = 1;
constexpr int kEnded = 3;

// --- helpers ----------------------------------------------------------------

std::chrono::nanoseconds seconds(double s) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(s));
}

std::string user_name(std::uint32_t uid) {
  passwd pw{};
  passwd* found = nullptr;
  char buf[1024];
  if (::getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != nullptr) return found->pw_name;
  return std::to_string(uid);
}

std::string bytes_text(std::uint64_t n) {
  if (n >= (std::uint64_t{1} << 30) && n % (std::uint64_t{1} << 30) == 0) return fmt::format("{} GiB", n >> 30);
  if (n >= (std::uint64_t{1} << 20) && n % (std::uint64_t{1} << 20) == 0) return fmt::format("{} MiB", n >> 20);
  if (n >= 1024 && n % 1024 == 0) return fmt::format("{} KiB", n >> 10);
  return fmt::format("{} B", n);
}

std::string rate_text(double bytes_per_s) {
  if (bytes_per_s >= 1e9) return fmt::format("{:.2f} GB/s", bytes_per_s / 1e9);
  if (bytes_per_s >= 1e6) return fmt::format("{:.2f} MB/s", bytes_per_s / 1e6);
  if (bytes_per_s >= 1e3) return fmt::format("{:.2f} kB/s", bytes_per_s / 1e3);
  return fmt::format("{:.0f} B/s", bytes_per_s);
}

// Text from another process, made safe for a terminal: control bytes
// (an escape sequence in a pool name, a newline in a socket name) are
// shown as \xNN rather than sent to it.
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '\\') {
      out += fmt::format("\\x{:02x}", static_cast<unsigned>(u));
    } else {
      out += c;
    }
  }
  return out;
}

// The times in a reply are the peer's word: any value prints as something.
std::string wall_time(std::int64_t ns_since_epoch) {
  const std::time_t t = static_cast<std::time_t>(ns_since_epoch / 1'000'000'000);
  try {
    return fmt::format("{:%Y-%m-%d %H:%M:%S}", fmt::localtime(t));
  } catch (const std::exception&) {
    return "?";
  }
}

std::string age_text(std::int64_t ns_since_epoch) {
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  // In whole seconds before subtracting, so no value can overflow.
  std::int64_t s = std::max<std::int64_t>(0, now - ns_since_epoch / 1'000'000'000);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02}m", s / 3600, (s / 60) % 60);
  return fmt::format("{}d{:02}h", s / 86400, (s / 3600) % 24);
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(u));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string state_text(const MonitorReceiver& r) {
  if (r.cut_off) return "cut off";
  if (r.detached) return "detached";
  return "active";
}

std::uint32_t total_buffers(const MonitorInfo& m) {
  std::uint64_t n = 0;
  for (const auto& c : m.classes) n += c.count;
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(n, UINT32_MAX));
}

std::uint32_t free_buffers(const MonitorInfo& m) {
  std::uint64_t n = 0;
  for (const auto& c : m.classes) n += c.free;
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(n, UINT32_MAX));
}

// Free, or returned and not collected yet: what the next allocations can have.
std::uint64_t available(const MonitorInfo& m) { return free_buffers(m) + m.returns_waiting; }

// A size class with no free buffer while no return waits to be collected
// (those are free in all but name: the pool collects them when a class
// runs empty); nullptr if there is none.
const fbuf::ipc::MonitorClass* exhausted_class(const MonitorInfo& m) {
  if (m.returns_waiting != 0) return nullptr;
  for (const auto& c : m.classes)
    if (c.count != 0 && c.free == 0) return &c;
  return nullptr;
}

// The receiver holding (or having queued) the most buffers, if any holds one.
const MonitorReceiver* biggest_holder(const MonitorInfo& m) {
  const MonitorReceiver* best = nullptr;
  for (const auto& r : m.receivers)
    if (r.outstanding() != 0 && (best == nullptr || r.outstanding() > best->outstanding())) best = &r;
  return best;
}

// --- finding services ---------------------------------------------------------

// The services listening on this machine (this network namespace): the
// listening SOCK_SEQPACKET sockets whose abstract name starts "@fbuf/" in
// /proc/net/unix, each name once, sorted.
std::vector<std::string> find_services() {
  std::ifstream in("/proc/net/unix");
  std::string line;
  std::getline(in, line);  // the header
  std::set<std::string> names;
  constexpr unsigned long kAcceptCon = 0x10000;  // __SO_ACCEPTCON: listening
  constexpr unsigned kSeqPacket = 5;
  while (std::getline(in, line)) {
    // Num RefCount Protocol Flags Type St Inode Path
    std::istringstream fields(line);
    std::string num, refs, proto, flags, type, state, inode;
    if (!(fields >> num >> refs >> proto >> flags >> type >> state >> inode)) continue;
    std::string path;
    std::getline(fields, path);
    if (!path.empty() && path.front() == ' ') path.erase(0, 1);
    if (path.rfind("@fbuf/", 0) != 0) continue;
    unsigned long f = 0;
    unsigned t = 0;
    try {
      f = std::stoul(flags, nullptr, 16);
      t = static_cast<unsigned>(std::stoul(type, nullptr, 16));
    } catch (const std::exception&) {
      continue;
    }
    if ((f & kAcceptCon) == 0 || t != kSeqPacket) continue;
    names.insert(path.substr(6));
  }
  return {names.begin(), names.end()};
}

struct Answer {
  std::string service;
  std::optional<MonitorInfo> info;
  std::string error;
};

// Asks `service` for its state. Every string in the answer is printable
// (the names and reasons come from other processes).
Answer ask(const std::string& service, std::chrono::nanoseconds timeout) {
  Answer a{service, std::nullopt, {}};
  try {
    a.info = fbuf::ipc::query_monitor(service, timeout);
    a.info->service = printable(a.info->service);
    a.info->pool_name = printable(a.info->pool_name);
  } catch (const fbuf::Error& e) {
    // What went wrong, without the context that names the service again.
    a.error = e.what();
    const std::string prefix = "'" + service + "': ";
    if (auto at = a.error.find(prefix); at != std::string::npos) a.error.erase(0, at + prefix.size());
  } catch (const std::exception& e) {
    a.error = e.what();
  }
  a.service = printable(a.service);
  a.error = printable(a.error);
  return a;
}

// Asks every service at once (a few threads at a time), so one that does
// not answer costs one timeout, not one per service.
std::vector<Answer> ask_all(const std::vector<std::string>& services, std::chrono::nanoseconds timeout) {
  constexpr std::size_t kAtOnce = 16;
  std::vector<Answer> answers(services.size());
  for (std::size_t first = 0; first < services.size(); first += kAtOnce) {
    std::vector<std::thread> threads;
    for (std::size_t i = first; i < std::min(services.size(), first + kAtOnce); ++i)
      threads.emplace_back([&, i] { answers[i] = ask(services[i], timeout); });
    for (auto& t : threads) t.join();
  }
  return answers;
}

// --- list ---------------------------------------------------------------------

int run_list(bool json, double timeout_s) {
  const std::vector<Answer> answers = ask_all(find_services(), seconds(timeout_s));
  if (json) {
    fmt::print("[");
    for (std::size_t i = 0; i < answers.size(); ++i) {
      const Answer& a = answers[i];
      fmt::print("{}\n  {{\"service\": {}", i == 0 ? "" : ",", json_string(a.service));
      if (a.info) {
        const MonitorInfo& m = *a.info;
        fmt::print(", \"pid\": {}, \"uid\": {}, \"user\": {}, \"pool\": {}, \"receivers\": {}, \"buffers\": {}, "
                   "\"free\": {}, \"returns_waiting\": {}, \"sent\": {}",
                   m.owner_pid, m.owner_uid, json_string(user_name(m.owner_uid)), json_string(m.pool_name),
                   m.receivers.size() + m.receivers_omitted, total_buffers(m), free_buffers(m), m.returns_waiting, m.stats.sent);
      } else {
        fmt::print(", \"error\": {}", json_string(a.error));
      }
      fmt::print("}}");
    }
    fmt::print("{}]\n", answers.empty() ? "" : "\n");
    return 0;
  }
  if (answers.empty()) {
    fmt::print("no fbuf services\n");
    return 0;
  }
  std::size_t width = 7;
  for (const Answer& a : answers) width = std::max(width, a.service.size());
  fmt::print("{:<{}}  {:>7}  {:<12} {:>9}  {:>12}  {}\n", "SERVICE", width, "PID", "USER", "RECEIVERS", "FREE/BUFFERS",
             "POOL");
  for (const Answer& a : answers) {
    if (!a.info) {
      fmt::print("{:<{}}  (no answer: {})\n", a.service, width, a.error);
      continue;
    }
    const MonitorInfo& m = *a.info;
    fmt::print("{:<{}}  {:>7}  {:<12} {:>9}  {:>12}  {}\n", a.service, width, m.owner_pid, user_name(m.owner_uid),
               m.receivers.size() + m.receivers_omitted, fmt::format("{}/{}", available(m), total_buffers(m)),
               m.pool_name);
  }
  return 0;
}

// --- info ---------------------------------------------------------------------

void print_info_json(const MonitorInfo& m) {
  fmt::print("{{\n  \"service\": {},\n  \"protocol_version\": {},\n  \"owner\": {{\"pid\": {}, \"uid\": {}, \"user\": {}}},\n",
             json_string(m.service), m.protocol_version, m.owner_pid, m.owner_uid, json_string(user_name(m.owner_uid)));
  fmt::print("  \"pool\": {{\"name\": {}, \"policy\": {}, \"classes\": [", json_string(m.pool_name),
             json_string(fbuf::to_string(m.policy)));
  for (std::size_t i = 0; i < m.classes.size(); ++i)
    fmt::print("{}{{\"buffer_size\": {}, \"count\": {}, \"free\": {}, \"sealed\": {}, \"sealed_free\": {}}}",
               i == 0 ? "" : ", ", m.classes[i].buffer_size, m.classes[i].count, m.classes[i].free,
               m.classes[i].sealed, m.classes[i].sealed_free);
  fmt::print("]}},\n");
  fmt::print("  \"sealed\": {{\"copy_size\": {}, \"total\": {}, \"free\": {}, \"in_flight\": {}, \"copies\": {}, "
             "\"fallbacks\": {}}},\n",
             m.sealed_copy_size, m.sealed_total, m.sealed_free, m.sealed_in_flight, m.sealed_copies,
             m.sealed_fallbacks);
  fmt::print("  \"slow_receiver\": {{\"policy\": {}, \"budget\": {}, \"hold_timeout_ns\": {}}},\n",
             json_string(fbuf::ipc::to_string(m.slow_policy)), m.receiver_budget, m.hold_timeout_ns);
  fmt::print("  \"ring_capacity\": {},\n  \"max_receivers\": {},\n", m.ring_capacity, m.max_receivers);
  const fbuf::SenderStats& s = m.stats;
  fmt::print("  \"counters\": {{\"sent\": {}, \"delivered\": {}, \"returned\": {}, \"dropped\": {}, "
             "\"rejected_returns\": {}, \"rejected_handshakes\": {}, \"receivers_connected\": {}, "
             "\"receivers_lost\": {}, \"receivers_cut_off\": {}, \"monitor_requests\": {}}},\n",
             s.sent, s.delivered, s.returned, s.dropped, s.rejected_returns, s.rejected_handshakes,
             s.receivers_connected, s.receivers_lost, s.receivers_cut_off, m.monitor_requests);
  fmt::print("  \"receivers\": [");
  for (std::size_t i = 0; i < m.receivers.size(); ++i) {
    const MonitorReceiver& r = m.receivers[i];
    fmt::print("{}\n    {{\"id\": {}, \"pid\": {}, \"uid\": {}, \"user\": {}, \"local\": {}, \"connected_since_ns\": {}, "
               "\"held\": {}, \"queued\": {}, \"ring_capacity\": {}, \"delivered\": {}, \"returned\": {}, "
               "\"dropped\": {}, \"rejected_returns\": {}, \"state\": {}, \"policy\": {}, \"budget\": {}, "
               "\"hold_timeout_ns\": {}}}",
               i == 0 ? "" : ",", r.id, r.pid, r.uid, json_string(user_name(r.uid)), r.local, r.connected_since_ns,
               r.held, r.queued, r.ring_capacity, r.delivered, r.returned, r.dropped, r.rejected_returns,
               json_string(state_text(r)), json_string(fbuf::ipc::to_string(r.slow_policy)), r.receiver_budget,
               r.hold_timeout_ns);
  }
  fmt::print("{}],\n  \"receivers_omitted\": {}", m.receivers.empty() ? "" : "\n  ", m.receivers_omitted);
  fmt::print(",\n  \"returns_waiting\": {}", m.returns_waiting);
  if (const MonitorReceiver* h = biggest_holder(m); h != nullptr && exhausted_class(m) != nullptr)
    fmt::print(",\n  \"exhausted_by\": {}", h->id);
  fmt::print("\n}}\n");
}

void print_info(const MonitorInfo& m) {
  fmt::print("service    {}\n", m.service);
  fmt::print("owner      pid {}, user {}\n", m.owner_pid, user_name(m.owner_uid));
  fmt::print("protocol   {} (monitoring {})\n", m.protocol_version, fbuf::ipc::kMonitorVersion);
  fmt::print("pool       '{}', policy {}, {} buffers, {} free, {} returned and not collected yet\n", m.pool_name,
             fbuf::to_string(m.policy), total_buffers(m), free_buffers(m), m.returns_waiting);
  for (const auto& c : m.classes)
    fmt::print("  class    {:>8} x {:<6} {:>6} free{}\n", bytes_text(c.buffer_size), c.count, c.free,
               c.sealed ? fmt::format(", sealed copies: {} of {} slots free", c.sealed_free, c.count) : std::string());
  if (m.sealed_total == 0) {
    // A sender that predates these fields reports none as well.
    fmt::print("sealed     none ({})\n", m.policy == fbuf::Policy::kVolatile
                                              ? "every send of this pool is shared as it is"
                                              : "every send protects its buffer, or the sender does not report them");
  } else {
    fmt::print("sealed     copies up to {}; {} slots, {} free, {} in flight; {} copies, {} fallbacks\n",
               bytes_text(m.sealed_copy_size), m.sealed_total, m.sealed_free, m.sealed_in_flight, m.sealed_copies,
               m.sealed_fallbacks);
  }
  fmt::print("slow       policy {}, budget {}, hold timeout {}\n", fbuf::ipc::to_string(m.slow_policy),
             m.receiver_budget == 0 ? std::string("none (a full ring)") : std::to_string(m.receiver_budget),
             m.hold_timeout_ns == 0 ? std::string("none") : fmt::format("{} ms", m.hold_timeout_ns / 1'000'000));
  fmt::print("rings      {} descriptors per receiver, at most {} receivers\n", m.ring_capacity, m.max_receivers);
  const fbuf::SenderStats& s = m.stats;
  fmt::print("counters   sent {}, delivered {}, returned {}, dropped {}\n", s.sent, s.delivered, s.returned,
             s.dropped);
  fmt::print("rejected   returns {}, handshakes {} (bad requests included)\n", s.rejected_returns,
             s.rejected_handshakes);
  fmt::print("receivers  {} now; {} connected in all, {} lost, {} cut off; {} monitoring requests\n",
             m.receivers.size() + m.receivers_omitted, s.receivers_connected, s.receivers_lost, s.receivers_cut_off,
             m.monitor_requests);
  if (!m.receivers.empty()) {
    fmt::print("\n  {:>4} {:>7} {:<10} {:<19} {:>8} {:>6} {:>6} {:>11} {:>10} {:>10} {:>8} {:>8}  {}\n", "ID", "PID",
               "USER", "SINCE", "AGE", "HELD", "QUEUED", "RING", "DELIVERED", "RETURNED", "DROPPED", "REJECTED",
               "STATE");
    for (const MonitorReceiver& r : m.receivers) {
      fmt::print("  {:>4} {:>7} {:<10} {:<19} {:>8} {:>6} {:>6} {:>11} {:>10} {:>10} {:>8} {:>8}  {}{}{}\n", r.id,
                 r.pid, user_name(r.uid), wall_time(r.connected_since_ns), age_text(r.connected_since_ns), r.held,
                 r.queued, fmt::format("{}/{}", r.queued, r.ring_capacity), r.delivered,
                 r.local ? std::string("-") : std::to_string(r.returned), r.dropped, r.rejected_returns,
                 state_text(r), r.local ? ", in-process" : "",
                 r.slow_policy != fbuf::SlowReceiverPolicy::kBlock
                     ? fmt::format(", {}", fbuf::ipc::to_string(r.slow_policy))
                     : std::string());
    }
    if (m.receivers_omitted != 0) fmt::print("  ... and {} more receivers\n", m.receivers_omitted);
  }
  // Who drained the pool: the question asked most when allocations stall.
  if (const fbuf::ipc::MonitorClass* exhausted = exhausted_class(m); exhausted != nullptr) {
    const auto& c = *exhausted;
    fmt::print("\n");
    const MonitorReceiver* h = biggest_holder(m);
    if (h == nullptr) {
      fmt::print("pool exhausted: class {} has none of its {} buffers free; no receiver holds any (the owner has "
                 "them allocated)\n",
                 bytes_text(c.buffer_size), c.count);
    } else {
      // A receiver's holdings count the sealed copies it holds too.
      fmt::print("pool exhausted: receiver {} (pid {}, user {}) holds {} of {} buffers{} ({} taken, {} queued); "
                 "class {} has none of its {} free\n",
                 h->id, h->pid, user_name(h->uid), h->outstanding(), std::uint64_t{total_buffers(m)} + m.sealed_total,
                 m.sealed_total != 0 ? " and sealed slots" : "", h->held, h->queued, bytes_text(c.buffer_size),
                 c.count);
    }
  }
}

int run_info(const std::string& service, bool json, double timeout_s) {
  Answer a = ask(service, seconds(timeout_s));
  if (!a.info) {
    fmt::print(stderr, "fbuf info: {}: {}\n", service, a.error);
    return kUnreachable;
  }
  if (json) {
    print_info_json(*a.info);
  } else {
    print_info(*a.info);
  }
  return 0;
}

// --- top ----------------------------------------------------------------------

struct Sample {
  Clock::time_point at;
  std::uint64_t sent = 0, delivered = 0, copies = 0, fallbacks = 0;
  std::map<std::uint32_t, std::uint64_t> per_receiver;  // delivered, by receiver id
};

int run_top(double interval_s, long iterations, bool batch, double timeout_s) {
  const bool tty = !batch && ::isatty(STDOUT_FILENO) == 1;
  std::map<std::string, Sample> last;  // by service and owner pid
  for (long i = 0; iterations <= 0 || i < iterations; ++i) {
    if (i != 0) std::this_thread::sleep_for(seconds(interval_s));
    const std::vector<Answer> answers = ask_all(find_services(), seconds(timeout_s));
    const auto now = Clock::now();
    std::string out;
    if (tty) out += "\x1b[H\x1b[2J";  // home, clear
    out += fmt::format("fbuf top - {:%H:%M:%S}, {} services, every {:.1f} s{}\n",
                       fmt::localtime(std::time(nullptr)), answers.size(), interval_s,
                       tty ? " (Ctrl-C quits)" : fmt::format(", iteration {}", i + 1));
    out += fmt::format("{:<24} {:>7} {:<10} {:>4} {:>10} {:>10} {:>9} {:>9} {:>11} {:>6} {:>6} {:>8}\n", "SERVICE",
                       "PID", "USER", "RECV", "SENT/S", "DELIV/S", "COPIED/S", "FALLBK/S", "FREE/BUFS", "HELD",
                       "QUEUED", "DROPPED");
    std::map<std::string, Sample> next;
    for (const Answer& a : answers) {
      if (!a.info) {
        out += fmt::format("{:<24} (no answer)\n", a.service);
        continue;
      }
      const MonitorInfo& m = *a.info;
      const std::string key = fmt::format("{}\n{}", m.service, m.owner_pid);
      Sample s{now, m.stats.sent, m.stats.delivered, m.sealed_copies, m.sealed_fallbacks, {}};
      for (const auto& r : m.receivers) s.per_receiver[r.id] = r.delivered;
      const Sample* prev = nullptr;
      if (auto it = last.find(key); it != last.end()) prev = &it->second;
      const double dt = prev != nullptr ? std::chrono::duration<double>(now - prev->at).count() : 0;
      auto rate = [&](std::uint64_t now_v, std::uint64_t then_v) {
        if (prev == nullptr || dt <= 0 || now_v < then_v) return std::string("-");
        return fmt::format("{:.1f}", static_cast<double>(now_v - then_v) / dt);
      };
      std::uint64_t held = 0, queued = 0;
      for (const auto& r : m.receivers) {
        held += r.held;
        queued += r.queued;
      }
      // A pool without sealed slots copies nothing: "-" rather than rates of 0.
      auto sealed_rate = [&](std::uint64_t now_v, std::uint64_t then_v) {
        return m.sealed_total == 0 ? std::string("-") : rate(now_v, then_v);
      };
      out += fmt::format("{:<24} {:>7} {:<10} {:>4} {:>10} {:>10} {:>9} {:>9} {:>11} {:>6} {:>6} {:>8}\n", m.service,
                         m.owner_pid, user_name(m.owner_uid), m.receivers.size() + m.receivers_omitted,
                         rate(m.stats.sent, prev ? prev->sent : 0), rate(m.stats.delivered, prev ? prev->delivered : 0),
                         sealed_rate(m.sealed_copies, prev ? prev->copies : 0),
                         sealed_rate(m.sealed_fallbacks, prev ? prev->fallbacks : 0),
                         fmt::format("{}/{}", available(m), total_buffers(m)), held, queued, m.stats.dropped);
      for (const auto& r : m.receivers) {
        std::uint64_t then_v = 0;
        bool known = false;
        if (prev != nullptr) {
          if (auto it = prev->per_receiver.find(r.id); it != prev->per_receiver.end()) {
            then_v = it->second;
            known = true;
          }
        }
        out += fmt::format("{:<24} {:>7} {:<10} {:>4} {:>10} {:>10} {:>9} {:>9} {:>11} {:>6} {:>6} {:>8}  {}\n",
                           fmt::format("  receiver {}", r.id), r.pid, user_name(r.uid), "", "",
                           known ? rate(r.delivered, then_v) : std::string("-"), "", "", "", r.held, r.queued,
                           r.dropped, state_text(r));
      }
      next[key] = std::move(s);
    }
    last = std::move(next);
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  }
  return 0;
}

// --- hz and peek: a receiver that never stalls the pipeline ------------------------

fbuf::Receiver connect_watcher(const std::string& service, double timeout_s) {
  // Skipped rather than waited for when it falls behind (budget 0: only a
  // full ring), whatever the sender's own terms: a lenient request the
  // sender always grants.
  return fbuf::Receiver::connect(service, fbuf::ReceiverOptions{.connect_timeout = seconds(timeout_s),
                                                                .slow_receiver = fbuf::SlowReceiverPolicy::kSkip,
                                                                .receiver_budget = 0,
                                                                .hold_timeout = {}});
}

int run_hz(const std::string& service, long intervals, double duration_s, double interval_s, double timeout_s) {
  fbuf::Receiver rx = connect_watcher(service, timeout_s);
  fmt::print("watching {} every {:.2f} s\n", service, interval_s);
  std::fflush(stdout);
  const auto start = Clock::now();
  const auto end = duration_s > 0 ? start + seconds(duration_s) : Clock::time_point::max();
  std::uint64_t total = 0, dropped_before = rx.stats().dropped;
  for (long i = 0; intervals <= 0 || i < intervals; ++i) {
    const auto from = Clock::now();
    if (from >= end) break;
    const auto until = std::min(end, from + seconds(interval_s));
    std::uint64_t count = 0, bytes = 0, min = UINT64_MAX, max = 0;
    bool ended = false;
    for (;;) {
      const auto now = Clock::now();
      if (now >= until) break;
      // Messages of several slices (aggregates) count once, by their size.
      fbuf::Result<fbuf::Message> v = rx.receive_message(until - now);
      if (!v) {
        if (v.error() == fbuf::Errc::kTimedOut) break;
        if (v.error() == fbuf::Errc::kBadDescriptor) continue;
        ended = true;
        fmt::print("stream ended: {}\n", v.error().message());
        break;
      }
      const std::uint64_t size = v->size();
      ++count;
      bytes += size;
      min = std::min(min, size);
      max = std::max(max, size);
    }  // each View is released as soon as it is measured
    const double dt = std::chrono::duration<double>(Clock::now() - from).count();
    const std::uint64_t dropped = rx.stats().dropped;
    total += count;
    if (count == 0) {
      fmt::print("rate 0.0 msg/s  (no messages in {:.2f} s)\n", dt);
    } else {
      fmt::print("rate {:.1f} msg/s  {}  size min {} avg {:.0f} max {}  messages {}  skipped {}\n",
                 static_cast<double>(count) / dt, rate_text(static_cast<double>(bytes) / dt), min,
                 static_cast<double>(bytes) / static_cast<double>(count), max, count, dropped - dropped_before);
    }
    std::fflush(stdout);
    dropped_before = dropped;
    if (ended) return kEnded;
  }
  fmt::print("total {} messages in {:.2f} s\n", total, std::chrono::duration<double>(Clock::now() - start).count());
  return 0;
}

int run_peek(const std::string& service, long count, std::size_t max_bytes, double timeout_s) {
  fbuf::Receiver rx = connect_watcher(service, timeout_s);
  std::vector<unsigned char> head;
  for (long i = 0; i < count; ++i) {
    std::size_t size = 0, slices = 0;
    {
      fbuf::Result<fbuf::Message> v = rx.receive_message(seconds(timeout_s));
      if (!v) {
        if (v.error() == fbuf::Errc::kBadDescriptor) {
          --i;
          continue;
        }
        fmt::print(stderr, "fbuf peek: {}: {}\n", service, v.error().message());
        return v.error() == fbuf::Errc::kTimedOut ? kUnreachable : kEnded;
      }
      // Copy what is shown and let the buffer go before printing, which
      // may be slow (a terminal, a pipe nobody reads).
      size = v->size();
      slices = v->slice_count();
      head.resize(std::min(size, max_bytes));
      v->copy_to(std::as_writable_bytes(std::span<unsigned char>(head)));
    }
    if (slices > 1) {
      fmt::print("message {}: {} bytes in {} slices\n", i + 1, size, slices);
    } else {
      fmt::print("message {}: {} bytes\n", i + 1, size);
    }
    for (std::size_t off = 0; off < head.size(); off += 16) {
      std::string hex, text;
      for (std::size_t j = off; j < off + 16; ++j) {
        if (j < head.size()) {
          hex += fmt::format("{:02x} ", head[j]);
          text += head[j] >= 0x20 && head[j] < 0x7f ? static_cast<char>(head[j]) : '.';
        } else {
          hex += "   ";
        }
        if (j == off + 7) hex += ' ';
      }
      fmt::print("  {:08x}  {} |{}|\n", off, hex, text);
    }
    if (head.size() < size) fmt::print("  ... {} more bytes\n", size - head.size());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fbuf: inspect the zero-copy buffer services (@fbuf/...) of this machine"};
  app.require_subcommand(1);
  app.footer(
      "A service answers list, info and top only to processes of its own user (and root) unless its Sender "
      "allows other users. hz and peek connect as receivers that the sender skips when they fall behind.");
  double timeout = 2.0;
  app.add_option("--timeout", timeout, "seconds to wait for a service to answer (default 2)")
      ->check(CLI::Range(0.001, 3600.0));

  bool list_json = false;
  auto* list = app.add_subcommand("list", "list the services on this machine with their owner pid and user");
  list->add_flag("--json", list_json, "print JSON");
  list->footer("Services are the listening sockets @fbuf/NAME in /proc/net/unix; each is asked for its owner. "
               "A service that does not answer is listed with (no answer).");

  std::string service;
  bool info_json = false;
  auto* info = app.add_subcommand("info", "pool geometry and policy, receivers, holdings and counters of a service");
  info->add_option("SERVICE", service, "the service name (without @fbuf/)")->required();
  info->add_flag("--json", info_json, "print JSON");
  info->footer("Per receiver: pid, user, since when, buffers held (taken, not returned) and queued (in its ring), "
               "ring fill, delivered, returned, dropped, rejected returns. When a size class has no free buffer, "
               "the receiver holding the most buffers is named.");

  double top_interval = 1.0;
  long top_iterations = 0;
  bool top_batch = false;
  auto* top = app.add_subcommand("top", "a refreshing view of rates and holdings of every service");
  top->add_option("-d,--delay", top_interval, "seconds between refreshes (default 1)")->check(CLI::Range(0.05, 3600.0));
  top->add_option("-n,--iterations", top_iterations, "stop after N refreshes (default: run until interrupted)")
      ->check(CLI::Range(0L, 1'000'000'000L));
  top->add_flag("-b,--batch", top_batch, "plain output, one block per refresh (also when stdout is not a terminal)");
  top->footer("Rates are counted between two refreshes, so the first shows '-'.");

  long hz_intervals = 0;
  double hz_duration = 0, hz_interval = 1.0;
  auto* hz = app.add_subcommand("hz", "message rate and sizes of a service, as a receiver");
  hz->add_option("SERVICE", service, "the service name")->required();
  hz->add_option("-n,--count", hz_intervals, "stop after N intervals (default: run until interrupted)")
      ->check(CLI::Range(0L, 1'000'000'000L));
  hz->add_option("--duration", hz_duration, "stop after this many seconds")->check(CLI::Range(0.0, 1e9));
  hz->add_option("-i,--interval", hz_interval, "seconds per line (default 1)")->check(CLI::Range(0.01, 3600.0));
  hz->footer("Connects as a receiver (the sender skips it when it falls behind, counted as 'skipped') and releases "
             "every buffer as soon as it is counted.");

  long peek_count = 5;
  std::size_t peek_bytes = 64;
  auto* peek = app.add_subcommand("peek", "print the next messages of a service: size and a hex dump");
  peek->add_option("SERVICE", service, "the service name")->required();
  peek->add_option("-n,--count", peek_count, "messages to print (default 5)")->check(CLI::Range(1L, 1'000'000'000L));
  peek->add_option("--bytes", peek_bytes, "bytes of each message to dump (default 64)")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 32));
  peek->footer("Connects as a read-only receiver; each buffer is copied up to --bytes and released before it is "
               "printed. --timeout is also how long to wait for each message.");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*list) return run_list(list_json, timeout);
    if (*info) return run_info(service, info_json, timeout);
    if (*top) return run_top(top_interval, top_iterations, top_batch, timeout);
    if (*hz) return run_hz(service, hz_intervals, hz_duration, hz_interval, timeout);
    if (*peek) return run_peek(service, peek_count, peek_bytes, timeout);
  } catch (const std::exception& e) {
    fmt::print(stderr, "fbuf: {}\n", printable(e.what()));
    return kUnreachable;
  }
  return 0;
}
