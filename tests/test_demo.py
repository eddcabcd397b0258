"""``alternator-shm demo`` end to end: the command a newcomer runs first must tell the truth."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(90)


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alternator_shm", "demo", *args],
        capture_output=True, text=True, timeout=80, stdin=subprocess.DEVNULL,
    )


def test_demo_json_summary() -> None:
    proc = _demo("--json", "--duration", "5", "--backend", "null")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["ok"] is True
    assert summary["failed_calls"] == 0
    assert summary["calls"] > 0
    per_node = summary["requests_per_node"]
    assert len(per_node) == 3 and all(count > 0 for count in per_node.values())
    assert sorted(summary["racks"].values()) == ["rack1", "rack1", "rack2"]
    # The leader process was SIGKILLed and another worker took over.
    assert summary["leader_changes"] >= 1
    assert len(set(summary["leader_pids"])) >= 2
    events = " ".join(e["event"] for e in summary["events"])
    assert "SIGKILL leader" in events and "killed node" in events and "restarted node" in events
    # While every node was up the spread was even: only the calls in flight at the snapshot
    # (at most one per worker) may be unaccounted for.
    phase = summary["balanced_phase"]
    assert sum(phase["per_node"].values()) > 0
    assert phase["max_minus_min"] <= summary["workers"] + 1, phase
    # Calls were all answered, and no node saw fewer requests than calls minus retries.
    assert sum(per_node.values()) >= summary["calls"]


def test_demo_progress_lines_when_not_a_tty() -> None:
    proc = _demo("--duration", "3", "--workers", "2", "--backend", "null")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "summary" in out and "failed calls 0" in out
    # Periodic progress lines (no terminal control codes when stdout is not a TTY).
    assert out.count("t=") >= 2 and "\x1b[" not in out
    assert "SIGKILL leader" in out


def test_demo_rejects_bad_options() -> None:
    proc = _demo("--workers", "0")
    assert proc.returncode == 2
