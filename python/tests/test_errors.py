"""fbuf's errors as Python exceptions: one class per error code, named as in
C++, all fbuf.Error (an OSError), with `code` and `errno`; timeouts in
seconds."""

import errno
import os
import signal
import threading
import time

import pytest

import fbuf

# fbuf::Errc, in its order (include/fbuf/error.h).
ERRC = ["WouldBlock", "TimedOut", "PeerGone", "NoReceivers", "InvalidArgument", "BadDescriptor",
        "VersionMismatch", "Protocol", "Closed", "TooLarge", "Corrupt", "CutOff", "MessageWaiting",
        "Unsupported"]


def test_every_error_code_has_its_exception_class_under_fbuf_error():
    for name in ERRC:
        cls = getattr(fbuf, name)
        assert issubclass(cls, fbuf.Error), name
        assert cls.__module__ == "fbuf" and cls.__name__ == name
        assert cls.__doc__
    assert issubclass(fbuf.Error, OSError)
    # Where Python has a builtin of the same meaning, they are that too.
    assert issubclass(fbuf.TimedOut, TimeoutError)
    assert issubclass(fbuf.WouldBlock, BlockingIOError)
    assert issubclass(fbuf.InvalidArgument, ValueError)
    assert issubclass(fbuf.Closed, ValueError)


def test_raised_errors_carry_the_fbuf_code_and_a_message(pool):
    tx = fbuf.Sender(pool)
    rx = tx.connect_local()
    with pytest.raises(fbuf.WouldBlock) as wb:
        rx.try_receive()
    assert wb.value.code == ERRC.index("WouldBlock") + 1 and wb.value.errno is None
    assert "try_receive" in str(wb.value)
    with pytest.raises(fbuf.TimedOut) as to:
        rx.receive(timeout=0.01)
    assert to.value.code == ERRC.index("TimedOut") + 1
    buf = tx.allocate(10, timeout=1)
    rx.close()
    with pytest.raises(fbuf.NoReceivers) as nr:
        tx.send(buf, timeout=1)
    assert nr.value.code == ERRC.index("NoReceivers") + 1
    other = fbuf.Pool("other", classes=[(4096, 1)])
    rx = tx.connect_local()
    with pytest.raises(fbuf.InvalidArgument):
        tx.send(other.allocate(1, timeout=1), timeout=1)  # a buffer of another pool
    tx.send(buf, timeout=1)
    rx.receive(timeout=1).release()


def test_os_errors_carry_errno(service, pool):
    with fbuf.Sender(pool, service):
        with pytest.raises(fbuf.Error) as taken:
            fbuf.Sender(pool, service)
        assert taken.value.errno == errno.EADDRINUSE
        assert taken.value.code is None
    with pytest.raises(fbuf.Error) as refused:
        fbuf.Receiver.connect(service + "-nobody", timeout=0.1)
    assert refused.value.errno == errno.ECONNREFUSED
    assert service + "-nobody" in str(refused.value)


def test_end_of_stream_is_peer_gone(service, pool):
    tx = fbuf.Sender(pool, service)
    rx = fbuf.Receiver.connect(service, timeout=5)
    tx.close()
    with pytest.raises(fbuf.PeerGone) as gone:
        rx.receive(timeout=5)
    assert gone.value.code == ERRC.index("PeerGone") + 1
    assert list(rx) == []


def test_timeouts_are_seconds_and_none_is_for_ever(pool):
    tx = fbuf.Sender(pool)
    rx = tx.connect_local()
    for timeout in (0, 0.0, 0.05):
        start = time.monotonic()
        with pytest.raises(fbuf.TimedOut):
            rx.receive(timeout=timeout)
        assert time.monotonic() - start < 0.05 + 1.0
    start = time.monotonic()
    with pytest.raises(fbuf.TimedOut):
        rx.receive(timeout=0.3)
    assert time.monotonic() - start >= 0.3
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="timeout"):
            rx.receive(timeout=bad)
    buf = tx.allocate(10, timeout=None)  # None: for ever, here at once
    tx.send(buf, timeout=1e12)  # beyond a century: for ever too
    with rx.receive(timeout=None) as view:
        assert len(view) == 10


def test_misuse_raises_instead_of_aborting(pool):
    with pytest.raises(ValueError, match="service"):
        fbuf.Sender(pool, "")
    with pytest.raises(ValueError, match="service"):
        fbuf.Receiver.connect("")
    with pytest.raises(fbuf.InvalidArgument, match="power of two"):
        fbuf.Sender(pool, ring_capacity=3)
    with pytest.raises(ValueError, match="slow_receiver"):
        fbuf.Sender(pool, slow_receiver="sometimes")
    with pytest.raises(ValueError, match="length"):
        fbuf.Sender(pool).send(pool.allocate(1, timeout=1), length=-1)


def test_ctrl_c_interrupts_a_receive_that_waits_for_ever(pool):
    tx = fbuf.Sender(pool)
    rx = tx.connect_local()
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        rx.receive(timeout=None)
    assert time.monotonic() - start < 3
    timer.join()
    # The receiver still works.
    buf = tx.allocate(3, timeout=1)
    buf.write(b"abc")
    tx.send(buf, timeout=1)
    with rx.receive(timeout=1) as view:
        assert bytes(view) == b"abc"
