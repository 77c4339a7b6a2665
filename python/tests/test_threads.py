"""Threads of one process: the GIL is released while a call waits, so other
Python threads run; producer and consumer threads hand buffers over.

CTest runs this file with FBUF_TEST_UNSLICED_SLEEP=1: neither the library
nor the binding cuts waits into slices, so a lost wake-up makes the wake-up
test wait its whole timeout and fail, instead of being rescued by a slice.
"""

import os
import threading
import time

import numpy as np
import pytest

import fbuf


class Spinner:
    """A thread that counts as fast as it can while it holds the GIL."""

    def __init__(self):
        self.count = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        while not self.stop:
            self.count += 1

    def __enter__(self):
        self.thread.start()
        while self.count == 0:
            time.sleep(0.001)
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()


def counted_while(call):
    """How far the spinner counted while `call()` ran in this thread. A call
    that kept the GIL while it waited leaves it near 0."""
    with Spinner() as spinner:
        before = spinner.count
        call()
        return spinner.count - before


@pytest.fixture
def channel(pool):
    tx = fbuf.Sender(pool, ring_capacity=2)
    rx = tx.connect_local()
    yield tx, rx
    rx.close()
    tx.close()


def test_the_unsliced_hook_is_on():
    assert os.environ.get("FBUF_TEST_UNSLICED_SLEEP") == "1", "run through CTest (python.threads)"


def test_receive_releases_the_gil_while_it_waits(channel):
    _, rx = channel

    def wait():
        with pytest.raises(fbuf.TimedOut):
            rx.receive(timeout=0.5)

    # A thread that counts in pure Python reaches millions in 0.5 s; with
    # the GIL held by the waiting call it could not count at all.
    assert counted_while(wait) > 10000


def test_allocate_and_send_release_the_gil_while_they_wait(channel, pool):
    tx, rx = channel
    held = [pool.allocate(10, timeout=1) for _ in range(8)]

    def allocate():
        with pytest.raises(fbuf.TimedOut):
            pool.allocate(10, timeout=0.5)

    assert counted_while(allocate) > 10000
    tx.send(held.pop(), timeout=1)
    tx.send(held.pop(), timeout=1)  # the ring (2) is full now
    blocked = held.pop()

    def send():
        with pytest.raises(fbuf.TimedOut):
            tx.send(blocked, timeout=0.5)

    assert counted_while(send) > 10000
    assert not blocked.released  # a send that timed out leaves it with the caller

    def wait_for_receivers():
        assert not tx.wait_for_receivers(2, timeout=0.5)

    assert counted_while(wait_for_receivers) > 10000
    del held, blocked
    rx.receive(timeout=1).release()
    rx.receive(timeout=1).release()


def test_a_send_wakes_a_receiver_waiting_in_another_thread_at_once(channel):
    tx, rx = channel
    got = {}

    def consumer():
        start = time.monotonic()
        with rx.receive(timeout=5) as view:
            got["bytes"] = bytes(view)
        got["waited"] = time.monotonic() - start

    thread = threading.Thread(target=consumer)
    thread.start()
    time.sleep(0.2)  # the consumer is asleep in receive by now
    buf = tx.allocate(4, timeout=1)
    buf.write(b"wake")
    sent_at = time.monotonic()
    tx.send(buf, timeout=1)
    thread.join()
    assert got["bytes"] == b"wake"
    # Against a 5 s timeout and no slicing: a lost wake-up fails here.
    assert got["waited"] < 2.0
    assert time.monotonic() - sent_at < 1.0


def test_a_producer_thread_and_a_consumer_thread_hand_over_every_buffer_in_order(pool):
    count = 3000
    tx = fbuf.Sender(pool, ring_capacity=4)  # small: both sides block often
    rx = tx.connect_local()
    errors = []

    def producer():
        try:
            for i in range(count):
                buf = tx.allocate(8, timeout=10)
                np.frombuffer(buf, dtype=np.uint64)[0] = i  # the array dies at once
                tx.send(buf, timeout=10)
        except Exception as e:  # noqa: BLE001 -- reported by the main thread
            errors.append(e)
        finally:
            tx.close()

    received = []

    def consumer():
        try:
            for view in rx:
                with view:
                    a = np.frombuffer(view, dtype=np.uint64)
                    received.append(int(a[0]))
                    del a
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert received == list(range(count))
    assert pool.stats().free == pool.stats().total


def test_fan_out_to_two_consumer_threads(pool):
    count = 500
    tx = fbuf.Sender(pool)
    receivers = [tx.connect_local(), tx.connect_local()]
    results = [[], []]

    def consume(rx, out):
        for view in rx:
            with view:
                out.append(bytes(view))

    threads = [threading.Thread(target=consume, args=(rx, out)) for rx, out in zip(receivers, results)]
    for t in threads:
        t.start()
    for i in range(count):
        buf = tx.allocate(6, timeout=10)
        buf.write(b"%06d" % i)
        tx.send(buf, timeout=10)
    tx.close()
    for t in threads:
        t.join(60)
    expected = [b"%06d" % i for i in range(count)]
    assert results == [expected, expected]
    assert pool.stats().free == pool.stats().total


def test_threads_sharing_a_receiver_take_turns_and_each_buffer_goes_to_one(pool):
    count = 1000
    tx = fbuf.Sender(pool)
    rx = tx.connect_local()
    seen = []
    lock = threading.Lock()

    def consume():
        for view in rx:
            value = bytes(view)
            view.release()
            with lock:
                seen.append(value)

    threads = [threading.Thread(target=consume) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(count):
        buf = tx.allocate(4, timeout=10)
        buf.write(i.to_bytes(4, "little"))
        tx.send(buf, timeout=10)
    tx.close()
    for t in threads:
        t.join(60)
    assert sorted(int.from_bytes(v, "little") for v in seen) == list(range(count))


def test_views_may_be_released_on_another_thread(channel, pool):
    tx, rx = channel
    buf = tx.allocate(3, timeout=1)
    tx.send(buf, timeout=1)
    view = rx.receive(timeout=1)
    t = threading.Thread(target=view.release)
    t.start()
    t.join()
    assert view.released and pool.stats().free == pool.stats().total
