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
import shutil
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


_MUSL_HARNESS = r"""
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
/* The extension's operations (fleet/_atomic.c) on one MAP_SHARED word, 4 processes. */
int main(void) {
    uint64_t *w = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED) return 2;
    w[0] = 0; w[1] = 0;
    for (int p = 0; p < 4; p++) {
        if (fork() == 0) {
            for (int i = 0; i < 1000000; i++) {
                __atomic_fetch_add(&w[0], 1, __ATOMIC_SEQ_CST);
                uint64_t seen = __atomic_load_n(&w[1], __ATOMIC_ACQUIRE);
                while (!__atomic_compare_exchange_n(&w[1], &seen, seen + 1, 0,
                                                    __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE)) {}
            }
            _exit(0);
        }
    }
    for (int p = 0; p < 4; p++) wait(0);
    printf("%llu %llu\n", (unsigned long long)w[0], (unsigned long long)w[1]);
    return !(w[0] == 4000000 && w[1] == 4000000);
}
"""


def libc_independence() -> str:
    """What the extension needs from the C library, and the same atomics under musl."""
    import sysconfig
    import tempfile

    from alternator_shm.fleet import _atomic

    lines = ["## Does the extension depend on glibc?", ""]
    nm = subprocess.run(["nm", "-u", _atomic.__file__], capture_output=True, text=True)
    needed = [line.split()[-1] for line in nm.stdout.splitlines()
              if line.split()[0] == "U" and not line.split()[-1].startswith(("Py", "_Py"))]
    lines.append(f"`nm -u` on the built `{Path(_atomic.__file__).name}`: symbols it needs "
                 f"besides CPython's API: {', '.join(needed) or '**none**'} (no libc, no "
                 "libatomic: each atomic is a `lock`-prefixed instruction).")
    musl = shutil.which("musl-gcc")
    if musl is None:
        lines.append("\nmusl: not checked (`musl-gcc` not installed; `apt-get install "
                     "musl-tools`).")
        return "\n".join(lines) + "\n"
    src = Path(__file__).resolve().parent.parent / "alternator_shm/fleet/_atomic.c"
    include = sysconfig.get_paths()["include"]
    with tempfile.TemporaryDirectory() as tmp:
        ext = subprocess.run([musl, "-O2", "-fPIC", "-c", f"-I{include}", str(src),
                              "-o", f"{tmp}/atomic.o"], capture_output=True, text=True)
        Path(f"{tmp}/h.c").write_text(_MUSL_HARNESS)
        built = subprocess.run([musl, "-O2", "-static", f"{tmp}/h.c", "-o", f"{tmp}/h"],
                               capture_output=True, text=True)
        ran = (subprocess.run([f"{tmp}/h"], capture_output=True, text=True, timeout=120)
               if built.returncode == 0 else None)
    lines += [
        "",
        f"musl (`musl-gcc`, musl {_musl_version()}): the extension's source compiles "
        f"({'ok' if ext.returncode == 0 else 'FAILED: ' + ext.stderr.strip()[-300:]}; "
        "against this glibc CPython's headers, as no musl CPython is installed here); a "
        "static musl program doing the extension's operations (`fetch_add`, `load`, "
        "`compare_exchange` loop) 1,000,000 times in each of 4 forked processes on one "
        "`MAP_SHARED` word ends with "
        + (f"`{ran.stdout.strip()}` (expected `4000000 4000000`): "
           f"{'exact' if ran.returncode == 0 else 'WRONG'}." if ran is not None
           else f"no result (build failed: {built.stderr.strip()[-300:]})."),
        "Not measured: a musl CPython importing the extension (no Alpine image or musl "
        "CPython on this machine), so the musl rows of the table above are from the build "
        "rules, not a run.",
    ]
    return "\n".join(lines) + "\n"


def _musl_version() -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "musl"],
                          capture_output=True, text=True)
    return done.stdout.strip() or "?"


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
        if label != "flock" and r["impl"] != label:
            # e.g. no compiled extension in this checkout: say so rather than mislabel the row
            label = f"{label} (not available here)"
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
        f"Run {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC. "
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.platform()}; load average at the end: {load}."
        "\n\n" + table + "\n\n" + BASES + "\n" + libc_independence()
    )
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
