"""The wheel we ship (issue 16: "which counter backend users get"): ``make wheel``'s recipe
gives a manylinux wheel that carries the C extensions, so an install from it on a slim image
(no compiler, no ``libatomic1``) still gets the lock-free counter, the SIGBUS guard and the
cached fork check."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler here"
)


@pytest.mark.slow
def test_the_release_wheel_is_manylinux_and_carries_the_extensions(tmp_path: Path) -> None:
    pytest.importorskip("auditwheel")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "wheelhouse", "*.so", "__pycache__", "benchmarks"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, timeout=300)
    (raw,) = (tmp_path / "dist").glob("*.whl")
    subprocess.run([sys.executable, "-m", "auditwheel", "repair", "-w",
                    str(tmp_path / "wheelhouse"), str(raw)],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = (tmp_path / "wheelhouse").glob("*.whl")
    assert "manylinux" in wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    for ext in ("fleet/_atomic", "fleet/_mapguard", "_pidcache"):
        assert any(n.startswith(f"alternator_shm/{ext}.") and n.endswith(".so")
                   for n in names), names
    # Installed from the wheel (unpacked, as pip would): the lock-free counter comes from the
    # wheel's own extension (preferred to libatomic, which a slim image lacks), and truncation
    # is guarded.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import sys\n"
        # an editable install of this checkout would shadow the wheel: drop its finder
        "sys.meta_path = [f for f in sys.meta_path if '__editable__' not in\n"
        "                 getattr(f, '__module__', '')]\n"
        "from alternator_shm import _forkmark\n"
        "from alternator_shm.fleet import counter, mapguard\n"
        "print(counter.atomic_impl(), mapguard.available(), _forkmark.pid_cached,\n"
        "      counter.__file__)\n"
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, env=env, cwd=tmp_path, check=True).stdout.split()
    assert out[:3] == ["extension", "True", "True"], out
    assert out[3].startswith(str(site)), out
