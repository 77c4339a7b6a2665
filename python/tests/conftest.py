"""Shared fixtures of the binding's tests.

Run by CTest (python/tests/CMakeLists.txt), which sets PYTHONPATH to the
built package and to examples/python (the frame format), and passes the
paths of the C++ and C example programs in FBUF_PRODUCER, FBUF_CONSUMER and
FBUF_C_PIPELINE.
"""

import faulthandler
import os
import re

import pytest

import fbuf


@pytest.fixture
def service(request):
    """A service name no other test uses at the same time: pid + test name."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    return f"pytest-{os.getpid()}/{name}"[:96]


@pytest.fixture
def pool(request):
    """A small pool: 8 one-page buffers and 2 of 1 MiB."""
    return fbuf.Pool(f"pytest-{os.getpid()}", classes=[(4096, 8), (1 << 20, 2)])


def example_program(variable):
    """The path of an example program from the environment, or a skip that
    says why (CTest always sets them when the examples are built)."""
    path = os.environ.get(variable)
    if not path:
        pytest.skip(f"{variable} is not set (configure with FBUF_BUILD_EXAMPLES=ON and run under CTest)")
    assert os.access(path, os.X_OK), f"{variable}={path} is not an executable"
    return path


@pytest.fixture(autouse=True)
def deadlock_guard():
    """A test that hangs (a wait that kept the GIL, a lost wake-up with
    slicing off) fails after 60 s with every thread's stack, rather than at
    CTest's timeout with nothing to show."""
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
