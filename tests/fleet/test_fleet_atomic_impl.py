"""The lock-free backend's two implementations (fleet/counter.py): the optional C extension
and libatomic through ctypes. Both are truly atomic on the same word, so processes using either
may share a segment without losing an increment; a segment created without either stays
``flock`` for every attacher, whatever it could use itself."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from alternator_shm.fleet import SharedFleet, cleanup
from alternator_shm.fleet.counter import AtomicWords, atomic_impl

ROUNDS = 20_000

_ADVANCE = textwrap.dedent(
    """
    import sys
    from alternator_shm.fleet import SharedFleet
    from alternator_shm.fleet.counter import atomic_impl
    fleet = SharedFleet(sys.argv[1])
    fleet.nodes()
    ops = fleet.attachment.ops
    print(ops.name, atomic_impl(), flush=True)
    sys.stdin.readline()  # released together
    for _ in range(int(sys.argv[2])):
        ops.advance()
        ops.fetch_add(0x200, 1)
    """
)


def _spawn(ns: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _ADVANCE, ns, str(ROUNDS)],
        env={**os.environ, **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


needs_ext = pytest.mark.skipif(atomic_impl() != "extension", reason="_atomic not built")


@needs_ext
def test_extension_and_libatomic_share_one_counter_exactly(make_fleet, ns) -> None:
    leader = make_fleet()
    leader.nodes()
    assert leader.stats().counter_backend == "atomic"
    procs = [_spawn(ns), _spawn(ns, ALTERNATOR_SHM_NO_ATOMIC_EXT="1"), _spawn(ns)]
    try:
        seen = sorted(p.stdout.readline().split()[1] for p in procs)  # type: ignore[union-attr]
        assert seen == ["extension", "extension", "libatomic"]
        for p in procs:
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        for p in procs:
            assert p.wait(timeout=120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert leader.counter == 3 * ROUNDS
    assert int(leader.attachment.seg.words[0x200 // 8]) == 3 * ROUNDS


def test_flock_segment_stays_flock_for_an_attacher_with_the_extension(ns) -> None:
    code = (
        "import sys; from alternator_shm.fleet import SharedFleet; f = SharedFleet(sys.argv[1]);"
        " f.nodes(); print(f.stats().counter_backend)"
    )
    env = {**os.environ, "ALTERNATOR_SHM_NO_ATOMIC_EXT": "1", "ALTERNATOR_SHM_NO_LIBATOMIC": "1"}
    out = subprocess.run([sys.executable, "-c", code, ns], env=env, capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()
    assert out == ["flock"]  # the creator had neither implementation
    fleet = SharedFleet(ns)
    try:
        fleet.nodes()
        assert fleet.stats().counter_backend == "flock"
        assert fleet.attachment.ops.name == "flock"
        assert fleet.advance() == 0
    finally:
        fleet.close()
        cleanup(ns)


@needs_ext
def test_extension_wraps_and_compare_exchange(make_fleet) -> None:
    fleet = make_fleet()
    fleet.nodes()
    ops = fleet.attachment.ops
    assert isinstance(ops, AtomicWords) and ops.impl == "extension"
    off = 0x200
    ops.fetch_add(off, (1 << 64) - 1)  # -1 mod 2**64
    assert ops.fetch_add(off, 2) == (1 << 64) - 1
    assert ops.fetch_add(off, -1) == 1  # masked like libatomic's uint64 argument
    assert not ops.compare_exchange(off, 5, 7)
    assert ops.compare_exchange(off, 0, 7)
    assert int(fleet.attachment.seg.words[off // 8]) == 7
