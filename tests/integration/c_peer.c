/* fbuf_it_c_peer: the C peer program of the integration tests, written
 * against the C API (fbuf/uf.h) only.
 *
 *   fbuf_it_c_peer produce SERVICE COUNT   send COUNT frames to one receiver,
 *                                          check that every buffer came back,
 *                                          then close the channel
 *   fbuf_it_c_peer consume SERVICE COUNT   verify COUNT frames in order, then
 *                                          the end of the stream
 *
 * Frames are those of test_frame.h, so a C peer can talk to a C++ one.
 * Exit status: 0 all checks passed, 1 a check failed, 2 bad usage or setup.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fbuf/uf.h"
#include "test_frame.h"

#define SECOND_NS INT64_C(1000000000)

static const uf_size_class kClasses[] = {{65536, 16}, {4096, 128}};
#define CLASS_COUNT (sizeof kClasses / sizeof kClasses[0])

static int fail(const char* what, uf_error e) {
  fprintf(stderr, "error: %s: %s\n", what, uf_strerror(e));
  return 1;
}

/* Allocates every buffer of the pool (largest class first), waiting for
 * buffers still out with the receiver, then gives them all back. */
static int check_all_buffers_return(uf_pool* pool) {
  uf_buf* held[256];
  size_t n = 0;
  size_t c;
  size_t i;
  uint32_t free_count = 0;
  uint32_t total = 0;
  int ok = 1;
  for (c = 0; c < CLASS_COUNT && ok; ++c) {
    uint32_t k;
    for (k = 0; k < kClasses[c].count; ++k) {
      uf_error e = uf_allocate(pool, kClasses[c].buffer_size, 60 * SECOND_NS, &held[n]);
      if (e != UF_OK) {
        fprintf(stderr, "error: only %zu buffers came back: uf_allocate(%zu): %s\n", n,
                kClasses[c].buffer_size, uf_strerror(e));
        ok = 0;
        break;
      }
      ++n;
    }
  }
  if (ok) {
    uf_pool_counts(pool, &free_count, &total);
    if (free_count != 0 || total != n) {
      fprintf(stderr, "error: holding all %zu buffers, uf_pool_counts says free=%u total=%u\n",
              n, free_count, total);
      ok = 0;
    }
  }
  for (i = 0; i < n; ++i) uf_deallocate(held[i]);
  if (ok) {
    uf_pool_counts(pool, &free_count, &total);
    if (free_count != total) {
      fprintf(stderr, "error: after releasing everything free=%u total=%u\n", free_count, total);
      ok = 0;
    }
  }
  return ok;
}

static int produce(const char* service, uint64_t count) {
  uf_pool* pool = NULL;
  uf_channel* tx = NULL;
  uint64_t checksum = TF_FNV_OFFSET;
  uint64_t bytes = 0;
  uint64_t seq;
  uf_error e = uf_pool_create("it-c-producer", kClasses, CLASS_COUNT, UF_POLICY_VOLATILE, &pool);
  if (e != UF_OK) return fail("uf_pool_create", e);
  e = uf_channel_listen(pool, service, &tx);
  if (e != UF_OK) return fail("uf_channel_listen", e);
  printf("listening on %s\n", service);
  fflush(stdout);
  e = uf_channel_wait_receivers(tx, 1, 30 * SECOND_NS);
  if (e != UF_OK) return fail("uf_channel_wait_receivers", e);

  for (seq = 0; seq < count; ++seq) {
    const size_t payload = tf_mixed_payload_size(seq, 65536);
    uf_buf* buf = NULL;
    unsigned char* p;
    e = uf_allocb(tx, TF_HEADER_SIZE + payload, 20 * SECOND_NS, &buf);
    if (e != UF_OK) return fail("uf_allocb", e);
    p = uf_data(buf);
    if (p == NULL || uf_size(buf) < TF_HEADER_SIZE + payload) {
      fprintf(stderr, "error: uf_allocb gave %zu bytes at %p for a %zu-byte frame\n",
              uf_size(buf), (void*)p, TF_HEADER_SIZE + payload);
      return 1;
    }
    checksum = tf_stream_add(checksum, tf_write(p, seq, payload));
    bytes += TF_HEADER_SIZE + payload;
    e = uf_write(tx, buf, TF_HEADER_SIZE + payload, 20 * SECOND_NS);
    if (e != UF_OK) {
      uf_deallocate(buf); /* still ours after a failed write */
      fprintf(stderr, "error: uf_write of frame %" PRIu64 ": %s\n", seq, uf_strerror(e));
      return 1;
    }
  }
  printf("sent frames=%" PRIu64 "\n", count);
  fflush(stdout);
  if (!check_all_buffers_return(pool)) return 1;
  /* Closing the channel ends the stream for the receiver. */
  uf_channel_close(tx);
  uf_pool_destroy(pool);
  printf("c-produce ok frames=%" PRIu64 " bytes=%" PRIu64 " checksum=%016" PRIx64 "\n", count,
         bytes, checksum);
  return 0;
}

static int consume(const char* service, uint64_t count) {
  uf_channel* rx = NULL;
  uint64_t checksum = TF_FNV_OFFSET;
  uint64_t bytes = 0;
  uint64_t expected = 0;
  uf_buf* view = NULL;
  uf_error e = uf_channel_connect(service, 20 * SECOND_NS, &rx);
  if (e != UF_OK) return fail("uf_channel_connect", e);
  printf("connected to %s\n", service);
  fflush(stdout);

  while (expected < count) {
    tf_header h;
    int status;
    const unsigned char* p;
    e = uf_get(rx, 20 * SECOND_NS, &view);
    if (e != UF_OK) {
      fprintf(stderr, "error: uf_get for frame %" PRIu64 " of %" PRIu64 ": %s\n", expected, count,
              uf_strerror(e));
      return 1;
    }
    if (uf_data(view) != NULL) {
      fprintf(stderr, "error: uf_data() of a received view is not NULL\n");
      return 1;
    }
    p = uf_cdata(view);
    status = tf_check(p, uf_size(view), expected, &h);
    if (status != TF_OK) {
      fprintf(stderr, "error: frame %" PRIu64 ": %s (got sequence %" PRIu64 ", %zu bytes)\n",
              expected, tf_status_text(status), h.sequence, uf_size(view));
      return 1;
    }
    checksum = tf_stream_add(checksum, h.checksum);
    bytes += uf_size(view);
    ++expected;
    uf_deallocate(view);
  }
  e = uf_get(rx, 60 * SECOND_NS, &view);
  if (e == UF_OK) {
    fprintf(stderr, "error: an extra buffer arrived after frame %" PRIu64 "\n", count);
    uf_deallocate(view);
    return 1;
  }
  if (e != UF_EPEERGONE) return fail("uf_get after the last frame (expected UF_EPEERGONE)", e);
  uf_channel_close(rx);
  printf("c-consume ok frames=%" PRIu64 " bytes=%" PRIu64 " checksum=%016" PRIx64 "\n", expected,
         bytes, checksum);
  return 0;
}

/* The path: forwards `count` views received from `from` to the receivers
 * of `to` with uf_forward, each view released after it went on. */
static int forward(const char* from, const char* to, uint64_t count) {
  uf_pool* pool = NULL;
  uf_channel* rx = NULL;
  uf_channel* tx = NULL;
  uint64_t n;
  uf_error e = uf_pool_create("it-c-stage", kClasses, CLASS_COUNT, UF_POLICY_VOLATILE, &pool);
  if (e != UF_OK) return fail("uf_pool_create", e);
  e = uf_channel_listen(pool, to, &tx);
  if (e != UF_OK) return fail("uf_channel_listen", e);
  e = uf_channel_connect(from, 20 * SECOND_NS, &rx);
  if (e != UF_OK) return fail("uf_channel_connect", e);
  e = uf_channel_wait_receivers(tx, 1, 30 * SECOND_NS);
  if (e != UF_OK) return fail("uf_channel_wait_receivers", e);
  printf("forwarding\n");
  fflush(stdout);
  for (n = 0; n < count; ++n) {
    uf_buf* view = NULL;
    e = uf_get(rx, 20 * SECOND_NS, &view);
    if (e != UF_OK) return fail("uf_get", e);
    e = uf_forward(tx, view, 20 * SECOND_NS);
    if (e != UF_OK) return fail("uf_forward", e);
    /* An owned buffer cannot be forwarded: it is sent with uf_write. */
    uf_deallocate(view);
  }
  uf_channel_close(rx);
  uf_channel_close(tx);
  uf_pool_destroy(pool);
  printf("c-forward ok frames=%" PRIu64 "\n", count);
  return 0;
}

/* The path in a message: each view received from `from` goes on to `to`
 * as one uf_msg of a 64-byte header from this stage's pool (the format of
 * path_peer.cc's --header: magic "pathhdr1", sequence, frame bytes) and the
 * view itself, forwarded by uf_msg_send. */
static int msgforward(const char* from, const char* to, uint64_t count) {
  static const uint64_t kMagic = UINT64_C(0x7061746868647231);
  uf_pool* pool = NULL;
  uf_channel* rx = NULL;
  uf_channel* tx = NULL;
  uf_msg* m = NULL;
  uint64_t n;
  uf_error e = uf_pool_create("it-c-tagger", kClasses, CLASS_COUNT, UF_POLICY_READ_ONLY, &pool);
  if (e != UF_OK) return fail("uf_pool_create", e);
  e = uf_channel_listen(pool, to, &tx);
  if (e != UF_OK) return fail("uf_channel_listen", e);
  e = uf_channel_connect(from, 20 * SECOND_NS, &rx);
  if (e != UF_OK) return fail("uf_channel_connect", e);
  e = uf_channel_wait_receivers(tx, 1, 30 * SECOND_NS);
  if (e != UF_OK) return fail("uf_channel_wait_receivers", e);
  e = uf_msg_create(&m);
  if (e != UF_OK) return fail("uf_msg_create", e);
  printf("forwarding\n");
  fflush(stdout);
  for (n = 0; n < count; ++n) {
    uf_buf* view = NULL;
    uf_buf* header = NULL;
    uint64_t bytes;
    e = uf_get(rx, 20 * SECOND_NS, &view);
    if (e != UF_OK) return fail("uf_get", e);
    bytes = uf_size(view);
    e = uf_allocate(pool, 64, 20 * SECOND_NS, &header);
    if (e != UF_OK) return fail("uf_allocate", e);
    memset(uf_data(header), 0, 64);
    memcpy(uf_data(header), &kMagic, 8);
    memcpy((char*)uf_data(header) + 8, &n, 8);
    memcpy((char*)uf_data(header) + 16, &bytes, 8);
    e = uf_msg_append(m, header, 0, 64);
    if (e != UF_OK) return fail("uf_msg_append(header)", e);
    e = uf_msg_append(m, view, 0, (size_t)bytes);
    if (e != UF_OK) return fail("uf_msg_append(view)", e);
    e = uf_msg_send(tx, m, 20 * SECOND_NS);
    if (e != UF_OK) return fail("uf_msg_send", e);
  }
  uf_msg_free(m);
  uf_channel_close(rx);
  uf_channel_close(tx);
  uf_pool_destroy(pool);
  printf("c-msgforward ok frames=%" PRIu64 "\n", count);
  return 0;
}

int main(int argc, char** argv) {
  uint64_t count;
  if (argc == 5 && strcmp(argv[1], "forward") == 0) return forward(argv[2], argv[3], strtoull(argv[4], NULL, 10));
  if (argc == 5 && strcmp(argv[1], "msgforward") == 0)
    return msgforward(argv[2], argv[3], strtoull(argv[4], NULL, 10));
  if (argc != 4) {
    fprintf(stderr, "usage: fbuf_it_c_peer produce|consume SERVICE COUNT | forward|msgforward FROM TO COUNT\n");
    return 2;
  }
  count = strtoull(argv[3], NULL, 10);
  if (strcmp(argv[1], "produce") == 0) return produce(argv[2], count);
  if (strcmp(argv[1], "consume") == 0) return consume(argv[2], count);
  fprintf(stderr, "unknown mode '%s'\n", argv[1]);
  return 2;
}
