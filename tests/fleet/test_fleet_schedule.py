"""The fleets' timing options: one validating owner (``fleet/schedule.py``) for all three fleets.

The union of what SharedFleet, StandaloneFleet and FailSoftFleet each checked before, plus the
holes their separate ``min(...) <= 0`` checks had (NaN, infinity, unchecked back-off and rejoin
periods). Construction touches nothing, so these run without shared memory.
"""

from __future__ import annotations

import inspect
import math
import uuid
from typing import Any

import pytest

from alternator_shm import Helper
from alternator_shm.errors import ConfigurationError
from alternator_shm.fleet import SharedFleet
from alternator_shm.fleet.failsoft import FailSoftFleet
from alternator_shm.fleet.schedule import DEFAULT, Schedule, seconds
from alternator_shm.fleet.standalone import StandaloneFleet

FLEETS = [SharedFleet, StandaloneFleet, FailSoftFleet]
TIMING = ["refresh_interval", "idle_refresh_interval", "poll_interval", "backoff_initial",
          "backoff_max"]  # fmt: skip
BAD = [0, -1.0, math.nan, math.inf, True, "1"]


def _ns() -> str:
    return f"t-{uuid.uuid4().hex}"


@pytest.mark.parametrize("fleet", FLEETS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("option", TIMING)
@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_every_fleet_refuses_the_same_bad_periods(fleet: Any, option: str, bad: object) -> None:
    with pytest.raises(ValueError, match=option) as caught:
        fleet(_ns(), **{option: bad})
    assert isinstance(caught.value, ConfigurationError)


@pytest.mark.parametrize("fleet", FLEETS, ids=lambda f: f.__name__)
def test_every_fleet_has_the_same_defaults(fleet: Any) -> None:
    params = inspect.signature(fleet).parameters
    for name in ("refresh_interval", "idle_refresh_interval", "poll_interval"):
        assert params[name].default == getattr(DEFAULT, name)
    if fleet is not FailSoftFleet:  # which passes them on through **shared_kwargs
        assert params["backoff_initial"].default == DEFAULT.backoff_initial
        assert params["backoff_max"].default == DEFAULT.backoff_max


@pytest.mark.parametrize("option", ["rejoin_interval", "rejoin_max"])
@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_failsoft_rejoin_periods(option: str, bad: object) -> None:
    with pytest.raises(ConfigurationError, match=option):
        FailSoftFleet(_ns(), **{option: bad})


def test_failsoft_hands_one_schedule_to_both_fleets() -> None:
    fleet = FailSoftFleet(_ns(), refresh_interval=3, poll_interval=0.5, backoff_max=7)
    shared = fleet._shared._config
    local = fleet._standalone
    assert (shared.refresh_interval, shared.poll_interval) == (3.0, 0.5)
    assert (local._refresh_interval, local._poll) == (3, 0.5)
    # backoff_initial defaults to the poll interval, in both; backoff_max reaches both.
    assert shared.backoff_initial == local._backoff_initial == 0.5
    assert shared.backoff_max == local._backoff_max == 7


def test_schedule_accepts_ints_and_resolves_the_first_backoff() -> None:
    s = Schedule(refresh_interval=2, poll_interval=1)
    assert s.refresh_interval == 2.0 and isinstance(s.refresh_interval, float)
    assert s.first_backoff == 1.0
    assert Schedule(backoff_initial=0.05).first_backoff == 0.05
    assert set(s.kwargs()) == set(TIMING)


@pytest.mark.parametrize("option", ["refresh_interval", "idle_refresh_interval"])
@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_helper_refuses_what_the_fleet_refuses(option: str, bad: object) -> None:
    with pytest.raises(ConfigurationError, match=option):
        Helper(["127.0.0.1"], **{option: bad})
    with pytest.raises(ConfigurationError, match=option):
        seconds(option, bad)
