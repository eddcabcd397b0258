"""Review of issue 16: ``scripts/bench_compare.py`` section 7 (RSS per worker) must measure
each client in a process that carries only that client's code. It first measured in spawned
children, which re-run the parent's main module (``multiprocessing.spawn``: ``runpy.run_path
(main, run_name="__mp_main__")``), and bench_compare imports alternator_shm and the emulator:
the "plain boto3" baseline carried our import cost and "vs plain" hid it (clean interpreters:
ours +4.1 MiB, peer +2.7 MiB; that way: +1.6 / +1.0). Each measurement now runs
``_bench_clients.rss_main`` in a fresh ``python -c``, so the module it imports must load no
client library by itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_rss_child_module_imports_no_client_library() -> None:
    probe = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'scripts')!r})\n"
        "import _bench_clients\n"
        "print(sorted(m for m in ('alternator_shm', 'alternator', 'boto3', 'botocore',"
        " 'aiobotocore') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"

