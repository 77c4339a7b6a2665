"""The `python` install component, used from a virtual environment.

Installs only that component of this build into a scratch prefix, then
imports fbuf from there in a fresh `python3 -m venv --system-site-packages`
(numpy comes from Debian's site packages), once through PYTHONPATH and once
through a .pth file in the environment, the two ways docs/api.md gives.
"""

import os
import subprocess
import sys

import pytest

SCRIPT = """
import sys, numpy as np, fbuf
assert fbuf.__file__.startswith(sys.argv[1]), fbuf.__file__
pool = fbuf.Pool("venv", classes=[(4096, 2)])
with fbuf.Sender(pool) as tx:
    rx = tx.connect_local()
    buf = tx.allocate(3, timeout=1)
    np.frombuffer(buf, dtype=np.uint8)[:] = [1, 2, 3]
    tx.send(buf, timeout=1)
    with rx.receive(timeout=1) as view:
        assert bytes(view) == bytes([1, 2, 3])
print("venv ok", fbuf.__version__)
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    cmake = os.environ.get("FBUF_CMAKE")
    build = os.environ.get("FBUF_BUILD_DIR")
    if not cmake or not build:
        pytest.skip("FBUF_CMAKE / FBUF_BUILD_DIR not set (run under CTest: python.install)")
    prefix = tmp_path_factory.mktemp("prefix")
    subprocess.run([cmake, "--install", build, "--component", "python", "--prefix", str(prefix)],
                   check=True, capture_output=True, text=True)
    return prefix


def test_the_component_installs_the_package_in_the_debian_layout(installed):
    package = installed / "lib" / "python3" / "dist-packages" / "fbuf"
    names = sorted(p.name for p in package.iterdir())
    assert "__init__.py" in names
    assert any(n.startswith("_fbuf.") and n.endswith(".so") for n in names), names
    # Only the package: no headers or libraries in this component.
    assert sorted(p.name for p in installed.iterdir()) == ["lib"]


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    path = tmp_path_factory.mktemp("venv")
    # --without-pip: nothing to download or unpack; the test needs no pip.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)],
                   check=True, capture_output=True, text=True)
    return path / "bin" / "python"


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(extra)
    # A shared libfbuf is another component's; use the build tree's.
    if os.environ.get("FBUF_LIB_DIR"):
        env["LD_LIBRARY_PATH"] = os.environ["FBUF_LIB_DIR"]
    return env


def test_a_venv_imports_the_installed_package_through_pythonpath(installed, venv):
    site = str(installed / "lib" / "python3" / "dist-packages")
    r = subprocess.run([str(venv), "-c", SCRIPT, site], env=clean_env(PYTHONPATH=site),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "venv ok" in r.stdout


def test_a_venv_imports_the_installed_package_through_a_pth_file(installed, venv):
    site = str(installed / "lib" / "python3" / "dist-packages")
    venv_site = subprocess.run([str(venv), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               env=clean_env(), capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(venv_site, "fbuf.pth"), "w") as f:
        f.write(site + "\n")
    r = subprocess.run([str(venv), "-c", SCRIPT, site], env=clean_env(), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "venv ok" in r.stdout
