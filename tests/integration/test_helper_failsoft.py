"""Fail-soft: no call fails because of shared memory (``shared="auto"``, the default).

Each cause the issue names is reproduced for real against the emulator: another local user
owning the predictable lock or segment name, a full shared-memory filesystem (a real 64 KiB
tmpfs when this runs as root, and an injected ENOSPC that always runs), and a header corrupted
by the same user while another process is attached (a *new* process must still work, and
``alternator-shm status`` must still list the segment). ``shared="required"`` keeps raising
:class:`SharedStateError`; ``shared="off"`` never creates anything in ``/dev/shm``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from test_helper_support import (
    NOBODY,
    api_counts,
    helper_options,
    make_helper,
    module_cluster,
    spawn_context,
    squatted,
    wait_for,
)

from alternator_shm import Helper
from alternator_shm import fleet as _fleet
from alternator_shm.errors import ConfigurationError, SharedStateError
from alternator_shm.fleet import segment

USERS = {"fs-key": "fs-secret"}
TABLE = "failsoft_table"
SHM = segment.DEFAULT_SHM_DIR
FAILSOFT_LOGGER = "alternator_shm.fleet.failsoft"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


cluster = module_cluster(nodes=3, users=USERS, backend="null")
pytestmark = pytest.mark.usefixtures("clean_cluster")


def _paths(namespace: str, shm_dir: str = SHM) -> tuple[str, str]:
    base = os.path.join(shm_dir, segment.base_name(namespace))
    return base, base + ".lock"


def st_name(options: dict[str, Any]) -> str:
    return "/" + segment.base_name(options["namespace"])


def _calls(client: Any, count: int, tag: str = "k") -> list[str]:
    failures = []
    for i in range(count):
        try:
            client.get_item(TableName=TABLE, Key={"p": {"S": f"{tag}-{i}"}})
        except Exception as exc:  # counted; the test asserts there are none
            failures.append(repr(exc))
    return failures


def _failsoft_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == FAILSOFT_LOGGER and r.levelno >= logging.WARNING
    ]


def _spread(cluster: Any) -> int:
    counts = api_counts(cluster, "GetItem")
    return max(counts.values()) - min(counts.values())


# -- another local user owns the predictable names ------------------------------------------


@needs_root
@pytest.mark.parametrize("which", ["lock", "segment"])
def test_name_squatted_by_another_user_balances_alone(
    cluster: Any, caplog: pytest.LogCaptureFixture, which: str
) -> None:
    caplog.set_level(logging.INFO, logger="alternator_shm")
    options = helper_options(cluster)
    seg_path, lock_path = _paths(options["namespace"])
    with squatted(lock_path if which == "lock" else seg_path), make_helper(
        cluster, **options
    ) as h:
        client = h.new_dynamodb_client()
        assert _calls(client, 31) == []
        st = h.stats()
        assert st.mode == "local"
        assert st.mode_reason is not None and str(NOBODY) in st.mode_reason
        assert sorted(st.nodes) == sorted(n.url.rstrip("/") for n in cluster.nodes)
        assert st.picks == 31
        # This process's own round-robin is exact.
        assert _spread(cluster) <= 1
        warnings = _failsoft_warnings(caplog)
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        text = warnings[0].getMessage()
        assert str(NOBODY) in text and (lock_path if which == "lock" else seg_path) in text
        assert "fix:" in text
        # Later calls add no warning.
        assert _calls(client, 5) == []
        assert len(_failsoft_warnings(caplog)) == 1
        if which == "segment":  # listed by status with its problem, not hidden
            (entry,) = [f for f in _fleet.list_fleets() if f.segment_name == st_name(options)]
            assert entry.problem is not None and f"owned by uid {NOBODY}" in entry.problem


@needs_root
def test_required_raises_shared_state_error(cluster: Any) -> None:
    options = helper_options(cluster, shared="required")
    _seg_path, lock_path = _paths(options["namespace"])
    with squatted(lock_path), make_helper(cluster, **options) as h:
        client = h.new_dynamodb_client()
        with pytest.raises(SharedStateError, match=str(NOBODY)):
            client.get_item(TableName=TABLE, Key={"p": {"S": "x"}})
        with pytest.raises(SharedStateError):
            h.stats()


@needs_root
def test_rejoins_the_host_fleet_once_the_cause_is_gone(
    cluster: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alternator_shm")
    monkeypatch.setenv("ALTERNATOR_SHM_REJOIN_INTERVAL", "0.2")
    options = helper_options(cluster)
    seg_path, lock_path = _paths(options["namespace"])
    with make_helper(cluster, **options) as h:
        client = h.new_dynamodb_client()
        stop = threading.Event()
        failures: list[str] = []
        done = [0]

        def load() -> None:
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                failures.extend(_calls(client, 1, "rejoin"))
                done[0] += 1

        with squatted(lock_path):
            assert _calls(client, 3) == []
            assert h.stats().mode == "local"
            worker = threading.Thread(target=load, daemon=True)
            worker.start()
            assert wait_for(lambda: done[0] >= 5, 30)
        # The foreign file is gone: the process joins the host's fleet again by itself.
        assert wait_for(lambda: h.stats().mode == "shared", 30)
        joined_at = done[0]
        assert wait_for(lambda: done[0] >= joined_at + 10, 30)
        stop.set()
        worker.join(30)
        st = h.stats()
        assert failures == []
        assert st.mode == "shared" and st.mode_reason is None
        assert os.stat(seg_path).st_uid == os.geteuid()
        assert st.picks >= 10  # the shared counter now moves
        assert len(_failsoft_warnings(caplog)) == 1


# -- a full shared-memory filesystem ----------------------------------------------------------


def test_full_tmpfs_balances_alone(
    cluster: Any, tiny_tmpfs: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="alternator_shm")
    monkeypatch.setenv("ALTERNATOR_SHM_DIR", tiny_tmpfs)
    options = helper_options(cluster)
    with make_helper(cluster, **options) as h:
        client = h.new_dynamodb_client()
        assert _calls(client, 12) == []
        st = h.stats()
        assert st.mode == "local"
        assert st.mode_reason is not None and "cannot reserve" in st.mode_reason
        assert _spread(cluster) <= 1
        seg_path, _lock = _paths(options["namespace"], tiny_tmpfs)
        assert not os.path.exists(seg_path)
        (warning,) = _failsoft_warnings(caplog)
        assert "full" in warning.getMessage() and "fix:" in warning.getMessage()


def test_full_shm_injected_then_freed(
    cluster: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ENOSPC injected at the reservation (always runs, root or not); then space comes back."""
    caplog.set_level(logging.INFO, logger="alternator_shm")
    monkeypatch.setenv("ALTERNATOR_SHM_REJOIN_INTERVAL", "0.2")
    real_fallocate = os.posix_fallocate
    full = threading.Event()
    full.set()

    def fallocate(fd: int, offset: int, length: int) -> None:
        if full.is_set():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fallocate(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    options = helper_options(cluster)
    seg_path, _lock = _paths(options["namespace"])
    with make_helper(cluster, **options) as h:
        client = h.new_dynamodb_client()
        assert _calls(client, 9) == []
        st = h.stats()
        assert st.mode == "local" and st.mode_reason is not None
        assert "No space left on device" in st.mode_reason
        assert not os.path.exists(seg_path)
        assert _spread(cluster) <= 1
        full.clear()
        assert wait_for(lambda: h.stats().mode == "shared", 30)
        assert _calls(client, 6) == []
        assert os.path.exists(seg_path)
        assert h.stats().picks == 6
        assert len(_failsoft_warnings(caplog)) == 1
        # Switched back only once the fresh segment had a table: no call went to a bare seed.
        assert not [r for r in caplog.records if "routing to the seed" in r.getMessage()]


# -- a header corrupted by the same user --------------------------------------------------------


def worker_session(
    seeds: list[str], options: dict[str, Any], calls: int, results: Any, hold: Any
) -> None:
    """Child: ``calls`` calls, report; if ``hold`` is given wait for it, call again, report."""
    h = Helper(seeds, **options)
    client = h.new_dynamodb_client()

    def report(tag: str) -> None:
        st = h.stats()
        results.put({
            "tag": tag,
            "failures": _calls(client, calls, f"{os.getpid()}-{tag}"),
            "mode": getattr(st, "mode", None),
            "reason": getattr(st, "mode_reason", None),
        })

    report("first")
    if hold is not None:
        hold.wait(60)
        report("second")
    h.close()


def _status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alternator_shm", "status", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_corrupted_header_new_process_works_old_ones_too_status_lists_it(cluster: Any) -> None:
    ctx = spawn_context()
    options = helper_options(cluster)
    seeds = list(cluster.seeds)
    namespace = options["namespace"]
    seg_path, _lock = _paths(namespace)
    results, hold = ctx.Queue(), ctx.Event()
    old = ctx.Process(target=worker_session, args=(seeds, options, 3, results, hold))
    old.start()
    new = None
    try:
        first = results.get(timeout=60)
        assert first["failures"] == [] and first["mode"] == "shared"
        # The same user scribbles over the header while `old` stays attached.
        with open(seg_path, "r+b") as f:
            f.write(b"\xde\xad\xbe\xef" * 2)
        cluster.clear_logs()
        new_results = ctx.Queue()
        new = ctx.Process(target=worker_session, args=(seeds, options, 30, new_results, None))
        new.start()
        report = new_results.get(timeout=60)
        new.join(30)
        assert new.exitcode == 0
        assert report["failures"] == []
        assert report["mode"] == "local"
        assert "bad header" in report["reason"]
        assert _spread(cluster) <= 1
        # The old process keeps working on its mapping.
        hold.set()
        second = results.get(timeout=60)
        assert second["failures"] == []
        # `status` still lists the segment, reported as corrupt.
        proc = _status("--json")
        assert proc.returncode == 0, proc.stderr
        listed = [e for e in json.loads(proc.stdout) if e["segment_name"].endswith(
            segment.base_name(namespace))]
        assert len(listed) == 1, proc.stdout
        assert listed[0]["problem"] is not None and "bad magic" in listed[0]["problem"]
        human = _status()
        assert segment.base_name(namespace) in human.stdout
        assert "CORRUPT" in human.stdout or "UNUSABLE" in human.stdout
    finally:
        hold.set()
        for p in (old, new):
            if p is not None:
                p.join(30)
                if p.is_alive():
                    p.kill()
        with contextlib.suppress(Exception):
            _fleet.cleanup(namespace)


# -- a failure after a successful attach ------------------------------------------------------


@needs_root
def test_failure_after_attach_switches_without_failing_a_call(
    cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alternator_shm")
    options = helper_options(cluster)
    _seg_path, lock_path = _paths(options["namespace"])
    with make_helper(cluster, **options) as h:
        client = h.new_dynamodb_client()
        assert _calls(client, 3) == []
        assert h.stats().mode == "shared"
        h.close()  # refresher stopped: cleanup may remove the segment under this process
        base = segment.base_name(options["namespace"])
        assert _fleet.cleanup(options["namespace"]) == ["/" + base]
        with squatted(lock_path):
            assert _calls(client, 6) == []
            st = h.stats()
            assert st.mode == "local" and str(NOBODY) in (st.mode_reason or "")
        assert len(_failsoft_warnings(caplog)) == 1


@needs_root
def test_segment_removed_and_name_squatted_while_running_is_not_served_silently(
    cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """rm of the segment and its lock file (as systemd's RemoveIPC does), then another user takes
    the lock name: the running refresher cannot re-attach. The process must not keep serving the
    orphaned mapping as if it were the host's state; it balances alone, without a failed call."""
    caplog.set_level(logging.INFO, logger="alternator_shm")
    options = helper_options(cluster)
    seg_path, lock_path = _paths(options["namespace"])
    with make_helper(cluster, **options) as h:
        client = h.new_dynamodb_client()
        assert _calls(client, 3) == []
        assert wait_for(lambda: h.stats().is_leader, 20)
        os.unlink(seg_path)
        os.unlink(lock_path)
        with squatted(lock_path):
            failures: list[str] = []

            def switched() -> bool:
                failures.extend(_calls(client, 1, "rm"))
                return h.stats().mode == "local"

            assert wait_for(switched, 30)
            assert failures == []
            assert str(NOBODY) in (h.stats().mode_reason or "")
            assert _calls(client, 6) == []
        assert len(_failsoft_warnings(caplog)) == 1


def _forked_calls(h: Helper, client: Any, results: Any) -> None:
    st_before = h.stats()
    failures = _calls(client, 10, f"fork-{os.getpid()}")
    st = h.stats()
    results.put({"failures": failures, "mode": st.mode, "reason": st.mode_reason,
                 "before": st_before.mode, "picks": st.picks})


@needs_root
def test_fork_child_of_a_local_process_works(cluster: Any) -> None:
    import multiprocessing

    options = helper_options(cluster)
    _seg_path, lock_path = _paths(options["namespace"])
    with squatted(lock_path), make_helper(cluster, **options) as h:
        client = h.new_dynamodb_client()
        assert _calls(client, 4) == []
        assert h.stats().mode == "local"
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()
        child = ctx.Process(target=_forked_calls, args=(h, client, results))
        child.start()
        try:
            got = results.get(timeout=60)
        finally:
            child.join(30)
            if child.is_alive():
                child.kill()
        assert child.exitcode == 0
        assert got["failures"] == [] and got["mode"] == "local"
        assert str(NOBODY) in got["reason"]
        assert got["picks"] >= 10  # the child's own counter (it inherited the parent's table)


# -- shared="off" and option validation ------------------------------------------------------


def _shm_entries(namespace: str) -> list[str]:
    base = segment.base_name(namespace)
    return [n for n in os.listdir(SHM) if n.startswith(base)]


def test_off_never_touches_shared_memory(cluster: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="alternator_shm")
    options = helper_options(cluster, shared="off")
    with make_helper(cluster, **options) as h:
        client = h.new_dynamodb_client()
        assert _calls(client, 12) == []
        assert h.live_nodes() and h.update_live_nodes()
        st = h.stats()
        assert st.mode == "local" and "off" in (st.mode_reason or "")
        assert _spread(cluster) <= 1
        assert _shm_entries(options["namespace"]) == []
        assert _failsoft_warnings(caplog) == []  # asked for: nothing to warn about
    assert _shm_entries(options["namespace"]) == []


@pytest.mark.parametrize("bad", ["yes", "", None, True, "AUTO"])
def test_shared_option_is_validated(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="shared"):
        Helper(["127.0.0.1"], shared=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("good", ["auto", "required", "off"])
def test_shared_option_values_accepted_and_pickled(good: str) -> None:
    import pickle

    h = Helper(["127.0.0.1"], shared=good)  # type: ignore[arg-type]
    assert pickle.loads(pickle.dumps(h))._options.shared == good
