"""Optional extras: say which command installs a missing one, instead of a traceback."""

from __future__ import annotations

import importlib

from alternator_shm.cli import UsageError

__all__ = ["require_emulator"]


def _missing(modules: tuple[str, ...]) -> list[str]:
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def require_emulator(command: str, *, backend: str, https: bool = False) -> None:
    """Raise :class:`UsageError` naming the install command if the emulator extra is missing.

    Only what the chosen backend needs is required: ``moto`` (and ``werkzeug``) for the moto
    backend, ``trustme`` for TLS; the ``null`` backend needs neither.
    """
    needed: tuple[str, ...] = ("moto", "werkzeug") if backend == "moto" else ()
    if https:
        needed += ("trustme",)
    missing = _missing(needed)
    if missing:
        raise UsageError(
            f"{command} needs {' and '.join(missing)} (the emulator extra): "
            "pip install 'alternator-shm[emulator]'"
        )
