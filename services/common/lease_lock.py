"""A lock that every replica of a service shares, held in a NATS key-value bucket: a key created
only if absent (or taken over with a revision-checked update once its holder's lease has lapsed),
renewed while held, deleted on release. A holder that dies frees it when its lease runs out."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator

from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.common.errors import Unavailable
from services.common.nats import NatsConnection, open_bucket

BUCKET = "es_locks"


class LockUnavailable(Unavailable):
    """NATS could not be asked for the lock (it is down): raised before the block runs, never from it."""


class LeaseLock:
    """`async with lock.held(name):` runs the block while no other holder of `name` (in any process)
    runs its own. Waits up to `wait_s`, then raises Unavailable (the caller may retry)."""

    def __init__(self, nats: NatsConnection, lease_s: float = 30.0, wait_s: float = 60.0, poll_s: float = 0.05,
                 bucket: str = BUCKET) -> None:
        self._nats = nats
        self._lease_s = lease_s
        self._wait_s = wait_s
        self._poll_s = poll_s
        self._bucket = bucket
        self._holder = uuid.uuid4().hex

    @staticmethod
    def key(name: str) -> str:
        return "lock." + hashlib.sha256(name.encode()).hexdigest()[:32]

    def _value(self) -> bytes:
        return json.dumps({"holder": self._holder, "until": time.time() + self._lease_s}).encode()

    async def _acquire(self, kv: KeyValue, key: str) -> int:
        deadline = time.monotonic() + self._wait_s
        while True:
            try:
                return await kv.create(key, self._value())
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                continue  # released meanwhile (a delete marker): create again
            if entry.value is None or not entry.value or json.loads(entry.value)["until"] < time.time():
                try:  # free (deleted) or its holder's lease lapsed: take it, unless someone else just did
                    return await kv.update(key, self._value(), last=entry.revision)
                except KeyWrongLastSequenceError:
                    continue
            if time.monotonic() > deadline:
                raise Unavailable(f"the lock {key} is still held after {self._wait_s:.0f} s; try again")
            await asyncio.sleep(self._poll_s)

    async def _renew(self, kv: KeyValue, key: str, revision: list[int]) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            with contextlib.suppress(NatsError, TimeoutError):
                revision[0] = await kv.update(key, self._value(), last=revision[0])

    @contextlib.asynccontextmanager
    async def held(self, name: str) -> AsyncIterator[None]:
        key = self.key(name)
        try:
            kv = await open_bucket(self._nats.jetstream, self._bucket)  # Unavailable while disconnected
            revision = [await self._acquire(kv, key)]  # Unavailable while another holder keeps it
        except LockUnavailable:
            raise
        except Unavailable as error:
            if self._nats.connected:
                raise
            raise LockUnavailable(error.message) from error
        except (NatsError, TimeoutError, ConnectionError) as error:
            message = f"NATS (lock bucket {self._bucket}) is unavailable: {str(error) or type(error).__name__}"
            if self._nats.connected:  # JetStream did not answer (e.g. a leader election): the caller retries
                raise Unavailable(message) from error
            raise LockUnavailable(message) from error
        renewal = asyncio.create_task(self._renew(kv, key, revision))
        try:
            yield
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            with contextlib.suppress(NatsError, TimeoutError, ConnectionError):
                await kv.delete(key, last=revision[0])
