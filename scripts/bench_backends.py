#!/usr/bin/env python3
# ruff: noqa: E501 - the markdown table rows below are long on purpose
"""Which counter backend a process gets, and what each costs per call.

The ``atomic`` backend has two implementations, tried in this order (fleet/counter.py): the
optional C extension ``alternator_shm.fleet._atomic`` (built at install when a C compiler is
present), then gcc's ``libatomic.so.1`` through ctypes; without either the segment is created
with the ``flock`` backend. Each variant runs in its own process (the switches
``ALTERNATOR_SHM_NO_ATOMIC_EXT=1`` / ``ALTERNATOR_SHM_NO_LIBATOMIC=1`` hide one implementation,
as a slim image without a compiler or without ``libatomic1`` would), on a fresh namespace, and
times with ``perf_counter_ns``: one counter ``advance()``, one health-word ``fetch_add`` and one
full round-robin pick through :class:`~alternator_shm.routing.Router` (table read, health view,
advance, pick record). Writes ``benchmarks/backends.md``.

Usage: ``python scripts/bench_backends.py [--calls N] [--out benchmarks/backends.md]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

VARIANTS = [
    ("extension", {}),
    ("libatomic", {"ALTERNATOR_SHM_NO_ATOMIC_EXT": "1"}),
    ("flock", {"ALTERNATOR_SHM_NO_ATOMIC_EXT": "1", "ALTERNATOR_SHM_NO_LIBATOMIC": "1"}),
]
NODES = [f"http://127.0.0.{i}:8000" for i in range(1, 6)]

BASES = """## Which backend a deployment gets

| base | C compiler at `pip install` | `libatomic.so.1` | backend |
|---|---|---|---|
| glibc, full image (`python:3.x`, has gcc) | yes | yes (`libatomic1`, pulled in by gcc) | atomic, extension |
| glibc slim (`python:3.x-slim`), installed from a wheel with the extension | no | no | atomic, extension |
| glibc slim, installed from the sdist | no: extension skipped | no | **flock** |
| glibc slim + `apt-get install libatomic1` | no | yes | atomic, libatomic |
| musl (`python:3.x-alpine`) from the sdist | no (unless `build-base`) | no (unless `apk add libatomic`) | **flock** |
| musl + `apk add build-base` (or a musllinux wheel) | yes | yes (gcc pulls it in) | atomic, extension |

Facts behind it: on Debian 12 `dpkg -S libatomic.so.1` names `libatomic1` (source gcc-12,
priority *optional*; its only reverse dependency here is `libgcc-12-dev`), so slim images do not
have it. The extension is built with `optional=True` (setup.py): without a compiler the install
still succeeds (checked with `CC=/bin/false python setup.py build_ext --inplace`: a warning, no
`.so`, `atomic_impl()` then answers `libatomic`, or None with `ALTERNATOR_SHM_NO_LIBATOMIC=1`).
Publishing manylinux and musllinux wheels (cibuildwheel) gives every base the extension.
Mixed attachers are safe: the extension and libatomic are both real atomic instructions on the
same word (tests/fleet/test_fleet_atomic_impl.py); a segment created with `flock` stays `flock`
for every attacher.
"""


def _child(calls: int) -> None:
    from alternator_shm.fleet import SharedFleet, cleanup, layout
    from alternator_shm.fleet.counter import atomic_impl
    from alternator_shm.routing import Router

    ns = f"bench-backends-{uuid.uuid4().hex}"
    fleet = SharedFleet(ns, refresh=lambda: NODES, refresh_interval=3600,
                        idle_refresh_interval=3600)
    try:
        fleet.wait_for_nodes(10)
        ops = fleet.attachment.ops
        router = Router(fleet, ())
        off = layout.REQUEST_OFF  # a word nobody else touches during the run
        result: dict[str, object] = {"backend": fleet.stats().counter_backend,
                                     "impl": atomic_impl() if ops.name == "atomic" else "-"}
        clock = time.perf_counter_ns
        for label, fn in (("advance", ops.advance), ("fetch_add", lambda: ops.fetch_add(off, 1)),
                          ("pick", router.next_node)):
            for _ in range(2000):
                fn()
            samples = []
            for _ in range(calls):
                t0 = clock()
                fn()
                samples.append(clock() - t0)
            samples.sort()
            result[label] = (samples[len(samples) // 2] / 1000,
                             samples[int(len(samples) * 0.99)] / 1000)
    finally:
        fleet.close()
        cleanup(ns)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--out", default="benchmarks/backends.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.calls)
        return
    rows = []
    for label, env in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--calls", str(args.calls)],
            env={**os.environ, **env}, check=True, capture_output=True, text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        rows.append([label, r["backend"], r["impl"],
                     *(f"{r[k][0]:.2f} / {r[k][1]:.2f}" for k in ("advance", "fetch_add", "pick"))])
    head = ["available", "segment backend", "implementation", "advance() µs p50 / p99",
            "fetch_add µs p50 / p99", "full pick µs p50 / p99"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    text = (
        "# Counter backends (`scripts/bench_backends.py`)\n\n"
        f"Command: `python scripts/bench_backends.py --calls {args.calls}`. One process per "
        "row, fresh namespace; timer overhead (~60-100 ns) included.\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.platform()}; load average at the end: {load}."
        "\n\n" + table + "\n\n" + BASES
    )
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
