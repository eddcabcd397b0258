"""The ``alternator-shm`` command line: demo, emulator, status, check, cleanup.

Each sub-command lives in the module that owns its concern; this file only wires argparse, so
importing it stays cheap and no sub-command drags in another's dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# sub-command -> module exposing ``configure_parser(parser)`` and ``run(args) -> int``
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("alternator_shm._demo", "embedded emulated cluster + a multi-process workload"),
    "emulator": ("alternator_shm.emulator.cli", "run a local N-node Alternator emulator"),
    "status": ("alternator_shm._status", "shared tables on this host: leader, nodes, picks"),
    "check": ("alternator_shm._check", "/localnodes, dc/rack checks against a real cluster"),
    "cleanup": ("alternator_shm._status", "remove shared state no process uses any more"),
}


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alternator-shm", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in _COMMANDS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text)
        # Import only the module of the sub-command being run (and none for --help).
        if name == wanted:
            module = importlib.import_module(module_name)
            configure = getattr(module, f"configure_{name}_parser", None)
            if configure is None:
                configure = module.configure_parser
            configure(sub)
            sub.set_defaults(_module=module_name)
    return parser


def _version() -> str:
    from alternator_shm._version import __version__

    return f"alternator-shm {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser(args_list)
    args = parser.parse_args(args_list)
    module = importlib.import_module(args._module)
    run = getattr(module, f"run_{args.command}", None)
    if run is None:
        run = module.run
    try:
        return int(run(args))
    except KeyboardInterrupt:
        return 130
