"""Python peers of the C++ and C examples, across processes, both ways.

The peers are the real example programs (examples/producer.cc,
consumer.cc, c_pipeline.c), started as subprocesses; the frames are those of
examples/frame.h, checked here with examples/python/frame.py.
"""

import re
import signal
import struct
import subprocess
import time

import numpy as np
import pytest

import fbuf
import frame
from conftest import example_program

PAGE = 4096
WIDTH, HEIGHT = 320, 240


def summary_checksum(output, who):
    found = re.findall(rf"^{who}: .*checksum=([0-9a-f]{{16}})$", output, re.M)
    assert found, f"no summary line from the {who} in:\n{output}"
    return int(found[-1], 16)


def finish(process, timeout=120):
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{process.args[0]} exited with {process.returncode}:\n{out}"
    return out


def start(args):
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def rounded(n):
    return (n + PAGE - 1) // PAGE * PAGE


# ---- C++ producer -> Python ---------------------------------------------------

def test_python_consumes_the_cxx_video_producer_in_place(service):
    producer = start([example_program("FBUF_PRODUCER"), "--service", service, "--count", "40",
                      "--width", str(WIDTH), "--height", str(HEIGHT), "--policy", "read-only"])
    try:
        rx = fbuf.Receiver.connect(service, timeout=20)
        size = frame.frame_size(WIDTH, HEIGHT)
        stream, frames = frame.CHECKSUM_SEED, 0
        for view in rx:
            with view:
                if frames == 0:
                    # Zero copy, as the kernel sees it: numpy's array lies in
                    # this process's read-only shared mapping of the
                    # producer's pool (memfd "fbuf:camera-frames"), at the
                    # start of one of its buffers.
                    array = np.frombuffer(view, dtype=np.uint8)
                    m = fbuf.mapping_of(array)
                    address = array.ctypes.data
                    assert m is not None and m.path.startswith("/memfd:fbuf:camera-frames"), m
                    assert m.perms == "r--s"
                    assert m.start <= address and address + size <= m.end
                    assert (address - m.start + m.offset) % rounded(size) == 0
                    assert address == view.address
                    assert struct.unpack_from("=I", array)[0] == frame.MAGIC
                    del array
                problem, _, image_checksum = frame.check_frame(view, frames)
                assert problem is None, f"frame {frames}: {problem}"
                stream = frame.add_to_stream(stream, image_checksum)
                frames += 1
        assert frames == 40
        assert rx.stats().received == 40
        assert summary_checksum(finish(producer), "producer") == stream
    finally:
        producer.kill()
        producer.wait()


def test_views_survive_the_cxx_producer_killed_and_the_stream_ends(service):
    producer = start([example_program("FBUF_PRODUCER"), "--service", service, "--count", "1000000",
                      "--width", "64", "--height", "64"])
    try:
        rx = fbuf.Receiver.connect(service, timeout=20)
        held = rx.receive(timeout=10)
        assert frame.check_frame(held, 0)[0] is None
        for i in range(1, 5):
            with rx.receive(timeout=10) as view:
                assert frame.check_frame(view, i)[0] is None
        producer.send_signal(signal.SIGKILL)
        producer.wait()
        # Everything sent before the death is drained, then the end.
        drained = 5
        for view in rx:
            with view:
                assert frame.check_frame(view, drained)[0] is None
                drained += 1
        with pytest.raises(fbuf.PeerGone):
            rx.receive(timeout=1)
        # The view held all along is still the producer's frame 0.
        assert frame.check_frame(held, 0)[0] is None
        held.release()
    finally:
        producer.kill()
        producer.wait()


# ---- Python producer -> C++ ---------------------------------------------------

def test_python_feeds_the_cxx_video_consumer(service):
    count = 40
    size = frame.frame_size(WIDTH, HEIGHT)
    pool = fbuf.Pool("py-camera", classes=[(size, 8)], policy="copy_on_write")
    with fbuf.Sender(pool, service) as tx:
        consumer = start([example_program("FBUF_CONSUMER"), "--service", service,
                          "--connect-timeout", "20"])
        try:
            assert tx.wait_for_receivers(1, timeout=20)
            stream = frame.CHECKSUM_SEED
            for seq in range(count):
                buf = tx.allocate(size, timeout=10)
                stream = frame.add_to_stream(stream, frame.render_frame(buf, seq, WIDTH, HEIGHT))
                tx.send(buf, timeout=10)
            tx.close()  # the end of the stream
            out = finish(consumer)
        finally:
            consumer.kill()
            consumer.wait()
    assert f"frames={count} " in out
    assert summary_checksum(out, "consumer") == stream
    assert pool.stats().free == 8


def test_a_cxx_consumer_killed_while_python_sends_gives_its_buffers_back(service):
    size = frame.frame_size(64, 64)
    pool = fbuf.Pool("py-camera-kill", classes=[(size, 8)])
    with fbuf.Sender(pool, service) as tx:
        consumer = start([example_program("FBUF_CONSUMER"), "--service", service,
                          "--connect-timeout", "20"])
        try:
            assert tx.wait_for_receivers(1, timeout=20)
            for seq in range(20):
                buf = tx.allocate(size, timeout=10)
                frame.render_frame(buf, seq, 64, 64)
                tx.send(buf, timeout=10)
            consumer.send_signal(signal.SIGKILL)
            consumer.wait()
            deadline = time.monotonic() + 10
            while tx.stats().receivers_lost < 1 or pool.stats().free < 8:
                assert time.monotonic() < deadline, (tx.stats(), pool.stats())
                time.sleep(0.01)
            with pytest.raises(fbuf.NoReceivers):
                tx.send(tx.allocate(size, timeout=1), timeout=1)
        finally:
            consumer.kill()
            consumer.wait()


# ---- the C API's market feed, both ways ----------------------------------------

BATCH_MAGIC = 0x4B434954  # "TICK"
BATCH = struct.Struct("=IIQ")
TICK = struct.Struct("=QqqII")
MAX_TICKS = 255


def fnv1a64(h, data):
    for b in bytes(data):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def test_python_consumes_the_c_feed(service):
    producer = start([example_program("FBUF_C_PIPELINE"), "produce", service, "100", "1"])
    try:
        rx = fbuf.Receiver.connect(service, timeout=20)
        checksum, batches, next_tick = frame.CHECKSUM_SEED, 0, 0
        for view in rx:
            with view, memoryview(view) as mv:
                magic, ticks, sequence = BATCH.unpack_from(mv)
                assert (magic, sequence) == (BATCH_MAGIC, batches)
                assert len(mv) == BATCH.size + ticks * TICK.size
                for i in range(ticks):
                    assert TICK.unpack_from(mv, BATCH.size + i * TICK.size)[0] == next_tick
                    next_tick += 1
                checksum = fnv1a64(checksum, mv)
                batches += 1
        out = finish(producer)
        assert batches == 100
        assert f"ticks={next_tick} " in out
        assert summary_checksum(out, "producer") == checksum
    finally:
        producer.kill()
        producer.wait()


def test_python_feeds_the_c_consumer(service):
    pool = fbuf.Pool("py-ticks", classes=[(BATCH.size + MAX_TICKS * TICK.size, 16)])
    with fbuf.Sender(pool, service) as tx:
        consumer = start([example_program("FBUF_C_PIPELINE"), "consume", service])
        try:
            assert tx.wait_for_receivers(1, timeout=20)
            checksum, next_tick = frame.CHECKSUM_SEED, 0
            for sequence in range(100):
                ticks = 1 + sequence % MAX_TICKS
                n = BATCH.size + ticks * TICK.size
                buf = tx.allocate(n, timeout=10)
                with memoryview(buf) as mv:
                    BATCH.pack_into(mv, 0, BATCH_MAGIC, ticks, sequence)
                    for i in range(ticks):
                        TICK.pack_into(mv, BATCH.size + i * TICK.size, next_tick, time.monotonic_ns(),
                                       1000000 + i, 1 + i % 500, i % 4)
                        next_tick += 1
                    checksum = fnv1a64(checksum, mv)
                tx.send(buf, timeout=10)
            tx.close()
            out = finish(consumer)
        finally:
            consumer.kill()
            consumer.wait()
    assert f"batches=100 ticks={next_tick} " in out
    assert summary_checksum(out, "consumer") == checksum
