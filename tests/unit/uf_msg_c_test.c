/* The C API for aggregates, from C: a message of a header and a frame
 * built with uf_msg_*, split, joined, clipped, read in place, exported as
 * iovecs, sent as one unit to an in-process receiver and received whole;
 * uf_get leaves it for uf_msg_receive; the refusals leave every handle
 * with the caller. Exit status 0 when every check passes, 1 otherwise
 * (each failed check is printed). */
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

#include "fbuf/uf.h"

static int failures = 0;

#define CHECK(cond)                                                 \
  do {                                                              \
    if (!(cond)) {                                                  \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                   \
    }                                                               \
  } while (0)

static uf_buf* filled(uf_channel* tx, size_t n, char c) {
  uf_buf* b = NULL;
  if (uf_allocb(tx, n, 0, &b) != UF_OK) return NULL;
  memset(uf_data(b), c, n);
  return b;
}

int main(void) {
  uf_size_class classes[] = {{4096, 8}};
  uf_pool* pool = NULL;
  uf_channel* tx = NULL;
  uf_channel* rx = NULL;
  uf_msg* m = NULL;
  uf_msg* rest = NULL;
  uf_msg* got = NULL;
  uf_buf* h = NULL;
  uf_buf* f = NULL;
  uf_buf* v = NULL;
  struct iovec iov[4];
  char out[64];
  size_t len = 0;
  uint32_t free_count = 0, total = 0;
  struct uf_receiver_stats rs = {.size = sizeof rs};

  if (uf_pool_create("uf-c-msg", classes, 1, UF_POLICY_READ_ONLY, &pool) != UF_OK ||
      uf_channel_listen(pool, NULL, &tx) != UF_OK || uf_channel_connect_local(tx, &rx) != UF_OK) {
    fprintf(stderr, "setup failed\n");
    return 1;
  }

  /* Build: "HHHH" + "FFFFFFFF" (bytes 2..10 of a frame buffer). */
  CHECK(uf_msg_create(&m) == UF_OK);
  h = filled(tx, 4, 'H');
  f = filled(tx, 16, 'F');
  CHECK(h != NULL && f != NULL);
  CHECK(uf_msg_append(m, f, 4096, 1) == UF_EINVAL); /* outside the buffer: still ours */
  CHECK(uf_size(f) == 4096);
  CHECK(uf_msg_append(m, f, 2, 8) == UF_OK);
  CHECK(uf_msg_prepend(m, h, 0, 4) == UF_OK);
  CHECK(uf_msg_size(m) == 12 && uf_msg_slice_count(m) == 2);
  CHECK(uf_msg_append(m, h, 0, 1) == UF_EINVAL); /* consumed by the prepend */

  /* Split inside the frame, join back, clip. */
  CHECK(uf_msg_split(m, 6, &rest) == UF_OK);
  CHECK(uf_msg_size(m) == 6 && uf_msg_size(rest) == 6);
  CHECK(uf_msg_slice_count(m) == 2 && uf_msg_slice_count(rest) == 1);
  CHECK(uf_msg_join(m, rest) == UF_OK);
  CHECK(uf_msg_size(rest) == 0);
  uf_msg_free(rest);
  CHECK(uf_msg_slice_count(m) == 2);
  CHECK(uf_msg_copy_to(m, 0, out, sizeof out) == 12);
  CHECK(memcmp(out, "HHHHFFFFFFFF", 12) == 0);
  CHECK(uf_msg_copy_to(m, 10, out, sizeof out) == 2);
  CHECK(uf_msg_iovecs(m, iov, 1) == 0);
  CHECK(uf_msg_iovecs(m, iov, 4) == 2);
  CHECK(iov[0].iov_len == 4 && iov[1].iov_len == 8);
  CHECK(uf_msg_slice(m, 1, &len) == iov[1].iov_base && len == 8);
  CHECK(uf_msg_slice(m, 2, &len) == NULL && len == 0);
  CHECK(uf_msg_clip(m, 13, 0) == UF_EINVAL);
  CHECK(uf_msg_clip(m, 2, 8) == UF_OK);
  CHECK(uf_msg_copy_to(m, 0, out, sizeof out) == 8);
  CHECK(memcmp(out, "HHFFFFFF", 8) == 0);

  /* Send: all of it or nothing; the handle stays ours, empty. */
  CHECK(uf_msg_send(tx, m, 0) == UF_OK);
  CHECK(uf_msg_size(m) == 0);
  CHECK(uf_msg_send(tx, m, 0) == UF_EINVAL); /* empty */
  CHECK(uf_get(rx, 0, &v) == UF_EMSG);
  CHECK(uf_msg_receive(rx, 1000000000, &got) == UF_OK);
  CHECK(uf_msg_slice_count(got) == 2 && uf_msg_size(got) == 8);
  CHECK(uf_msg_copy_to(got, 0, out, sizeof out) == 8);
  CHECK(memcmp(out, "HHFFFFFF", 8) == 0);
  uf_msg_free(got);

  /* A view of the sender's own pool, received in this process: UF_ENOTSUP, kept. */
  CHECK(uf_write(tx, filled(tx, 4, 'V'), 4, 0) == UF_OK);
  CHECK(uf_get(rx, 0, &v) == UF_OK);
  CHECK(uf_msg_append(m, v, 0, uf_size(v)) == UF_OK);
  CHECK(uf_msg_send(tx, m, 0) == UF_ENOTSUP);
  CHECK(uf_msg_slice_count(m) == 1);
  CHECK(uf_msg_receive(rx, 0, &got) == UF_EAGAIN);

  CHECK(uf_receiver_stats(rx, &rs) == UF_OK);
  CHECK(rs.rejected_messages == 0 && rs.received == 3);
  CHECK(uf_msg_join(m, m) == UF_EINVAL);
  CHECK(uf_msg_create(NULL) == UF_EINVAL);
  uf_msg_free(m);
  uf_msg_free(NULL);

  uf_pool_counts(pool, &free_count, &total);
  CHECK(free_count == total);
  uf_channel_close(rx);
  uf_channel_close(tx);
  uf_pool_destroy(pool);
  if (failures != 0) fprintf(stderr, "%d checks failed\n", failures);
  else printf("all checks passed\n");
  return failures == 0 ? 0 : 1;
}
