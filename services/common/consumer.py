"""A JetStream durable pull consumer that every replica of a role binds to: each message goes to one
replica, is acked only after its handler finished, is kept alive with in-progress acks while the
handler works, and is redelivered (after a growing delay) when the handler fails or the replica dies;
with `max_deliver`, the handler's last failure goes to `on_exhausted`, which ends the work for good.

Dataprep's and the trainer's work queues are both this."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from services.common.logging import get_logger
from services.common.nats import STREAM, NatsConnection

log = get_logger("consumer")


class RetryLater(Exception):
    """Raised by a handler that cannot do the work yet (e.g. another replica holds it): the message is
    redelivered after `delay_s`, and nothing is logged as failed."""

    def __init__(self, reason: str, delay_s: float) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


class LeaveUnsettled(Exception):
    """Raised by a handler whose delivery is no longer its own to settle (another replica took the work
    over): the message is neither acked nor nak'ed, so the owner's delivery stays the one that counts."""


class DurablePullConsumer:
    """Runs `handler(msg)` for each message of `subject` through the durable consumer `durable`.

    Args:
        ack_wait_s: how long the server waits for an ack before redelivering; while the handler runs,
            an in-progress ack is sent every third of it, so long work is not redelivered.
        retry_delay_s: how long a message whose handler raised waits before its first redelivery; each
            further failure doubles the wait, up to `max_retry_delay_s`.
        fetch_timeout_s: how long one fetch waits for work; a timeout only means "no work yet".
        max_deliver: deliveries a message gets (0: no bound). When the handler fails on the last one,
            `on_exhausted(msg, error)` runs and the message is acked: it must settle the work itself
            (JetStream's own max_deliver would end delivery silently, so this bound is the consumer's;
            the server's stays unbounded). If `on_exhausted` raises, the message is redelivered and it
            runs again.
    """

    def __init__(self, connection: NatsConnection, durable: str, subject: str,
                 handler: Callable[[Msg], Awaitable[None]], ack_wait_s: float = 30.0, retry_delay_s: float = 2.0,
                 fetch_timeout_s: float = 1.0, max_retry_delay_s: float = 60.0, max_deliver: int = 0,
                 on_exhausted: Callable[[Msg, Exception], Awaitable[None]] | None = None) -> None:
        if ack_wait_s <= 0 or retry_delay_s < 0 or fetch_timeout_s <= 0 or max_retry_delay_s < retry_delay_s:
            raise ValueError("ack_wait_s and fetch_timeout_s must be > 0, retry_delay_s >= 0 and "
                             "max_retry_delay_s >= retry_delay_s")
        if max_deliver < 0 or (max_deliver and on_exhausted is None):
            raise ValueError("max_deliver must be >= 0 (0: no bound), and a bound needs on_exhausted")
        self._connection = connection
        self._durable = durable
        self._subject = subject
        self._handler = handler
        self._ack_wait_s = ack_wait_s
        self._retry_delay_s = retry_delay_s
        self._fetch_timeout_s = fetch_timeout_s
        self._max_retry_delay_s = max_retry_delay_s
        self._max_deliver = max_deliver
        self._on_exhausted = on_exhausted
        self._task: asyncio.Task[None] | None = None
        self._log = log.bind(durable=durable, subject=subject)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self._durable}")

    async def stop(self) -> None:
        """Stops fetching; a message being handled is nak'ed, so the server redelivers it at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(durable_name=self._durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=self._ack_wait_s,
                                filter_subject=self._subject, max_deliver=-1)
        return await self._connection.jetstream.pull_subscribe(self._subject, durable=self._durable, stream=STREAM,
                                                               config=config)

    async def _run(self) -> None:
        retry_s = 0.2
        while True:
            try:
                await self._connection.wait_connected(timeout=5)
                subscription = await self._subscribe()
                self._log.info("consumer_bound")
                retry_s = 0.2
                try:
                    while True:
                        try:
                            messages = await subscription.fetch(1, timeout=self._fetch_timeout_s)
                        except (NatsTimeout, TimeoutError):
                            continue
                        for message in messages:
                            await self._handle(message)
                finally:
                    # A pull subscription left open keeps the connection's drain() waiting for its timeout.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(subscription.unsubscribe())
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - NATS went away: bind again once it is back
                self._log.warning("consumer_failed", error=str(error) or type(error).__name__, retry_s=retry_s)
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, 5.0)

    async def _keep_alive(self, message: Msg) -> None:
        while True:
            await asyncio.sleep(self._ack_wait_s / 3)
            await message.in_progress()

    async def _handle(self, message: Msg) -> None:
        keep_alive = asyncio.create_task(self._keep_alive(message))
        try:
            await self._handler(message)
        except asyncio.CancelledError:
            # Stopping: hand the message back now rather than after ack_wait, so another replica (or
            # this one, restarted) finishes the job at once.
            with contextlib.suppress(Exception):
                await asyncio.shield(message.nak())
            raise
        except LeaveUnsettled as left:
            self._log.info("message_left", reason=str(left))
            return
        except RetryLater as later:
            self._log.info("message_deferred", reason=str(later), retry_s=later.delay_s)
            await message.nak(delay=later.delay_s)
            return
        except Exception as error:  # noqa: BLE001 - any failure means "try this message again later"
            delivered = message.metadata.num_delivered
            if self._max_deliver and delivered >= self._max_deliver:
                await self._exhausted(message, error)
                return
            retry_s = min(self._retry_delay_s * 2 ** (delivered - 1), self._max_retry_delay_s)
            self._log.warning("message_failed", error=str(error) or type(error).__name__, delivered=delivered,
                              retry_s=retry_s)
            await message.nak(delay=retry_s)
            return
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive
        await message.ack()

    async def _exhausted(self, message: Msg, error: Exception) -> None:
        reason = str(error) or type(error).__name__
        self._log.error("message_exhausted", error=reason, delivered=message.metadata.num_delivered)
        try:
            await self._on_exhausted(message, error)
        except Exception as failure:  # noqa: BLE001 - not settled: deliver it again, and settle it then
            self._log.warning("message_exhausted_unsettled", error=str(failure) or type(failure).__name__)
            await message.nak(delay=self._max_retry_delay_s)
            return
        await message.ack()
