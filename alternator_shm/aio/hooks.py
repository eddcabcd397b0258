"""aiobotocore event handlers: the sync client's routing and headers, sent through aiohttp.

aiobotocore emits the same ``before-sign`` / ``before-send`` events as botocore, once per
attempt, and awaits a handler's answer when it is awaitable. So the async client reuses the
sync handlers (:mod:`alternator_shm.hooks`) for everything up to the wire: request compression,
routing each attempt before signing (shared counter, shared health, nodes already tried), header
optimisation and the User-Agent. Only sending differs: :class:`~alternator_shm.aio.transport.
AsyncTransport` instead of urllib3.

The event loop is never blocked: routing is a few microseconds of shared-memory work once the
host has a node table; before this process has seen one, the choice (which may wait for the
refresher's first table, up to the Helper's bound) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import botocore.awsrequest
import botocore.hooks

from alternator_shm.affinity import Affinity, DescribeTable
from alternator_shm.aio.transport import AsyncTransport
from alternator_shm.hooks import (
    HookOptions,
    Router,
    _Handlers,
    skip_sdk_retry_headers,
    skip_sdk_user_agent_builds,
)

__all__ = ["register_async_hooks"]


class _AsyncHandlers:
    def __init__(
        self,
        handlers: _Handlers,
        transport: AsyncTransport,
        table_ready: Callable[[], bool],
    ) -> None:
        self._handlers = handlers
        self._transport = transport
        self._table_ready = table_ready

    async def before_sign(self, request: botocore.awsrequest.AWSRequest, **kwargs: Any) -> None:
        if self._table_ready():
            self._handlers.before_sign(request, **kwargs)
        else:
            # The first table may still be on its way: wait for it off the loop.
            await asyncio.to_thread(self._handlers.before_sign, request, **kwargs)

    async def before_send(
        self, request: botocore.awsrequest.AWSPreparedRequest, **kwargs: Any
    ) -> Any:
        handlers = self._handlers
        # Also on cancellation the attempt leaves the in-flight count (the with's exit).
        with handlers.attempt(request) as attempt:
            response = attempt.answered(
                await self._transport.send(
                    request, timeout=handlers.timeout, decode_content=handlers.decode
                )
            )
        return response


#: Bound on one background DescribeTable run on the client's loop (its own retries included).
_DESCRIBE_TIMEOUT = 120.0


def _describe_on_loop(client: Any, loop: asyncio.AbstractEventLoop) -> DescribeTable:
    """``DescribeTable`` through an aiobotocore ``client``, called from a lookup thread.

    The coroutine runs on the client's own loop (the thread only waits for it), so the loop is
    never blocked and the lookup uses the client's credentials, config and routing.
    """
    ref = weakref.ref(client)

    def describe(table: str) -> Mapping[str, Any]:
        live = ref()
        if live is None or loop.is_closed():
            raise RuntimeError("the client that needed this partition key is gone")
        future = asyncio.run_coroutine_threadsafe(live.describe_table(TableName=table), loop)
        try:
            answer: Mapping[str, Any] = future.result(_DESCRIBE_TIMEOUT)
        except BaseException:
            future.cancel()
            raise
        return answer

    return describe


def register_async_hooks(
    events: botocore.hooks.BaseEventHooks,
    *,
    router: Router,
    transport: AsyncTransport,
    options: HookOptions,
    timeout: tuple[float, float],
    table_ready: Callable[[], bool],
    affinity: Affinity | None = None,
    client: Any = None,
) -> None:
    """Install routing, header, compression and transport handlers on one aiobotocore client.

    ``table_ready`` answers, without blocking, whether routing can pick a node right away
    (this process has a node table); otherwise the pick runs in a worker thread.
    ``affinity`` turns on key-route affinity exactly as for the sync client (same hashes and
    plans); unknown partition keys are looked up with ``client`` on the running loop.
    """
    describe = (
        _describe_on_loop(client, asyncio.get_running_loop())
        if affinity is not None and client is not None
        else None
    )
    sync_handlers = _Handlers(router, None, options, timeout, affinity, describe)
    handlers = _AsyncHandlers(sync_handlers, transport, table_ready)
    if client is not None:
        skip_sdk_user_agent_builds(client, options.wire_user_agent)
    if options.optimize_headers:
        skip_sdk_retry_headers(events)
    if affinity is not None:
        events.register("before-parameter-build.dynamodb", sync_handlers.before_parameter_build)
    # aiobotocore awaits coroutine handlers; botocore-stubs types handlers as sync.
    events.register("before-sign.dynamodb", handlers.before_sign)  # type: ignore[arg-type]
    events.register("before-send.dynamodb", handlers.before_send)  # type: ignore[arg-type]
