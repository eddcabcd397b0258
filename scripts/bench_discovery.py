#!/usr/bin/env python3
"""Bounded discovery, measured: paused nodes, an endless answer, a trickling answer.

Each measurement runs in a fresh child process that is the elected refresher (the leader) of
a fresh namespace, through the public API only (``Helper.update_live_nodes``), so the same
script measures any version of the library put first on ``PYTHONPATH``:

* ``paused``: a 10-node emulated cluster, all 10 in the published table, then 8 paused
  (SIGSTOP semantics: connections accepted, never answered; the lowest 8, which a sorted
  ask order meets first). Time of the next refresh (median of ``--trials``).
* ``endless``: the only seed answers ``/localnodes`` with a body that never ends (a loopback
  raw-socket server, capped at ``--endless-mib`` so an unbounded client stops too). Peak RSS
  growth of the leader over 3 refreshes (VmHWM minus VmRSS before).
* ``trickle``: the only seed sends a valid answer one byte every 0.1 s. Time for
  ``update_live_nodes(timeout=5)`` to return or raise (given up after ``--give-up`` s).

Results go to ``benchmarks/discovery.json`` under ``--label`` (e.g. ``before`` / ``after``);
``benchmarks/discovery.md`` is rewritten with every label stored there.

Usage::

    PYTHONPATH=<tree> python scripts/bench_discovery.py --label after [--trials 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


# -- children -------------------------------------------------------------------------------------


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _helper(seeds: list[str], port: int) -> Any:
    from alternator_shm import Helper

    return Helper(seeds, port=port, namespace=f"bench-{uuid.uuid4().hex}", refresh_interval=1.0,
                  idle_refresh_interval=3600.0)


def _cleanup(helper: Any) -> None:
    from alternator_shm import fleet

    helper.close()
    with contextlib.suppress(Exception):
        fleet.cleanup(helper.namespace)


def child_paused(trials: int) -> dict[str, Any]:
    from alternator_shm.emulator import Cluster

    times: list[float] = []
    with Cluster(nodes=10, backend="null") as c:
        nodes = sorted(c.nodes, key=lambda n: n.url)
        paused = nodes[:8]
        helper = _helper([n.ip for n in nodes], c.port)
        try:
            for _ in range(trials):
                deadline = time.monotonic() + 60
                while len(helper.update_live_nodes(timeout=60)) != 10:
                    if time.monotonic() > deadline:
                        raise RuntimeError("table did not come back to 10 nodes")
                    time.sleep(0.2)
                for node in paused:
                    node.pause()
                started = time.monotonic()
                with contextlib.suppress(Exception):
                    helper.update_live_nodes(timeout=60)
                times.append(time.monotonic() - started)
                for node in paused:
                    node.resume()
        finally:
            _cleanup(helper)
    return {"refresh_s": times, "median_s": statistics.median(times)}


class _Server:
    def __init__(self, mode: str, cap: int) -> None:
        self.mode, self.cap, self.sent = mode, cap, 0
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            if self.mode == "endless":
                conn.sendall(head + b"Connection: close\r\n\r\n[")
                chunk = b'"127.0.0.1", ' * 5000
                while self.sent < self.cap and not self.stop.is_set():
                    conn.sendall(chunk)
                    self.sent += len(chunk)
            else:
                body = b'["127.0.0.1"]' + b" " * 3000
                conn.sendall(head + f"Content-Length: {len(body)}\r\n\r\n".encode())
                for byte in body:
                    if self.stop.wait(0.1):
                        return
                    conn.sendall(bytes([byte]))


def child_endless(cap_mib: int) -> dict[str, Any]:
    server = _Server("endless", cap_mib * 1024 * 1024)
    helper = _helper(["127.0.0.1"], server.port)
    before = _rss_kib("VmRSS")
    try:
        for _ in range(3):
            with contextlib.suppress(Exception):
                helper.update_live_nodes(timeout=120)
    finally:
        server.stop.set()
        _cleanup(helper)
    peak = _rss_kib("VmHWM")
    return {"rss_before_mib": before / 1024, "rss_peak_mib": peak / 1024,
            "growth_mib": (peak - before) / 1024, "server_sent_mib": server.sent / 2**20}


def child_trickle(give_up: float) -> dict[str, Any]:
    server = _Server("trickle", 0)
    helper = _helper(["127.0.0.1"], server.port)
    outcome: list[str] = []

    def run() -> None:
        try:
            helper.update_live_nodes(timeout=5.0)
            outcome.append("returned")
        except Exception as e:
            outcome.append(type(e).__name__)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(give_up)
    elapsed = time.monotonic() - started
    server.stop.set()
    result = {"seconds": elapsed, "outcome": outcome[0] if outcome else "still blocked"}
    if not outcome:
        os._exit(_emit(result))  # the leader thread is stuck; do not wait for it
    _cleanup(helper)
    return result


def _emit(result: dict[str, Any]) -> int:
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- parent ---------------------------------------------------------------------------------------


def _run_child(args: list[str], timeout: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, timeout=timeout, env=dict(os.environ))
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            parsed: dict[str, Any] = json.loads(line[7:])
            return parsed
    raise RuntimeError(f"child {args} failed:\n{out.stdout}\n{out.stderr[-3000:]}")


def _render(results: dict[str, Any]) -> str:
    lines = [
        "# Bounded discovery",
        "",
        "`python scripts/bench_discovery.py --label <label>` (see the script's docstring); "
        f"{platform.machine()}, Python {platform.python_version()}, 2 shared cores (noisy).",
        "",
        "| label | refresh, 8 of 10 nodes paused (median, s) | leader RSS growth, endless "
        "/localnodes (MiB) | bytes read before drop (MiB sent) | update_live_nodes(timeout=5), "
        "trickling node (s) |",
        "|---|---|---|---|---|",
    ]
    for label, r in results.items():
        p, e, t = r["paused"], r["endless"], r["trickle"]
        trials = ", ".join(f"{x:.1f}" for x in p["refresh_s"])
        lines.append(
            f"| {label} | {p['median_s']:.2f} ({trials}) | {e['growth_mib']:.0f} "
            f"(peak {e['rss_peak_mib']:.0f}) | {e['server_sent_mib']:.0f} | "
            f"{t['seconds']:.1f} ({t['outcome']}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="current")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--endless-mib", type=int, default=512)
    parser.add_argument("--give-up", type=float, default=40.0)
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child:
        kind = args.child[0]
        if kind == "paused":
            return _emit(child_paused(args.trials))
        if kind == "endless":
            return _emit(child_endless(args.endless_mib))
        return _emit(child_trickle(args.give_up))
    common = ["--trials", str(args.trials), "--endless-mib", str(args.endless_mib),
              "--give-up", str(args.give_up)]
    result = {
        "paused": _run_child(["paused", *common], timeout=args.trials * 120 + 60),
        "endless": _run_child(["endless", *common], timeout=600),
        "trickle": _run_child(["trickle", *common], timeout=args.give_up + 60),
    }
    OUT_DIR.mkdir(exist_ok=True)
    store = OUT_DIR / "discovery.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    results[args.label] = result
    store.write_text(json.dumps(results, indent=2) + "\n")
    table = _render(results)
    (OUT_DIR / "discovery.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
