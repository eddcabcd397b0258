"""The ``alternator-shm`` command line: one module per command, wired with argparse.

Each command module exposes ``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``,
and may expose ``validate(args)``, which raises :class:`UsageError` for a combination of options
argparse cannot express (an option that would be ignored is refused, never dropped). Only the
module of the command being run is imported, so ``status`` never pays for the emulator's imports
and a missing optional extra only matters to the command that needs it.

Exit status: 0 success, 1 the command ran and found a problem, 2 a user error (bad option,
unknown namespace, missing extra: one line on stderr, never a traceback), 130 on Ctrl-C, 141
(128 + SIGPIPE, what a shell shows for ``yes | head -1``) when the reader of stdout went away:
the command stops quietly, as the Python docs' "Note on SIGPIPE" recommends.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = ["EXIT_BROKEN_PIPE", "CommandParser", "UsageError", "main", "plural"]

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

#: A command whose stdout reader went away ends with the status of a SIGPIPE death.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


class UsageError(Exception):
    """A user mistake the command reports as one line on stderr, with exit status 2."""


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 node``, ``3 nodes`` (``many`` for irregular words: ``process`` / ``processes``)."""
    return f"{count} {one if count == 1 else (many or one + 's')}"


class CommandParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not the usage block.

    ``commands`` maps each command name to its own parser, so a mistake found after parsing
    (``validate``) is reported by the command's parser, under its own name.
    """

    commands: dict[str, CommandParser]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        # argparse drops a failed write (--help, --version into a closed pipe); let main()
        # see it, so every command ends the same way when its reader went away.
        if message:
            (file or sys.stderr).write(message)


class _SubcommandParser(CommandParser):
    """The parser of one command: it refuses words it does not know itself.

    argparse hands a subparser's leftover words back to the top-level parser, whose error then
    names ``alternator-shm`` and its usage instead of the command that was given them.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _version() -> str:
    from alternator_shm._version import __version__

    return f"alternator-shm {__version__}"


def build_parser(only: str | None = None) -> CommandParser:
    """The whole parser; with ``only``, configure just that command (imports its module)."""
    parser = CommandParser(prog="alternator-shm", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=_version(),
                        help="print the version and exit")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                 parser_class=_SubcommandParser, help="one of:")
    for name, (module_name, help_text) in _COMMANDS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text)
        parser.commands[name] = sub
        if only is None or name == only:
            importlib.import_module(module_name).configure(sub)
    return parser


def _quiet_broken_pipe() -> int:
    """The reader went away (``status | head -1``): send what is left to /dev/null (Python
    flushes stdout again at exit) and end with the status of a SIGPIPE death."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def _run(args_list: list[str]) -> int:
    # Import only the command being run (none at all for a bare --help or --version).
    wanted = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(wanted if wanted in _COMMANDS else "")
    args = parser.parse_args(args_list)
    module = importlib.import_module(_COMMANDS[args.command][0])
    validate = getattr(module, "validate", None)
    if validate is not None:
        try:
            validate(args)
        except UsageError as exc:
            parser.commands[args.command].error(str(exc))
    try:
        return int(module.run(args))
    except UsageError as exc:
        print(f"alternator-shm {args.command}: error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``alternator-shm`` and ``python -m alternator_shm``; returns the status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            status = _run(args_list)
        except SystemExit as exc:  # argparse: --help, --version, a usage error
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        # Flushed here, inside the try: a closed pipe found by the final flush is ours too.
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        return 130
