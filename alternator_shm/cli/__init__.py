"""The ``alternator-shm`` command line: one module per command, wired with argparse.

Each command module exposes ``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``.
Only the module of the command being run is imported, so ``status`` never pays for the
emulator's imports and a missing optional extra only matters to the command that needs it.

Exit status: 0 success, 1 the command ran and found a problem, 2 a user error (bad option,
unknown namespace, missing extra: one line on stderr, never a traceback), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["CommandParser", "UsageError", "main"]

# command -> (module, one-line help); the order is the order of ``--help``.
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("alternator_shm.cli.demo",
             "watch an emulated 3-node cluster survive a leader kill and a node kill"),
    "emulator": ("alternator_shm.cli.emulator",
                 "run a local N-node Alternator emulator in the foreground"),
    "status": ("alternator_shm.cli.status",
               "shared state on this host: leader, generation, nodes, picks"),
    "check": ("alternator_shm.cli.check",
              "ask a cluster what discovery would see (/localnodes, dc and rack)"),
    "cleanup": ("alternator_shm.cli.cleanup",
                "remove shared state that no process uses any more"),
}

_DESCRIPTION = (
    "Host-wide load balancing of boto3 DynamoDB traffic across ScyllaDB Alternator nodes. "
    "Run 'alternator-shm COMMAND --help' for the options of a command."
)


class UsageError(Exception):
    """A user mistake the command reports as one line on stderr, with exit status 2."""


class CommandParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _version() -> str:
    from alternator_shm._version import __version__

    return f"alternator-shm {__version__}"


def build_parser(only: str | None = None) -> CommandParser:
    """The whole parser; with ``only``, configure just that command (imports its module)."""
    parser = CommandParser(prog="alternator-shm", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=_version(),
                        help="print the version and exit")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                 parser_class=CommandParser, help="one of:")
    for name, (module_name, help_text) in _COMMANDS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            importlib.import_module(module_name).configure(sub)
    return parser


def _quiet_broken_pipe() -> None:
    """The reader went away (``status | head -1``): stop writing, say nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``alternator-shm`` and ``python -m alternator_shm``; returns the status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Import only the command being run (none at all for a bare --help or --version).
    wanted = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(wanted if wanted in _COMMANDS else "")
    try:
        # Inside the try: on Python < 3.11.4 argparse's --help lets a BrokenPipeError out.
        args = parser.parse_args(args_list)
        module = importlib.import_module(_COMMANDS[args.command][0])
        status = int(module.run(args))
        sys.stdout.flush()
        return status
    except UsageError as exc:
        print(f"alternator-shm {getattr(args, 'command', '')}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 1
    except KeyboardInterrupt:
        return 130
