"""Numeric option types for argparse: every option states its own bounds, one message shape.

``integer(1, 64)`` and ``seconds(0.1, 3600)`` return the ``type=`` callables; a refused value
reads ``expected an integer between 1 and 64, got '1.5'``, which argparse prefixes with the
command and the option. NaN and infinities are refused (no option means "forever" by them).
The bounds stay readable on the callable (``.low``, ``.high``) for the tests and for messages
that combine options.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["Integer", "Seconds", "integer", "seconds"]


class Integer:
    """An ``int`` option between ``low`` and ``high`` inclusive (decimal digits only)."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.__name__ = "integer"  # argparse names the type in some of its own messages

    def describe(self) -> str:
        return f"an integer between {self.low} and {self.high}"

    def __call__(self, value: str) -> int:
        try:
            number = int(value, 10)
        except ValueError:
            number = None
        if number is None or not self.low <= number <= self.high:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {value!r}")
        return number


class Seconds:
    """A finite ``float`` number of seconds, ``low < s`` (``above=True``) or ``low <= s``,
    and ``s <= high``."""

    def __init__(self, low: float, high: float, *, above: bool = False) -> None:
        self.low, self.high, self.above = low, high, above
        self.__name__ = "seconds"

    def describe(self) -> str:
        if self.above:
            return f"a number of seconds more than {self.low:g} and at most {self.high:g}"
        return f"a number of seconds between {self.low:g} and {self.high:g}"

    def __call__(self, value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        low_ok = number > self.low if self.above else number >= self.low
        if not (math.isfinite(number) and low_ok and number <= self.high):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {value!r}")
        return number


def integer(low: int, high: int) -> Integer:
    return Integer(low, high)


def seconds(low: float, high: float, *, above: bool = False) -> Seconds:
    return Seconds(low, high, above=above)
