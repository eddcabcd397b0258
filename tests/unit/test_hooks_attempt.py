"""before-send reporting, one owner (``hooks.Attempt``) for the sync and the async handler.

Each outcome of an attempt is driven through both handlers with the same fake router, which
records the order of events: in flight, failure, end of flight (answered or not), success.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any

import botocore.awsrequest
import botocore.exceptions
import pytest

from alternator_shm.aio.hooks import _AsyncHandlers
from alternator_shm.errors import UndecodableAnswerError
from alternator_shm.hooks import HookOptions, _Handlers

NODE = "http://127.0.0.1:8000"


class _Router:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def choose(self, tried: Collection[str], plan: Sequence[str] | None = None) -> str:
        return NODE

    def nodes(self) -> tuple[str, ...]:
        return (NODE,)

    def attempt_started(self, node: str) -> str:
        self.events.append(("started", node))
        return "token"

    def attempt_finished(self, token: Any, answered: bool) -> None:
        self.events.append(("finished", (token, answered)))

    def report_failure(self, node: str, error: BaseException) -> None:
        self.events.append(("failure", type(error).__name__))

    def report_success(self, node: str) -> None:
        self.events.append(("success", node))


class _Answer:
    def __init__(self, status: int) -> None:
        self.status_code = status


class _Transport:
    """Answers ``outcome`` (a status) or raises it, from a sync or an async ``send``."""

    def __init__(self, outcome: int | BaseException) -> None:
        self.outcome = outcome

    def _result(self) -> _Answer:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return _Answer(self.outcome)

    def send(self, request: Any, **kwargs: Any) -> _Answer:
        return self._result()


class _AsyncTransport(_Transport):
    async def send(self, request: Any, **kwargs: Any) -> _Answer:  # type: ignore[override]
        await asyncio.sleep(0)
        return self._result()


def _request() -> botocore.awsrequest.AWSPreparedRequest:
    return botocore.awsrequest.AWSRequest(method="POST", url=NODE + "/", data=b"{}").prepare()


def _send(mode: str, outcome: int | BaseException) -> tuple[list[tuple[str, Any]], Any]:
    router = _Router()
    if mode == "sync":
        handlers = _Handlers(router, _Transport(outcome), HookOptions(), (1.0, 2.0))  # type: ignore[arg-type]
        call = lambda: handlers.before_send(_request())  # noqa: E731
    else:
        sync = _Handlers(router, None, HookOptions(), (1.0, 2.0))
        handlers_a = _AsyncHandlers(sync, _AsyncTransport(outcome), lambda: True)  # type: ignore[arg-type]
        call = lambda: asyncio.run(handlers_a.before_send(_request()))  # noqa: E731
    try:
        result: Any = call()
    except BaseException as e:
        result = e
    return router.events, result


MODES = ["sync", "async"]
STARTED = ("started", NODE)


@pytest.mark.parametrize("mode", MODES)
def test_answer_is_a_success_after_the_flight_ends(mode: str) -> None:
    events, result = _send(mode, 200)
    assert result.status_code == 200
    assert events == [STARTED, ("finished", ("token", True)), ("success", NODE)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_neutral_5xx_ends_the_flight_and_reports_nothing(mode: str, status: int) -> None:
    events, result = _send(mode, status)
    assert result.status_code == status
    assert events == [STARTED, ("finished", ("token", True))]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "error",
    [
        botocore.exceptions.EndpointConnectionError(endpoint_url=NODE),
        botocore.exceptions.ReadTimeoutError(endpoint_url=NODE),
        UndecodableAnswerError(error=ValueError("br"), endpoint_url=NODE),
    ],
    ids=["refused", "timeout", "undecodable"],
)
def test_connection_failure_is_reported_before_the_flight_ends(
    mode: str, error: BaseException
) -> None:
    events, result = _send(mode, error)
    assert result is error
    assert events == [STARTED, ("failure", type(error).__name__), ("finished", ("token", False))]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "error", [RuntimeError("a bug"), asyncio.CancelledError()], ids=["other", "cancelled"]
)
def test_other_exits_only_end_the_flight(mode: str, error: BaseException) -> None:
    events, result = _send(mode, error)
    assert result is error
    assert events == [STARTED, ("finished", ("token", False))]


def test_a_failing_failure_report_still_ends_the_flight() -> None:
    router = _Router()

    def broken(node: str, error: BaseException) -> None:
        raise OSError("shared memory went away")

    router.report_failure = broken  # type: ignore[method-assign]
    handlers = _Handlers(
        router, _Transport(botocore.exceptions.EndpointConnectionError(endpoint_url=NODE)),  # type: ignore[arg-type]
        HookOptions(), (1.0, 2.0),
    )  # fmt: skip
    with pytest.raises(OSError):
        handlers.before_send(_request())
    assert router.events == [STARTED, ("finished", ("token", False))]
