/* The C API's counters, from C: the stats structs and calls compile as C11
 * and report what the library counted. Exit status 0 when every check
 * passes, 1 otherwise (each failed check is printed). */
#include <stdio.h>
#include <string.h>

#include "fbuf/uf.h"

static int failures = 0;

#define CHECK(cond)                                                 \
  do {                                                              \
    if (!(cond)) {                                                  \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                   \
    }                                                               \
  } while (0)

/* uf_pool_create_with: the choice of sealed copies shows in the counters
 * (NEVER: the sent buffer itself is in flight; UP_TO: a sealed copy is,
 * and the buffer is free again at once), and bad options are refused. */
static void check_pool_options(void) {
  uf_size_class cls[] = {{4096, 4}};
  struct uf_pool_options o = {.size = sizeof o, .policy = UF_POLICY_READ_ONLY};
  struct uf_pool_stats ps = {.size = sizeof ps};
  uf_pool* pool = NULL;
  uf_channel* tx = NULL;
  uf_channel* rx = NULL;
  uf_buf* b = NULL;
  uf_buf* got = NULL;
  int sealed;

  for (sealed = 0; sealed < 2; ++sealed) {
    o.sealed_copies = sealed ? UF_SEALED_UP_TO : UF_SEALED_NEVER;
    o.sealed_copy_limit = sealed ? 4096 : 0;
    if (uf_pool_create_with("uf-c-options", cls, 1, &o, &pool) != UF_OK ||
        uf_channel_listen(pool, NULL, &tx) != UF_OK || uf_channel_connect_local(tx, &rx) != UF_OK) {
      CHECK(!"pool with options set up");
      return;
    }
    CHECK(uf_allocb(tx, 64, 0, &b) == UF_OK);
    memset(uf_data(b), 'o', 64);
    CHECK(uf_write(tx, b, 64, 0) == UF_OK);
    CHECK(uf_get(rx, 0, &got) == UF_OK);
    CHECK(uf_pool_stats(pool, &ps) == UF_OK);
    if (sealed) {
      CHECK(ps.sealed_total == 4 && ps.sealed_copies == 1 && ps.sealed_in_flight == 1);
      CHECK(ps.in_flight == 0 && ps.free == 4);
    } else {
      CHECK(ps.sealed_total == 0 && ps.sealed_copies == 0);
      CHECK(ps.in_flight == 1 && ps.free == 3);
    }
    CHECK(((const char*)uf_cdata(got))[63] == 'o');
    uf_deallocate(got);
    uf_channel_close(rx);
    uf_channel_close(tx);
    uf_pool_destroy(pool);
  }

  o.size = sizeof o - 1;
  CHECK(uf_pool_create_with("bad", cls, 1, &o, &pool) == UF_EINVAL);
  o.size = sizeof o;
  o.policy = (uf_policy)7;
  CHECK(uf_pool_create_with("bad", cls, 1, &o, &pool) == UF_EINVAL);
  o.policy = UF_POLICY_COPY_ON_WRITE;
  o.sealed_copies = (uf_sealed_copies)9;
  CHECK(uf_pool_create_with("bad", cls, 1, &o, &pool) == UF_EINVAL);
  CHECK(uf_pool_create_with("bad", cls, 1, NULL, &pool) == UF_EINVAL);
}

int main(void) {
  uf_size_class classes[] = {{4096, 4}};
  uf_pool* pool = NULL;
  uf_channel* tx = NULL;
  uf_channel* rx = NULL;
  uf_buf* b = NULL;
  uf_buf* got = NULL;
  struct uf_pool_stats ps = {.size = sizeof ps};
  struct uf_sender_stats ss = {.size = sizeof ss};
  struct uf_receiver_stats rs = {.size = sizeof rs};
  int i;

  if (uf_pool_create("uf-c-stats", classes, 1, UF_POLICY_READ_ONLY, &pool) != UF_OK ||
      uf_channel_listen(pool, NULL, &tx) != UF_OK || uf_channel_connect_local(tx, &rx) != UF_OK) {
    fprintf(stderr, "setup failed\n");
    return 1;
  }
  for (i = 0; i < 3; ++i) {
    CHECK(uf_allocb(tx, 100, 0, &b) == UF_OK);
    memset(uf_data(b), 'x', 100);
    CHECK(uf_write(tx, b, 100, 0) == UF_OK);
  }
  CHECK(uf_get(rx, 0, &got) == UF_OK);
  CHECK(uf_size(got) == 100);
  uf_deallocate(got);

  CHECK(uf_pool_stats(pool, &ps) == UF_OK);
  CHECK(ps.size == sizeof ps);
  /* Two buffers held by the receiver: sent by protection (in_flight) or,
   * where the pool chose sealed copies for the class, as sealed copies. */
  CHECK(ps.total == 4 && ps.free + ps.in_flight == 4 && ps.allocated == 0);
  CHECK(ps.in_flight + ps.sealed_in_flight == 2);
  CHECK(ps.sealed_copies == (ps.in_flight == 0 ? 3u : 0u));
  CHECK(ps.sealed_free + ps.sealed_in_flight == ps.sealed_total);
  CHECK(ps.rejected_returns == 0);

  CHECK(uf_sender_stats(tx, &ss) == UF_OK);
  CHECK(ss.sent == 3 && ss.delivered == 3 && ss.returned == 0);
  CHECK(ss.receivers_connected == 1 && ss.receivers_lost == 0);
  CHECK(ss.dropped == 0 && ss.receivers_cut_off == 0);
  CHECK(uf_sender_stats(rx, &ss) == UF_EINVAL);

  CHECK(uf_receiver_stats(rx, &rs) == UF_OK);
  /* `returned` counts returns through a ring: remote receivers only. */
  CHECK(rs.received == 1 && rs.rejected_descriptors == 0 && rs.dropped == 0);
  CHECK(uf_receiver_stats(tx, &rs) == UF_EINVAL);

  ps.size = 0;
  CHECK(uf_pool_stats(pool, &ps) == UF_EINVAL);

  uf_channel_close(rx);
  uf_channel_close(tx);
  CHECK(uf_channel_listen(pool, "", &tx) == UF_EINVAL);
  uf_pool_destroy(pool);
  check_pool_options();
  if (failures == 0) printf("all checks passed\n");
  return failures == 0 ? 0 : 1;
}
