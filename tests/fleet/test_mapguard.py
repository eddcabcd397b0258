"""The SIGBUS guard (``fleet/mapguard.py``, C extension ``_mapguard``): a truncated mapping that
is guarded reads as zeros and trips; any other SIGBUS keeps its usual outcome (the process dies
of it, or whatever handler was there first runs). Each case runs in a child process."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from alternator_shm.fleet import mapguard

pytestmark = pytest.mark.skipif(
    not mapguard.available(), reason="the optional _mapguard extension is not built here"
)

_PRELUDE = textwrap.dedent(
    """
    import mmap, os, sys, tempfile
    from alternator_shm.fleet import mapguard

    def mapping(size=65536, prot=mmap.PROT_READ | mmap.PROT_WRITE):
        fd, path = tempfile.mkstemp(dir="/dev/shm")
        os.unlink(path)
        os.ftruncate(fd, size)
        return fd, mmap.mmap(fd, size, prot=prot)
    """
)


def _run(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("prot", ["mmap.PROT_READ | mmap.PROT_WRITE", "mmap.PROT_READ"])
def test_a_guarded_mapping_reads_zeros_after_truncation_and_trips(prot: str) -> None:
    proc = _run(f"""
        fd, mm = mapping(prot={prot})
        g = mapguard.guard(mm)
        before = g.tripped()
        os.ftruncate(fd, 0)
        print(before, mm[100:108] == bytes(8), g.tripped(), flush=True)
    """)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.split() == ["False", "True", "True"]


def test_a_sigbus_outside_every_guarded_mapping_still_kills() -> None:
    proc = _run("""
        fd1, guarded = mapping()
        mapguard.guard(guarded)
        fd2, other = mapping()
        os.ftruncate(fd2, 0)
        print(other[0], flush=True)
    """)
    assert proc.returncode == -signal.SIGBUS, (proc.returncode, proc.stdout, proc.stderr[-500:])


def test_a_sent_sigbus_keeps_its_default_action() -> None:
    proc = _run("""
        fd, mm = mapping()
        mapguard.guard(mm)
        os.kill(os.getpid(), 7)
        print("survived", flush=True)
    """)
    assert proc.returncode == -signal.SIGBUS, (proc.returncode, proc.stdout)


def test_faulthandler_enabled_later_is_chained_after_reinstall() -> None:
    """faulthandler's handler ends the process on any SIGBUS: ours must be back on top (the
    refresher calls reinstall() every poll), and a foreign SIGBUS still reaches faulthandler."""
    proc = _run("""
        import faulthandler
        fd, mm = mapping()
        g = mapguard.guard(mm)
        faulthandler.enable()
        mapguard.reinstall()
        os.ftruncate(fd, 0)
        print(mm[0], g.tripped(), flush=True)
        fd2, other = mapping()
        os.ftruncate(fd2, 0)
        print(other[0], flush=True)
    """)
    assert proc.stdout.split() == ["0", "True"], (proc.stdout, proc.stderr[-1000:])
    assert proc.returncode == -signal.SIGBUS
    assert "Bus error" in proc.stderr  # faulthandler saw the foreign one


def test_a_collected_mapping_is_no_longer_guarded() -> None:
    proc = _run("""
        import gc
        slots = []
        for _ in range(200):  # far more than the 64 slots: each is freed with its mapping
            fd, mm = mapping(4096)
            mapguard.guard(mm)
            del mm
            os.close(fd)
            gc.collect()
        fd, mm = mapping()
        g = mapguard.guard(mm)
        os.ftruncate(fd, 0)
        print(mm[0], g.tripped(), flush=True)
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["0", "True"]
