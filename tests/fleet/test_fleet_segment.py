"""The segment and its lock file: crash during init, unlink underneath, squatting by another
uid, symlinks, corrupted headers, a full tmpfs, names, list_fleets and cleanup."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import uuid

import pytest
from _fleet_procs import NODES, Child, wait_until

from alternator_shm.errors import SharedStateError
from alternator_shm.fleet import SharedFleet, cleanup, layout, list_fleets, segment

SHM = segment.DEFAULT_SHM_DIR
NOBODY = 65534


def _paths(ns: str, shm_dir: str = SHM) -> tuple[str, str]:
    base = os.path.join(shm_dir, segment.base_name(ns))
    return base, base + ".lock"


def test_names_are_short_private_and_per_user(make_fleet, ns) -> None:
    fleet = make_fleet()
    name = fleet.segment_name
    assert len(name) <= 31  # macOS PSHMNAMLEN
    assert name.startswith(f"/rrlb{layout.LAYOUT_VERSION}.{os.geteuid()}.")
    assert segment.base_name(ns, euid=1234) != segment.base_name(ns)
    assert fleet.nodes() == ()  # attaches (creates) lazily
    seg_path, lock_path = _paths(ns)
    for path in (seg_path, lock_path):
        st = os.stat(path)
        assert st.st_mode & 0o777 == 0o600 and st.st_uid == os.geteuid()
    assert os.stat(seg_path).st_size == layout.TOTAL_SIZE
    assert os.stat(seg_path).st_blocks * 512 >= layout.TOTAL_SIZE  # reserved, not sparse


def test_construction_touches_nothing(ns) -> None:
    SharedFleet(ns, refresh=lambda: NODES)
    seg_path, lock_path = _paths(ns)
    assert not os.path.exists(seg_path) and not os.path.exists(lock_path)


def _die_during_init(ns: str, reserve: bool) -> None:
    base = segment.base_name(ns)
    lf = segment.lock_file(SHM, base)
    lf.lock(layout.LOCK_INIT)
    fd = segment._open_segment_fd(SHM, base, create=True)
    if reserve:
        os.posix_fallocate(fd, 0, layout.TOTAL_SIZE)
        os.pwrite(fd, b"\xab" * 512, 0x8)  # half a header, no magic
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("reserve", [False, True])
def test_creator_killed_during_init_is_repaired(make_fleet, ns, reserve) -> None:
    child = Child(_die_during_init, ns, reserve)
    with pytest.raises(RuntimeError, match="without a result"):
        child.result(timeout=20)
    seg_path, _ = _paths(ns)
    assert os.path.exists(seg_path)
    fleet = make_fleet(refresh=lambda: NODES)
    assert fleet.wait_for_nodes(10) == NODES
    assert fleet.advance() == 0
    assert os.stat(seg_path).st_size == layout.TOTAL_SIZE


def _fresh_view(ns: str) -> tuple[str, ...]:
    return SharedFleet(ns).nodes()


@pytest.mark.parametrize("remove", ["segment", "everything"])
def test_segment_unlinked_externally_is_reattached_and_republished(make_fleet, ns, remove) -> None:
    leader = make_fleet(refresh=lambda: NODES)
    assert leader.wait_for_nodes(10) == NODES
    leader.advance()
    seg_path, lock_path = _paths(ns)
    old_identity = leader.attachment.seg.identity
    os.unlink(seg_path)
    if remove == "everything":  # `rm /dev/shm/*` or systemd RemoveIPC
        os.unlink(lock_path)
    assert wait_until(lambda: os.path.exists(seg_path) and os.path.exists(lock_path), 5)
    assert wait_until(lambda: leader.attachment.seg.identity != old_identity, 5)
    assert wait_until(lambda: leader.nodes() == NODES, 5)
    # a process that never saw the old segment reads the republished table
    assert Child(_fresh_view, ns).result(timeout=20) == NODES
    assert wait_until(lambda: leader.is_leader, 5)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create files as nobody")
@pytest.mark.parametrize("which", ["segment", "lock"])
def test_precreated_by_another_uid_is_refused(ns, which) -> None:
    seg_path, lock_path = _paths(ns)
    path = seg_path if which == "segment" else lock_path
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchown(fd, NOBODY, NOBODY)
        if which == "segment":
            os.posix_fallocate(fd, 0, layout.TOTAL_SIZE)
        with pytest.raises(SharedStateError, match="belongs to uid 65534"):
            SharedFleet(ns).nodes()
        assert os.fstat(fd).st_uid == NOBODY  # untouched
    finally:
        os.close(fd)
        for p in (seg_path, lock_path):
            if os.path.lexists(p):
                os.unlink(p)


@pytest.mark.parametrize("which", ["segment", "lock"])
def test_symlinks_are_refused(ns, which) -> None:
    seg_path, lock_path = _paths(ns)
    path = seg_path if which == "segment" else lock_path
    target = os.path.join(tempfile.gettempdir(), f"fleet-target-{uuid.uuid4().hex}")
    with open(target, "wb"):
        pass
    os.symlink(target, path)
    try:
        with pytest.raises(SharedStateError, match="symlink"):
            SharedFleet(ns).nodes()
        assert os.path.getsize(target) == 0
    finally:
        for p in (seg_path, lock_path, target):
            if os.path.lexists(p):
                os.unlink(p)


def _attach_and_wait(ns: str, ready_w: int, stop_r: int) -> int:
    fleet = SharedFleet(ns)
    fleet.advance()
    os.write(ready_w, b"!")
    os.read(stop_r, 1)
    return fleet.counter


def _try_attach(ns: str) -> str:
    try:
        SharedFleet(ns).advance()
    except SharedStateError as exc:
        return f"refused: {exc}"
    return "attached"


@pytest.mark.parametrize("offset", [layout.MAGIC_OFF, layout.LAYOUT_OFF, layout.BACKEND_OFF])
def test_corrupted_header_is_refused_in_use_and_rebuilt_when_unused(ns, offset, caplog) -> None:
    seg_path, _ = _paths(ns)
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    holder = Child(_attach_and_wait, ns, ready_w, stop_r)
    try:
        assert os.read(ready_r, 1) == b"!"
        with open(seg_path, "r+b") as f:
            f.seek(offset)
            f.write(b"\x99" * 8)
        verdict = Child(_try_attach, ns).result(timeout=20)
        assert verdict.startswith("refused:") and "bad header" in verdict, verdict
        os.write(stop_w, b"x")
        holder.result(timeout=20)
    finally:
        holder.kill()
        for fd in (ready_r, ready_w, stop_r, stop_w):
            os.close(fd)
    # nobody attached any more: the next attacher rebuilds it
    with caplog.at_level(logging.WARNING, logger="alternator_shm"):
        assert Child(_try_attach, ns).result(timeout=20) == "attached"
        fleet = SharedFleet(ns, refresh=lambda: NODES)
        try:
            assert fleet.wait_for_nodes(10) == NODES
            assert fleet.stats().picks == 1
        finally:
            fleet.close()


def test_full_tmpfs_is_a_clear_error_not_sigbus(tiny_tmpfs, ns) -> None:
    fleet = SharedFleet(ns, shm_dir=tiny_tmpfs, refresh=lambda: NODES)
    with pytest.raises(SharedStateError, match="cannot reserve"):
        fleet.nodes()
    with pytest.raises(SharedStateError):
        fleet.advance()
    assert not os.path.exists(os.path.join(tiny_tmpfs, segment.base_name(ns)))
    assert os.path.exists(os.path.join(tiny_tmpfs, segment.base_name(ns) + ".lock"))


def test_custom_shm_dir_works(ns, tmp_path) -> None:
    fleet = SharedFleet(ns, shm_dir=str(tmp_path), refresh=lambda: NODES, poll_interval=0.02)
    try:
        assert fleet.wait_for_nodes(10) == NODES
        assert [s.namespace for s in list_fleets(str(tmp_path))] == [ns]
    finally:
        fleet.close()
    assert cleanup(ns, shm_dir=str(tmp_path)) == [fleet.segment_name]
    assert os.listdir(tmp_path) == []


def test_list_fleets_reads_without_attaching_and_cleanup_only_when_unused(ns) -> None:
    seg_path, lock_path = _paths(ns)
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    holder = Child(_attach_and_wait, ns, ready_w, stop_r)
    try:
        assert os.read(ready_r, 1) == b"!"
        before = sorted(os.listdir(SHM))
        mine = [s for s in list_fleets() if s.namespace == ns]
        assert len(mine) == 1 and mine[0].picks == 1 and mine[0].leader_pid is None
        # Created nothing: no file for any segment it read. (Other files may appear meanwhile:
        # /dev/shm is shared with every other test process and run on this host.)
        new = set(os.listdir(SHM)) - set(before)
        assert not {n.removesuffix(".lock") for n in new} & set(before), new
        assert cleanup(ns) == []  # in use by the holder
        assert os.path.exists(seg_path)
        os.write(stop_w, b"x")
        assert holder.result(timeout=20) == 1
    finally:
        holder.kill()
        for fd in (ready_r, ready_w, stop_r, stop_w):
            os.close(fd)
    assert cleanup(ns) == ["/" + segment.base_name(ns)]
    assert not os.path.exists(seg_path) and not os.path.exists(lock_path)
    assert [s for s in list_fleets() if s.namespace == ns] == []


def test_cleanup_keeps_a_segment_whose_refresher_runs_here(make_fleet, ns) -> None:
    fleet = make_fleet(refresh=lambda: NODES)
    assert fleet.wait_for_nodes(10) == NODES
    assert cleanup(ns) == []
    fleet.close()
    assert cleanup(ns) == [fleet.segment_name]
    # the stale local attachment is replaced on next use
    assert fleet.nodes() == ()
    assert fleet.wait_for_nodes(10) == NODES
