/* fbuf_c_pipeline: a market-data feed over the fbuf C API (fbuf/uf.h).
 *
 * The producer writes batches of trade ticks (sequence, time, symbol, price,
 * quantity) straight into pool buffers and sends them; the consumer reads
 * each batch in place, checks that no tick was lost or repeated, computes
 * the volume-weighted average price per symbol and gives the buffer back.
 *
 *   fbuf_c_pipeline produce SERVICE BATCHES [RECEIVERS]   a producer process
 *   fbuf_c_pipeline consume SERVICE                       a consumer process
 *   fbuf_c_pipeline threads BATCHES                       both, as two threads
 *
 * Each side prints what it moved and an FNV-1a 64 checksum of every byte it
 * sent or received; the two must match. Exit status 0 on success, 1 on a
 * failed check or call, 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fbuf/uf.h"

#define SECOND_NS INT64_C(1000000000)
#define BATCH_MAGIC UINT32_C(0x4b434954) /* "TICK" */
#define MAX_TICKS 255u
#define SYMBOLS 4u
#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)
#define FNV_PRIME UINT64_C(0x00000100000001b3)

typedef struct batch_header {
  uint32_t magic;
  uint32_t ticks; /* tick records that follow */
  uint64_t sequence;
} batch_header;

typedef struct tick {
  uint64_t sequence; /* over the whole feed, no gaps */
  int64_t time_ns;   /* CLOCK_MONOTONIC when the tick was written */
  int64_t price_e4;  /* price in units of 1/10000 */
  uint32_t quantity;
  uint32_t symbol;
} tick;

#define BATCH_BYTES (sizeof(batch_header) + MAX_TICKS * sizeof(tick))

static const char* const kSymbols[SYMBOLS] = {"ACME", "GLOBEX", "INITECH", "UMBRELLA"};

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * SECOND_NS + ts.tv_nsec;
}

static double seconds_since(int64_t start_ns) {
  return (double)(now_ns() - start_ns) / 1e9;
}

/* The splitmix64 finaliser: deterministic pseudo-random numbers. */
static uint64_t mix(uint64_t x) {
  x += UINT64_C(0x9e3779b97f4a7c15);
  x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
  return x ^ (x >> 31);
}

/* FNV-1a 64, byte by byte, continuing from `h`. */
static uint64_t fnv1a64(uint64_t h, const unsigned char* p, size_t n) {
  size_t i;
  for (i = 0; i < n; ++i) h = (h ^ p[i]) * FNV_PRIME;
  return h;
}

static void print_summary(const char* who, uint64_t batches, uint64_t ticks, uint64_t bytes,
                          double seconds, uint64_t checksum) {
  printf("%s: batches=%" PRIu64 " ticks=%" PRIu64 " bytes=%" PRIu64
         " seconds=%.3f GB/s=%.3f checksum=%016" PRIx64 "\n",
         who, batches, ticks, bytes, seconds, seconds > 0 ? (double)bytes / seconds / 1e9 : 0.0,
         checksum);
  fflush(stdout);
}

/* ---- the producing side ------------------------------------------------ */

/* The feed's state: the last price of each symbol and the next tick number. */
typedef struct feed {
  int64_t price_e4[SYMBOLS];
  uint64_t next_tick;
} feed;

/* Writes batch `sequence` into `out` (BATCH_BYTES long); returns its length. */
static size_t write_batch(feed* f, unsigned char* out, uint64_t sequence) {
  batch_header h;
  uint32_t i;
  h.magic = BATCH_MAGIC;
  h.ticks = 64u + (uint32_t)(mix(sequence) % (MAX_TICKS - 63u));
  h.sequence = sequence;
  memcpy(out, &h, sizeof h);
  for (i = 0; i < h.ticks; ++i) {
    tick t;
    const uint64_t r = mix(f->next_tick ^ UINT64_C(0x7469636b));
    t.sequence = f->next_tick++;
    t.time_ns = now_ns();
    t.symbol = (uint32_t)(r % SYMBOLS);
    /* A random walk of at most a cent per tick, never below one unit. */
    f->price_e4[t.symbol] += (int64_t)((r >> 8) % 201u) - 100;
    if (f->price_e4[t.symbol] < 10000) f->price_e4[t.symbol] = 10000;
    t.price_e4 = f->price_e4[t.symbol];
    t.quantity = 1u + (uint32_t)((r >> 24) % 500u);
    memcpy(out + sizeof h + i * sizeof t, &t, sizeof t);
  }
  return sizeof h + h.ticks * sizeof(tick);
}

static int fail(const char* who, const char* what, uf_error e) {
  fprintf(stderr, "%s: %s: %s\n", who, what, uf_strerror(e));
  return 1;
}

/* Sends `batches` batches on `tx`; the checksum of all bytes sent goes to
 * `*checksum`. */
static int send_feed(uf_channel* tx, uint64_t batches, uint64_t* checksum) {
  feed f = {{1250000, 874500, 33100, 5012345}, 0};
  uint64_t bytes = 0;
  uint64_t b;
  const int64_t start = now_ns();
  *checksum = FNV_OFFSET;
  for (b = 0; b < batches; ++b) {
    uf_buf* buf = NULL;
    size_t n;
    uf_error e = uf_allocb(tx, BATCH_BYTES, 10 * SECOND_NS, &buf);
    if (e != UF_OK) return fail("producer", "uf_allocb", e);
    n = write_batch(&f, uf_data(buf), b);
    *checksum = fnv1a64(*checksum, uf_cdata(buf), n);
    e = uf_write(tx, buf, n, 10 * SECOND_NS);
    if (e != UF_OK) {
      uf_deallocate(buf); /* a failed write leaves the buffer with us */
      return fail("producer", "uf_write", e);
    }
    bytes += n;
  }
  print_summary("producer", batches, f.next_tick, bytes, seconds_since(start), *checksum);
  return 0;
}

/* ---- the consuming side ------------------------------------------------ */

/* Receives until the end of the stream, checking every tick; the checksum
 * of all bytes received goes to `*checksum`. */
static int receive_feed(uf_channel* rx, uint64_t* checksum) {
  double notional[SYMBOLS] = {0};
  double volume[SYMBOLS] = {0};
  uint64_t batches = 0;
  uint64_t next_tick = 0;
  uint64_t bytes = 0;
  int64_t start = 0;
  unsigned s;
  *checksum = FNV_OFFSET;
  for (;;) {
    uf_buf* view = NULL;
    batch_header h;
    const unsigned char* p;
    size_t n;
    uint32_t i;
    uf_error e = uf_get(rx, 30 * SECOND_NS, &view);
    if (e == UF_EPEERGONE) break; /* the end of the stream */
    if (e != UF_OK) return fail("consumer", "uf_get", e);
    if (batches == 0) start = now_ns();
    p = uf_cdata(view);
    n = uf_size(view);
    if (n < sizeof h) {
      fprintf(stderr, "consumer: batch %" PRIu64 " is only %zu bytes\n", batches, n);
      return 1;
    }
    memcpy(&h, p, sizeof h);
    if (h.magic != BATCH_MAGIC || h.sequence != batches || h.ticks > MAX_TICKS ||
        n != sizeof h + h.ticks * sizeof(tick)) {
      fprintf(stderr, "consumer: batch %" PRIu64 " is damaged or out of order (sequence %" PRIu64
              ", %u ticks, %zu bytes)\n", batches, h.sequence, h.ticks, n);
      return 1;
    }
    for (i = 0; i < h.ticks; ++i) {
      tick t;
      memcpy(&t, p + sizeof h + i * sizeof t, sizeof t);
      if (t.sequence != next_tick || t.symbol >= SYMBOLS) {
        fprintf(stderr, "consumer: expected tick %" PRIu64 ", got %" PRIu64 "\n", next_tick,
                t.sequence);
        return 1;
      }
      ++next_tick;
      notional[t.symbol] += (double)t.price_e4 / 1e4 * (double)t.quantity;
      volume[t.symbol] += (double)t.quantity;
    }
    *checksum = fnv1a64(*checksum, p, n);
    bytes += n;
    ++batches;
    uf_deallocate(view); /* back to the producer */
  }
  if (batches == 0) {
    fprintf(stderr, "consumer: the stream ended before any batch arrived\n");
    return 1;
  }
  for (s = 0; s < SYMBOLS; ++s) {
    printf("consumer: %-8s volume %10.0f  VWAP %10.4f\n", kSymbols[s], volume[s],
           volume[s] > 0 ? notional[s] / volume[s] : 0.0);
  }
  print_summary("consumer", batches, next_tick, bytes, seconds_since(start), *checksum);
  return 0;
}

/* ---- the three modes --------------------------------------------------- */

static int produce(const char* service, uint64_t batches, size_t receivers) {
  const uf_size_class classes[] = {{BATCH_BYTES, 32}};
  uf_pool* pool = NULL;
  uf_channel* tx = NULL;
  uint64_t checksum = 0;
  int rc;
  uf_error e = uf_pool_create("market-feed", classes, 1, UF_POLICY_VOLATILE, &pool);
  if (e != UF_OK) return fail("producer", "uf_pool_create", e);
  e = uf_channel_listen(pool, service, &tx);
  if (e != UF_OK) {
    uf_pool_destroy(pool);
    return fail("producer", "uf_channel_listen", e);
  }
  printf("producer: waiting for %zu consumer(s) on '%s'\n", receivers, service);
  fflush(stdout);
  e = uf_channel_wait_receivers(tx, receivers, 30 * SECOND_NS);
  rc = e == UF_OK ? send_feed(tx, batches, &checksum) : fail("producer", "waiting", e);
  uf_channel_close(tx); /* the consumers drain what was sent, then see the end */
  uf_pool_destroy(pool);
  return rc;
}

static int consume(const char* service) {
  uf_channel* rx = NULL;
  uint64_t checksum = 0;
  int rc;
  uf_error e = uf_channel_connect(service, 10 * SECOND_NS, &rx);
  if (e != UF_OK) return fail("consumer", "uf_channel_connect", e);
  rc = receive_feed(rx, &checksum);
  uf_channel_close(rx);
  return rc;
}

typedef struct consumer_thread {
  uf_channel* rx;
  uint64_t checksum;
  int rc;
} consumer_thread;

static void* consumer_main(void* arg) {
  consumer_thread* c = arg;
  c->rc = receive_feed(c->rx, &c->checksum);
  return NULL;
}

static int threads(uint64_t batches) {
  const uf_size_class classes[] = {{BATCH_BYTES, 32}};
  uf_pool* pool = NULL;
  uf_channel* tx = NULL;
  consumer_thread c = {NULL, 0, 1};
  pthread_t thread;
  uint64_t sent = 0;
  int rc;
  uf_error e = uf_pool_create("market-feed", classes, 1, UF_POLICY_VOLATILE, &pool);
  if (e != UF_OK) return fail("threads", "uf_pool_create", e);
  e = uf_channel_listen(pool, NULL, &tx);
  if (e != UF_OK) return fail("threads", "uf_channel_listen", e);
  e = uf_channel_connect_local(tx, &c.rx);
  if (e != UF_OK) return fail("threads", "uf_channel_connect_local", e);
  if (pthread_create(&thread, NULL, consumer_main, &c) != 0) {
    fprintf(stderr, "threads: pthread_create failed\n");
    return 1;
  }
  rc = send_feed(tx, batches, &sent);
  uf_channel_close(tx); /* the end of the stream for the consumer thread */
  pthread_join(thread, NULL);
  uf_channel_close(c.rx);
  uf_pool_destroy(pool);
  if (rc != 0 || c.rc != 0) return 1;
  if (sent != c.checksum) {
    fprintf(stderr, "threads: checksum mismatch: sent %016" PRIx64 ", received %016" PRIx64 "\n",
            sent, c.checksum);
    return 1;
  }
  printf("threads: checksums match\n");
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 4 && argc <= 5 && strcmp(argv[1], "produce") == 0) {
    const size_t receivers = argc == 5 ? (size_t)strtoul(argv[4], NULL, 10) : 1u;
    return produce(argv[2], strtoull(argv[3], NULL, 10), receivers);
  }
  if (argc == 3 && strcmp(argv[1], "consume") == 0) return consume(argv[2]);
  if (argc == 3 && strcmp(argv[1], "threads") == 0) return threads(strtoull(argv[2], NULL, 10));
  fprintf(stderr,
          "usage: fbuf_c_pipeline produce SERVICE BATCHES [RECEIVERS]\n"
          "       fbuf_c_pipeline consume SERVICE\n"
          "       fbuf_c_pipeline threads BATCHES\n");
  return 2;
}
