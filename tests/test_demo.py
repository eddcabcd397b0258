"""``alternator-shm demo`` end to end: the command a newcomer runs first must tell the truth."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time

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
    per_node = summary["attempts_per_node"]
    assert len(per_node) == 3 and all(count > 0 for count in per_node.values())
    assert sorted(summary["racks"].values()) == ["rack1", "rack1", "rack2"]
    # The leader process was SIGKILLed and another worker took over.
    assert summary["leader_changes"] >= 1
    assert len(set(summary["leader_pids"])) >= 2
    events = " ".join(e["event"] for e in summary["events"])
    assert "SIGKILL leader" in events and "killed node" in events and "restarted node" in events
    # While every node was up the spread was even: only the calls in flight at the node kill
    # (at most one per worker) and the killed leader's last pick may be unaccounted for.
    phase = summary["balanced_phase"]
    assert sum(phase["attempts_per_node"].values()) > 0
    assert phase["max_minus_min"] <= summary["workers"] + 2, phase
    # Calls were all answered, and no node saw fewer requests than calls minus retries.
    assert sum(per_node.values()) >= summary["calls"]
    # The restarted node: when it got attempts again, counted from its own log.
    restarted = summary["restarted_node"]
    assert restarted["node"] in per_node
    assert 0 <= restarted["attempts_since_restart"] <= per_node[restarted["node"]]
    if restarted["back_after_s"] is not None:
        assert restarted["back_after_s"] >= 0 and restarted["attempts_since_restart"] > 0
    else:
        assert restarted["attempts_since_restart"] == 0


def test_demo_progress_lines_when_not_a_tty() -> None:
    proc = _demo("--duration", "4", "--workers", "2", "--backend", "null")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "summary" in out and "failed calls 0" in out
    # Periodic progress lines (no terminal control codes when stdout is not a TTY).
    assert out.count("t=") >= 2 and "\x1b[" not in out
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), [ln for ln in lines if len(ln) > 80]
    # After the SIGKILL, no line shows the killed pid as leader (a stale leader=N).
    [kill] = [i for i, ln in enumerate(lines) if "SIGKILL leader pid" in ln]
    killed = re.search(r"SIGKILL leader pid (\d+)", lines[kill]).group(1)  # type: ignore[union-attr]
    assert not any(f"leader {killed} " in ln for ln in lines[kill + 1:]), lines[kill:]
    # One word per thing: attempts (per node) vs calls; the summary is a table, not a dict.
    summary = out[out.index("summary"):]
    assert "attempts" in summary and "calls" in summary and "requests" not in out
    assert "{" not in summary and "leader changes 1" in summary


def test_demo_live_table_fits_80_columns_on_a_terminal() -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "alternator_shm", "demo", "--duration", "3", "--workers", "2",
         "--backend", "null"],
        stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, close_fds=True,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 80
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in text  # redrawn in place
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).replace("\r", "")
    lines = plain.splitlines()
    assert all(len(line) <= 80 for line in lines), [ln for ln in lines if len(ln) > 80]
    assert "leader changes" in plain and "OK: every claim held" in plain


def test_demo_rejects_bad_options() -> None:
    proc = _demo("--workers", "0")
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


def test_demo_checks_every_claim_it_shows() -> None:
    proc = _demo("--json", "--duration", "4", "--workers", "3", "--backend", "null")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    claims = {c["claim"]: c for c in summary["claims"]}
    assert set(claims) == {"no call failed", "exact round-robin", "one poller",
                           "leader replaced", "node killed and restarted"}, claims
    assert all(c["held"] for c in claims.values()), claims
    assert summary["ok"] is True
    assert summary["localnodes_polls"] > 0


def _state(**changes: object) -> object:
    from alternator_shm.cli import demo

    st = demo._State(started=time.monotonic() - 10, duration=10.0, namespace="demo-x",
                     workers=4, refresh_interval=0.5)
    nodes = ["http://127.9.9.1:1", "http://127.9.9.2:1", "http://127.9.9.3:1"]
    st.per_node = dict.fromkeys(nodes, 1000)
    st.balanced_phase = dict.fromkeys(nodes, 400)
    st.leaders = [11, 12]
    st.processes = 5
    st.localnodes_polls, st.poll_window_s = 25, 9.5
    st.ok = 3000
    st.note("SIGKILL leader pid 11; started a replacement worker")
    st.note("killed node 127.9.9.2 (rack2)")
    st.note("restarted node 127.9.9.2")
    for name, value in changes.items():
        setattr(st, name, value)
    return st


@pytest.mark.parametrize(
    ("changes", "claim", "detail"),
    [
        ({}, None, None),
        ({"failed": 3}, "no call failed", "3 calls failed"),
        ({"balanced_phase": {"a": 400, "b": 300, "c": 400}}, "exact round-robin",
         "max - min = 100"),
        ({"localnodes_polls": 90}, "one poller", "90 polls"),
        ({"leaders": [11]}, "leader replaced", "no other process took over"),
        ({"events": []}, "leader replaced", "the leader was never killed"),
        ({"events": []}, "node killed and restarted", "no node was killed"),
    ],
)
def test_demo_verdict_fails_when_a_claim_does_not_hold(
    changes: dict[str, object], claim: str | None, detail: str | None
) -> None:
    import io

    from alternator_shm.cli import demo

    summary = demo._summary(_state(**changes), "null")  # type: ignore[arg-type]
    out = io.StringIO()
    demo._print_summary(summary, out)
    text = out.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    failed = [c for c in summary["claims"] if not c["held"]]
    if claim is None:
        assert summary["ok"] is True and not failed and "OK: every claim held" in text, text
        return
    assert summary["ok"] is False
    assert claim in [c["claim"] for c in failed]
    [line] = [ln for ln in text.splitlines() if ln.strip().startswith("NO") and claim in ln]
    assert detail in line, text
    assert "FAILED:" in text.splitlines()[-1], text


def test_demo_with_one_worker_says_one_worker_process() -> None:
    proc = _demo("--duration", "3", "--workers", "1", "--backend", "null")
    assert "starting 1 worker process on namespace" in proc.stdout, proc.stdout
