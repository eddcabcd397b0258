"""A fleet's refresh schedule: the one owner of its defaults and of their validation.

The shared fleet, its process-local twin and the fail-soft wrapper take the same timing options
(and the Helper the two it exposes); each used to write its own defaults and its own "positive"
check, and the checks differed (NaN and infinity passed ``min(...) <= 0``; the back-off and
rejoin periods were not checked at all). Every period is a finite number of seconds > 0: zero or
negative would spin, NaN compares false with everything, and infinity would never refresh (and
never let a stopped leader be taken over: the takeover bound is ``3 x refresh_interval``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from alternator_shm.errors import ConfigurationError

__all__ = ["DEFAULT", "Schedule", "seconds"]


def seconds(name: str, value: object) -> float:
    """``value`` as a period in seconds: a finite int or float > 0 (not a bool).

    Raises :class:`ConfigurationError` (a ``ValueError``) naming ``name`` otherwise.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Schedule:
    """When a fleet's refresher runs, in seconds; validated when built.

    ``refresh_interval`` while requests flow, ``idle_refresh_interval`` while none do;
    ``poll_interval`` is how often followers (and the idle leader) look again; after ``n``
    failed refreshes in a row the next comes after ``min(backoff_max, first_backoff *
    2**(n-1))``.
    """

    refresh_interval: float = 1.0
    idle_refresh_interval: float = 60.0
    poll_interval: float = 0.2
    #: None: ``poll_interval`` (see :attr:`first_backoff`).
    backoff_initial: float | None = None
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None or field.name != "backoff_initial":
                object.__setattr__(self, field.name, seconds(field.name, value))

    @property
    def first_backoff(self) -> float:
        """The wait after the first failed refresh."""
        return self.poll_interval if self.backoff_initial is None else self.backoff_initial

    def kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments of a fleet constructor."""
        return dataclasses.asdict(self)


#: The defaults every fleet constructor uses.
DEFAULT = Schedule()
