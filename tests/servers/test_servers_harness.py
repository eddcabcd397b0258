"""The harness itself: a phase whose poll rate is asserted spans several refresh periods.

``check_phase`` asserts about one /localnodes poll per refresh period; a drive that ends after
a count of calls could end within one period on a fast host and see no poll at all (the
"0 /localnodes polls in 0.3s" flake). The drivers therefore keep the phase open for their
minimum duration however quickly the calls finish.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from servers.servers_harness import (
    MIN_RATE_PERIODS,
    PHASE_SECONDS,
    REFRESH,
    Drive,
    Phase,
    check_phase,
    drive_http,
    timed_batches,
)


class _Instant(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"pid": 1, "retries": 0}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def instant_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Instant)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_default_phase_spans_several_refresh_periods() -> None:
    assert PHASE_SECONDS >= MIN_RATE_PERIODS * REFRESH


def test_drive_lasts_its_minimum_even_when_the_calls_run_out(instant_server: str) -> None:
    started = time.monotonic()
    result = drive_http(instant_server, min_seconds=1.0, min_calls=3, max_calls=3)
    assert result.ok == 3 and not result.errors
    assert time.monotonic() - started >= 1.0


def test_batches_last_their_minimum_even_when_the_batches_run_out() -> None:
    started = time.monotonic()
    timed_batches(lambda n: [], min_seconds=1.0, max_batches=1)
    assert time.monotonic() - started >= 1.0


def test_check_phase_refuses_a_window_too_short_for_a_rate() -> None:
    short = Phase(Drive(ok=3, pids={1}), REFRESH, {"a": 1, "b": 1, "c": 1}, 0, 0, 3)
    with pytest.raises(AssertionError, match="too short to assert a poll rate"):
        check_phase(short)


def _phase(polls: int, rounds: int, seconds: float = 2.0) -> Phase:
    return Phase(Drive(ok=3, pids={1, 2}), seconds, {"a": 1, "b": 1, "c": 1}, polls, rounds, 3)


def test_check_phase_takes_slow_answers_hedged_for_one_poller() -> None:
    check_phase(_phase(polls=7, rounds=7))
    check_phase(_phase(polls=13, rounds=7))  # a loaded CI run: hedges, one refresher


def test_check_phase_refuses_a_poller_per_worker_or_a_second_refresher() -> None:
    with pytest.raises(AssertionError, match="more than one poller"):
        check_phase(_phase(polls=4 * 7, rounds=7))  # 4 workers polling on their own
    with pytest.raises(AssertionError, match="refresh rounds"):
        check_phase(_phase(polls=14, rounds=14))  # two refreshers writing the segment
