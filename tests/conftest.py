"""Suite-wide hygiene: leave no test namespace behind in /dev/shm; and ``tiny_tmpfs``.

Tests use unique namespaces (``t-<uuid>``, ``test-...``) and most clean up after themselves;
this sweep removes whatever a failed or killed test left long ago. ``cleanup`` only removes
segments no process is attached to, and the sweep only takes stale ones (see ``_STALE_S``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from alternator_shm.fleet import FleetStats, cleanup, list_fleets

_TEST_PREFIXES = ("t-", "test-", "demo-", "dbg-")


# Only segments untouched this long are swept. Several test sessions share /dev/shm (xdist
# workers of one run, and other runs by the same user): a namespace of a test still running
# elsewhere may be unused for a moment (between two processes of one test), and sweeping it
# then would break that test. No test keeps a namespace for anywhere near this long.
_STALE_S = 15 * 60


def _stale(stats: FleetStats) -> bool:
    try:
        st = os.stat(os.path.join(stats.shm_dir, stats.segment_name.lstrip("/")))
    except OSError:
        return False
    return time.time() - max(st.st_mtime, st.st_ctime) > _STALE_S


@pytest.fixture(scope="session", autouse=True)
def _sweep_test_namespaces() -> Iterator[None]:
    yield
    for stats in list_fleets():
        if stats.namespace.startswith(_TEST_PREFIXES) and _stale(stats):
            cleanup(stats.namespace)


@pytest.fixture
def tiny_tmpfs() -> Iterator[str]:
    """A fresh 64 KiB tmpfs (root only; skipped otherwise): a shared-memory directory too small
    for one segment, for the "full /dev/shm" cases of the fleet and of the Helper."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tempfile.mkdtemp(prefix="tiny-tmpfs-")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=1777", "tmpfs", mountpoint],
        capture_output=True, check=False, timeout=20,
    )  # fmt: skip
    if proc.returncode != 0:
        os.rmdir(mountpoint)
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        # lazy: the test process keeps its one fd on the lock file for the rest of its life
        subprocess.run(["umount", "-l", mountpoint], check=False, timeout=20)
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)
