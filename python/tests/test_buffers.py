"""Buffers and views: the buffer protocol sees the pool's memory (no copy),
and a released or still-exported handle raises instead of crashing."""

import ctypes
import gc
import io

import numpy as np
import pytest

import fbuf


@pytest.fixture
def channel(pool):
    tx = fbuf.Sender(pool)
    rx = tx.connect_local()
    yield tx, rx
    rx.close()
    tx.close()


def send_bytes(tx, payload):
    buf = tx.allocate(len(payload), timeout=1)
    buf.write(payload)
    tx.send(buf, timeout=1)


# ---- Pool ----------------------------------------------------------------

def test_pool_reports_its_geometry_rounded_to_pages():
    pool = fbuf.Pool("geometry", classes=[(100, 3), (5000, 2)], policy="copy_on_write")
    assert pool.name == "geometry"
    assert pool.policy == "copy_on_write"
    assert sorted(pool.classes) == [(4096, 3), (8192, 2)]
    assert pool.max_buffer_size == 8192
    st = pool.stats()
    assert (st.total, st.free, st.allocated, st.in_flight) == (5, 5, 0, 0)
    assert st._asdict()["total"] == 5


@pytest.mark.parametrize("policy", ["volatile", "read_only", "copy_on_write", "read-only"])
def test_every_policy_is_accepted_by_name(policy):
    assert fbuf.Pool("p", classes=[(4096, 1)], policy=policy).policy == policy.replace("-", "_")


def test_sealed_copies_send_a_copy_the_sender_cannot_reach():
    pool = fbuf.Pool("sealed", classes=[(4096, 2), (1 << 20, 1)], policy="read_only", sealed_copies=4096)
    assert pool.sealed_copy_size == 4096
    st = pool.stats()
    # Sealed slots are counted apart from the application's buffers.
    assert (st.total, st.free, st.sealed_total, st.sealed_free) == (3, 3, 2, 2)
    tx = fbuf.Sender(pool)
    rx = tx.connect_local()
    buf = tx.allocate(5, timeout=1)
    buf.write(b"hello")
    tx.send(buf, timeout=1)
    st = pool.stats()
    # The application's buffer is free again at once; the copy is in flight.
    assert (st.free, st.in_flight, st.sealed_in_flight, st.sealed_copies) == (3, 0, 1, 1)
    # The next allocation may reuse that buffer: writing it must not reach the receiver.
    again = tx.allocate(5, timeout=1)
    again.write(b"XXXXX")
    view = rx.receive(timeout=1)
    assert bytes(view) == b"hello"
    view.release()
    again.release()
    st = pool.stats()
    assert (st.free, st.sealed_free, st.sealed_in_flight) == (3, 2, 0)
    assert st._asdict()["sealed_copies"] == 1
    rx.close()
    tx.close()


def test_sealed_copies_can_be_turned_off():
    pool = fbuf.Pool("unsealed", classes=[(4096, 2)], policy="read_only", sealed_copies="never")
    assert pool.sealed_copy_size == 0
    assert pool.stats().sealed_total == 0
    assert fbuf.Pool("v", classes=[(4096, 2)]).stats().sealed_total == 0  # volatile: none
    with pytest.raises(ValueError, match="sealed_copies"):
        fbuf.Pool("p", classes=[(4096, 1)], policy="read_only", sealed_copies="sometimes")
    with pytest.raises(TypeError):
        fbuf.Pool("p", classes=[(4096, 1)], policy="read_only", sealed_copies=1.5)


def test_bad_pool_arguments_raise():
    with pytest.raises(ValueError, match="policy"):
        fbuf.Pool("p", classes=[(4096, 1)], policy="sticky")
    with pytest.raises(fbuf.InvalidArgument, match="no size classes"):
        fbuf.Pool("p", classes=[])
    with pytest.raises(fbuf.InvalidArgument):
        fbuf.Pool("p", classes=[(4096, 0)])
    with pytest.raises(TypeError):
        fbuf.Pool("p", classes=[(-1, 1)])


def test_a_class_is_a_reservation_and_exhaustion_raises(pool):
    held = [pool.try_allocate(10) for _ in range(8)]
    with pytest.raises(fbuf.WouldBlock):
        pool.try_allocate(10)  # the 1 MiB class is not borrowed from
    with pytest.raises(fbuf.TimedOut):
        pool.allocate(10, timeout=0.05)
    with pytest.raises(fbuf.TooLarge):
        pool.allocate(2 << 20, timeout=0)
    assert pool.stats().allocated == 8
    del held
    assert pool.stats().free == 10


# ---- zero copy -------------------------------------------------------------

def test_a_view_and_its_numpy_array_are_the_pool_memory_the_buffer_was_written_in(channel, pool):
    tx, rx = channel
    buf = tx.allocate(3000, timeout=1)
    written = np.frombuffer(buf, dtype=np.uint8)
    assert written.ctypes.data == buf.address
    written[:] = np.arange(3000) % 251
    buffer_map = fbuf.mapping_of(buf)
    buffer_file_offset = buf.address - buffer_map.start + buffer_map.offset
    index = buf.index
    del written
    tx.send(buf, timeout=1)

    view = rx.receive(timeout=1)
    assert view.index == index and len(view) == 3000
    array = np.frombuffer(view, dtype=np.uint8)
    assert array.ctypes.data == view.address  # numpy did not copy
    assert not array.flags.writeable
    view_map = fbuf.mapping_of(array)
    # The kernel's word for it: both addresses lie in mappings of the
    # pool's memfd, at the same offset in that file; the receiver's is
    # read-only and shared.
    assert view_map.path.startswith(f"/memfd:fbuf:{pool.name}")
    assert view_map.path == buffer_map.path
    assert view_map.perms == "r--s"
    assert view.address - view_map.start + view_map.offset == buffer_file_offset
    assert view_map.start <= array.ctypes.data and array.ctypes.data + 3000 <= view_map.end
    assert np.array_equal(array, np.arange(3000) % 251)
    del array
    view.release()


def test_memoryviews_are_writable_on_a_buffer_and_read_only_on_a_view(channel):
    tx, rx = channel
    buf = tx.allocate(16, timeout=1)
    with memoryview(buf) as mv:
        assert not mv.readonly and mv.nbytes == 16
        mv[:5] = b"hello"
    tx.send(buf, length=5, timeout=1)
    view = rx.receive(timeout=1)
    with memoryview(view) as mv:
        assert mv.readonly
        assert mv.tobytes() == b"hello"
        with pytest.raises(TypeError):
            mv[0] = 0
    assert view.tobytes() == b"hello" and bytes(view) == b"hello"
    with pytest.raises(ValueError):
        np.frombuffer(view, dtype=np.uint8).setflags(write=True)
    # Consumers that need to write are refused (ctypes sees readonly;
    # readinto asks for a writable export).
    with pytest.raises(TypeError, match="not writable"):
        (ctypes.c_char * 5).from_buffer(view)
    with pytest.raises(TypeError):
        io.BytesIO(b"12345").readinto(view)
    assert bytes(view) == b"hello"
    assert view.exports == 0
    view.release()


def test_send_length_defaults_to_the_size_asked_for_and_may_be_shorter(channel):
    tx, rx = channel
    buf = tx.allocate(100, timeout=1)
    assert len(buf) == 100 and buf.capacity == 4096
    tx.send(buf, timeout=1)
    with rx.receive(timeout=1) as view:
        assert len(view) == 100
    buf = tx.allocate(100, timeout=1)
    tx.send(buf, length=7, timeout=1)
    with rx.receive(timeout=1) as view:
        assert view.size == 7


def test_a_length_beyond_the_capacity_fails_and_the_buffer_stays_yours(channel):
    tx, rx = channel
    buf = tx.allocate(100, timeout=1)
    with pytest.raises(fbuf.InvalidArgument):
        tx.send(buf, length=4097, timeout=1)
    assert not buf.released
    buf.write(b"still mine")
    tx.send(buf, length=10, timeout=1)
    with rx.receive(timeout=1) as view:
        assert view.tobytes() == b"still mine"


def test_write_copies_in_at_an_offset_and_checks_the_bounds(pool):
    buf = pool.allocate(8, timeout=1)
    assert buf.write(b"abc", offset=2) == 3
    assert bytes(buf)[2:5] == b"abc"
    with pytest.raises(ValueError):
        buf.write(b"123456789")
    with pytest.raises(ValueError):
        buf.write(b"ab", offset=7)
    assert buf.write(np.arange(2, dtype=np.uint16)) == 4  # any contiguous buffer, as bytes
    assert bytes(buf)[:4] == b"\x00\x00\x01\x00"
    with pytest.raises((BufferError, ValueError)):
        buf.write(np.arange(4, dtype=np.uint8)[::-1])  # not contiguous: refused, not misread
    assert buf.exports == 0


# ---- released and exported handles ------------------------------------------

def test_every_use_of_a_released_view_raises_closed(channel):
    tx, rx = channel
    send_bytes(tx, b"x" * 64)
    view = rx.receive(timeout=1)
    view.release()
    assert view.released and not view
    for use in (lambda: memoryview(view), lambda: np.frombuffer(view, dtype=np.uint8),
                lambda: bytes(view), lambda: len(view), lambda: view.size,
                lambda: view.address, lambda: view.index, view.tobytes):
        with pytest.raises(fbuf.Closed, match="released"):
            use()
    view.release()  # a second release does nothing, as memoryview's
    assert "released" in repr(view)


def test_a_view_refuses_release_while_an_array_exports_it_and_stays_readable(channel, pool):
    tx, rx = channel
    send_bytes(tx, bytes(range(200)))
    view = rx.receive(timeout=1)
    array = np.frombuffer(view, dtype=np.uint8)
    tail = array[100:]  # a derived array keeps the export alive too
    del array
    assert view.exports == 1
    with pytest.raises(BufferError, match="still export"):
        view.release()
    with pytest.raises(BufferError):
        with view:
            pass
    assert not view.released
    assert pool.stats().in_flight == 1  # nothing went back under the array
    assert tail[0] == 100 and tail[-1] == 199
    del tail
    assert view.exports == 0
    view.release()
    assert pool.stats().free == 10


def test_a_memoryview_keeps_a_dropped_view_alive_until_it_is_released(channel, pool):
    tx, rx = channel
    send_bytes(tx, b"kept alive")
    mv = memoryview(rx.receive(timeout=1))  # the View object itself is dropped
    gc.collect()
    assert pool.stats().in_flight == 1
    assert mv.tobytes() == b"kept alive"
    mv.release()  # the last reference: the view goes back
    assert pool.stats().free == 10


def test_leaving_a_with_block_returns_the_view(channel, pool):
    tx, rx = channel
    send_bytes(tx, b"abc")
    with rx.receive(timeout=1) as view:
        assert pool.stats().in_flight == 1
        assert bytes(view) == b"abc"
    assert view.released
    assert pool.stats().free == 10


def test_a_dropped_view_goes_back_to_the_pool(channel, pool):
    tx, rx = channel
    send_bytes(tx, b"abc")
    view = rx.receive(timeout=1)
    assert pool.stats().in_flight == 1
    del view
    assert pool.stats().free == 10


def test_a_buffer_refuses_send_and_release_while_exported(channel, pool):
    tx, rx = channel
    buf = tx.allocate(32, timeout=1)
    array = np.frombuffer(buf, dtype=np.uint8)
    array[:] = 9
    with pytest.raises(BufferError, match="still export"):
        tx.send(buf, timeout=1)
    with pytest.raises(BufferError):
        buf.release()
    assert not buf.released and pool.stats().allocated == 1
    del array
    tx.send(buf, timeout=1)
    with rx.receive(timeout=1) as view:
        assert bytes(view) == b"\x09" * 32


def test_every_use_of_a_sent_or_released_buffer_raises_closed(channel, pool):
    tx, rx = channel
    sent = tx.allocate(10, timeout=1)
    tx.send(sent, timeout=1)
    released = tx.allocate(10, timeout=1)
    released.release()
    for buf in (sent, released):
        assert buf.released
        for use in (lambda: memoryview(buf), lambda: np.frombuffer(buf, dtype=np.uint8),
                    lambda: len(buf), lambda: buf.address, lambda: buf.write(b"x"),
                    lambda: tx.send(buf, timeout=1)):
            with pytest.raises(fbuf.Closed):
                use()
        buf.release()  # nothing
    assert pool.stats().free == 9  # one view waits in the receiver's ring
    rx.receive(timeout=1).release()
    assert pool.stats().free == 10


def test_an_unsent_buffer_goes_back_when_dropped_or_at_the_end_of_with(pool):
    with pool.allocate(10, timeout=1) as buf:
        assert pool.stats().allocated == 1
    assert buf.released and pool.stats().free == 10
    buf = pool.allocate(10, timeout=1)
    del buf
    assert pool.stats().free == 10


def test_views_and_buffers_cannot_be_made_from_python():
    with pytest.raises(TypeError):
        fbuf.View()
    with pytest.raises(TypeError):
        fbuf.Buffer()


# ---- senders and receivers ----------------------------------------------------

def test_iteration_yields_every_view_then_stops_at_the_end_of_the_stream(pool):
    tx = fbuf.Sender(pool)
    rx = tx.connect_local()
    for i in range(5):
        send_bytes(tx, bytes([i]) * 10)
    tx.close()
    got = []
    for view in rx:
        with view:
            got.append(bytes(view)[0])
    assert got == [0, 1, 2, 3, 4]
    with pytest.raises(fbuf.PeerGone):
        rx.receive(timeout=1)
    assert rx.stats().received == 5


def test_views_outlive_their_receiver_and_sender(pool):
    tx = fbuf.Sender(pool)
    rx = tx.connect_local()
    send_bytes(tx, b"survivor")
    view = rx.receive(timeout=1)
    rx.close()
    tx.close()
    assert bytes(view) == b"survivor"
    view.release()
    assert pool.stats().free == 10


def test_closed_senders_and_receivers_raise_closed(pool):
    with fbuf.Sender(pool) as tx:
        rx = tx.connect_local()
        with rx:
            pass
        assert rx.closed
        for use in (rx.try_receive, lambda: rx.receive(0), rx.stats, lambda: next(iter(rx))):
            with pytest.raises(fbuf.Closed):
                use()
    assert tx.closed
    for use in (lambda: tx.allocate(1), lambda: tx.try_allocate(1), tx.connect_local, tx.stats,
                lambda: tx.wait_for_receivers(1, 0)):
        with pytest.raises(fbuf.Closed):
            use()
    buf = pool.allocate(10, timeout=1)
    with pytest.raises(fbuf.Closed):
        tx.send(buf, timeout=1)
    assert not buf.released  # still the caller's


def test_sender_and_receiver_stats_count_what_moved(channel):
    tx, rx = channel
    for _ in range(3):
        send_bytes(tx, b"s")
    for _ in range(3):
        rx.receive(timeout=1).release()
    s = tx.stats()
    assert (s.sent, s.delivered, s.receivers_connected) == (3, 3, 1)
    r = rx.stats()
    assert r.received == 3
    assert "sent=3" in repr(s)
    assert tx.receiver_count == 1 and tx.service == ""
    assert isinstance(tx.pool, fbuf.Pool)


def test_send_many_sends_a_batch_all_or_nothing(channel, pool):
    tx, rx = channel
    batch = [tx.allocate(10, timeout=1) for _ in range(3)]
    for i, buf in enumerate(batch):
        buf.write(bytes([i]) * 10)
    exported = memoryview(batch[1])
    with pytest.raises(BufferError):
        tx.send_many(batch, timeout=1)
    exported.release()
    with pytest.raises(ValueError, match="twice"):
        tx.send_many([batch[0], batch[0]], timeout=1)
    with pytest.raises(fbuf.InvalidArgument):
        tx.send_many(batch, lengths=[1, 5000, 1], timeout=1)
    assert not any(b.released for b in batch)  # all still ours
    tx.send_many(batch, lengths=[1, 2, 3], timeout=1)
    assert all(b.released for b in batch)
    got = []
    for _ in range(3):
        with rx.receive(timeout=1) as view:
            got.append(bytes(view))
    assert got == [b"\x00", b"\x01\x01", b"\x02\x02\x02"]
    assert pool.stats().free == 10


def test_send_many_refuses_none_and_bad_timeouts_leaving_everything_yours(channel):
    tx, rx = channel
    buf = tx.allocate(4, timeout=1)
    with pytest.raises(TypeError):
        tx.send_many([buf, None], timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        tx.send_many([buf], timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        tx.send(buf, timeout=-1)
    assert not buf.released and buf.exports == 0
    tx.send(buf, timeout=1)
    rx.receive(timeout=1).release()
