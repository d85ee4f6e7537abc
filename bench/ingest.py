"""Ingest benchmark, run by hand (never in CI): the real ingest server as a child process (`es serve
ingest`, its own NATS and a fresh state folder), driven by this process as the load client over
loopback, on SQLite and on PostgreSQL; and the raw insert rate of the same rows straight into the
store's schema, so that the service's overhead shows as a ratio.

    .venv/bin/python bench/ingest.py [--backend sqlite|postgresql|both] [--seconds S] [--json]

Phases, each against the same running server (the database grows from one to the next):
  sessions   closed loop of unary RegisterSession (sessions of 20 results), `--concurrency` in flight;
  paced      unary RegisterSession offered at a fixed rate (open loop: latency is measured from the
             moment a request was due, so a stalled server is not hidden by a stalled client);
  push       closed loop of unary PushEvents, 50 click events a call;
  stream     client-streaming Ingest: each stream carries `--stream-sessions` sessions, each followed
             by `--messages-per-session` messages of 50 click events; latency is per stream (first
             message sent to summary received, i.e. to the acknowledgment);
  raw        the same session and event rows inserted with SQLAlchemy Core, one transaction per session
             and one per 50 events (the unit a unary call acknowledges), same durability settings.
A table goes to stdout, progress to stderr; with --json the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import Engine, create_engine, event, insert

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # so that the script runs as `python bench/ingest.py` from anywhere

from services.api.embedding_studio.v1 import clickstream_pb2 as pb  # noqa: E402
from services.ingest import schema  # noqa: E402
from services.ingest.store import ClickstreamStore  # noqa: E402
from tests.servers import NatsServer, PostgresDatabase, ServiceProcess  # noqa: E402

SERVICE = "/embedding_studio.v1.ClickstreamService/"
RESULTS_PER_SESSION = 20
EVENTS_PER_MESSAGE = 50
WARMUP_S = 1.0
# The stream phase sends pre-built messages so that the client's own protobuf work stays out of the
# measurement; this caps how many it builds (enough for 100,000 events/s over --seconds).
STREAM_EVENTS_PER_S_CAP = 100_000


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- workload -----------------------------------------------------------------------------------------


def object_ids(n: int) -> list[str]:
    """20 catalog ids, 40 characters each, as a search engine would return them for query n."""
    return [f"catalog/running-shoes/sku-{(n * 7 + k) % 10**14:014d}" for k in range(RESULTS_PER_SESSION)]


def session_request(session_id: str, n: int, now: int) -> pb.RegisterSessionRequest:
    return pb.RegisterSessionRequest(
        session_id=session_id,
        search_query=f"running shoes for trail size {n % 15 + 36}",
        user_id=f"user-{n % 5000}",
        created_at=now,
        search_results=[pb.SearchResult(object_id=object_id, rank=1.0 - k / 100)
                        for k, object_id in enumerate(object_ids(n))],
    )


def events_request(session_id: str, n: int, now: int) -> pb.PushEventsRequest:
    """50 click events of about 100 bytes each on the objects session n showed."""
    shown = object_ids(n)
    return pb.PushEventsRequest(session_id=session_id, events=[
        pb.Event(event_id=str(uuid.uuid4()), object_id=shown[k % RESULTS_PER_SESSION], event_type="click",
                 created_at=now)
        for k in range(EVENTS_PER_MESSAGE)
    ])


class Sessions:
    """Fresh session ids (and their numbers, which pick the shown objects) for one server."""

    def __init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:8]
        self.count = 0

    def next(self) -> tuple[str, int]:
        self.count += 1
        return f"{self.prefix}-session-{self.count:09d}", self.count


# --- measurements --------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    unit: str  # what `rate` counts per second: sessions, requests or events
    rate: float
    seconds: float
    items: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    server_cpu: float | None = None  # server CPU seconds per wall second (2.0 is both cores)
    notes: dict[str, Any] = field(default_factory=dict)


def percentile(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class CpuClock:
    """CPU seconds a process has used, from /proc (Linux)."""

    def __init__(self, pid: int) -> None:
        self._path = Path(f"/proc/{pid}/stat")
        self._tick = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float:
        fields = self._path.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime


class Client:
    """The load client: grpc.aio calls that take and return serialized bytes, so the client spends its
    CPU on sending, not on protobuf."""

    def __init__(self, address: str, server_cpu: CpuClock) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.register = self.channel.unary_unary(SERVICE + "RegisterSession")
        self.push = self.channel.unary_unary(SERVICE + "PushEvents")
        self.ingest = self.channel.stream_unary(SERVICE + "Ingest")
        self.cpu = server_cpu

    async def closed_loop(self, name: str, unit: str, call: Callable[[bytes], Any], payloads: Iterator[bytes],
                          items_per_call: int, seconds: float, concurrency: int,
                          check: Callable[[bytes], bool] = lambda _: True) -> Phase:
        """`concurrency` callers, each sending its next request as soon as its last one is answered."""
        latencies: list[float] = []
        errors = 0
        deadline = 0.0

        async def caller() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                payload = next(payloads)
                started = time.perf_counter()
                try:
                    ok = check(await call(payload, timeout=60))
                except grpc.aio.AioRpcError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

        deadline = time.perf_counter() + WARMUP_S
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        latencies.clear()
        errors = 0
        cpu_before = self.cpu.seconds()
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        calls = len(latencies)
        return Phase(name, unit, calls * items_per_call / elapsed, elapsed, calls * items_per_call,
                     percentile(latencies, 0.50), percentile(latencies, 0.99), errors,
                     (self.cpu.seconds() - cpu_before) / elapsed, {"concurrency": concurrency})

    async def paced(self, name: str, call: Callable[[bytes], Any], payloads: Iterator[bytes], rate: float,
                    seconds: float) -> Phase:
        """Requests offered at `rate` per second whatever the answers; latency counts from when each
        request was due."""
        latencies: list[float] = []
        errors = 0

        async def one(payload: bytes, due: float) -> None:
            nonlocal errors
            try:
                await call(payload, timeout=60)
            except grpc.aio.AioRpcError:
                errors += 1
            latencies.append(time.perf_counter() - due)

        total = int(rate * seconds)
        pending = []
        cpu_before = self.cpu.seconds()
        started = time.perf_counter()
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(next(payloads), due)))
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - started
        return Phase(name, "requests", total / elapsed, elapsed, total, percentile(latencies, 0.50),
                     percentile(latencies, 0.99), errors, (self.cpu.seconds() - cpu_before) / elapsed,
                     {"offered_per_s": rate})

    async def streams(self, streams: list[tuple[list[bytes], int]], seconds: float, concurrency: int) -> Phase:
        """Sends the pre-built streams (messages, events in them) until time is up or they run out."""
        latencies: list[float] = []
        events = errors = 0
        queue = iter(streams)
        deadline = time.perf_counter() + seconds

        async def streamer() -> None:
            nonlocal events, errors
            for messages, event_count in queue:
                if time.perf_counter() >= deadline:
                    return
                started = time.perf_counter()
                try:
                    summary = pb.IngestResponse.FromString(await self.ingest(iter(messages), timeout=120))
                    ok = summary.rejected == 0 and summary.events_accepted == event_count
                except grpc.aio.AioRpcError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                events += event_count
                errors += not ok

        cpu_before = self.cpu.seconds()
        started = time.perf_counter()
        await asyncio.gather(*(streamer() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        return Phase("stream Ingest", "events", events / elapsed, elapsed, events, percentile(latencies, 0.50),
                     percentile(latencies, 0.99), errors, (self.cpu.seconds() - cpu_before) / elapsed,
                     {"concurrency": concurrency, "streams": len(latencies)})

    async def close(self) -> None:
        await self.channel.close()


def build_streams(sessions: Sessions, now: int, count: int, sessions_per_stream: int, messages_per_session: int
                  ) -> tuple[list[tuple[list[bytes], int]], float]:
    """`count` streams of serialized IngestRequests; also returns the measured bytes per event."""
    streams = []
    event_bytes = events = 0
    for _ in range(count):
        messages = []
        for _ in range(sessions_per_stream):
            session_id, n = sessions.next()
            messages.append(pb.IngestRequest(session=session_request(session_id, n, now)).SerializeToString())
            for _ in range(messages_per_session):
                request = events_request(session_id, n, now)
                if events < 10_000:
                    event_bytes += request.ByteSize()
                    events += len(request.events)
                messages.append(pb.IngestRequest(events=request).SerializeToString())
        streams.append((messages, sessions_per_stream * messages_per_session * EVENTS_PER_MESSAGE))
    return streams, event_bytes / events


async def drive_service(address: str, server_pid: int, args: argparse.Namespace) -> list[Phase]:
    client = Client(address, CpuClock(server_pid))
    sessions = Sessions()
    now = int(time.time())

    def new_sessions() -> Iterator[bytes]:
        while True:
            session_id, n = sessions.next()
            yield session_request(session_id, n, now).SerializeToString()

    def pushed_events(pool: list[tuple[str, int]]) -> Iterator[bytes]:
        while True:
            for session_id, n in pool:
                yield events_request(session_id, n, now).SerializeToString()

    def all_accepted(response: bytes) -> bool:
        return pb.PushEventsResponse.FromString(response).accepted == EVENTS_PER_MESSAGE

    phases = []
    try:
        progress(f"sessions: unary RegisterSession, {args.concurrency} in flight, {args.seconds:g}s")
        phases.append(await client.closed_loop("unary RegisterSession", "sessions", client.register, new_sessions(),
                                               1, args.seconds, args.concurrency))
        progress(f"paced: unary RegisterSession at {args.rate:g}/s, {args.seconds:g}s")
        phases.append(await client.paced("unary RegisterSession paced", client.register, new_sessions(), args.rate,
                                         args.seconds))
        progress("push: registering 200 sessions to push events to")
        pool = [sessions.next() for _ in range(200)]
        for session_id, n in pool:
            await client.register(session_request(session_id, n, now).SerializeToString(), timeout=60)
        progress(f"push: unary PushEvents of {EVENTS_PER_MESSAGE} events, {args.concurrency} in flight")
        phases.append(await client.closed_loop("unary PushEvents", "events", client.push, pushed_events(pool),
                                               EVENTS_PER_MESSAGE, args.seconds, args.concurrency, all_accepted))
        per_stream = args.stream_sessions * args.messages_per_session * EVENTS_PER_MESSAGE
        count = max(2, int(STREAM_EVENTS_PER_S_CAP * (args.seconds + WARMUP_S) / per_stream) + 1)
        progress(f"stream: building {count} streams of {args.stream_sessions} sessions, each followed by "
                 f"{args.messages_per_session} messages of {EVENTS_PER_MESSAGE} events")
        streams, bytes_per_event = build_streams(sessions, now, count, args.stream_sessions,
                                                 args.messages_per_session)
        warmup = max(1, int(len(streams) * WARMUP_S / (args.seconds + WARMUP_S)))
        await client.streams(streams[:warmup], WARMUP_S, args.streams)
        progress(f"stream: client-streaming Ingest, {args.streams} stream(s) at a time, {args.seconds:g}s")
        phase = await client.streams(streams[warmup:], args.seconds, args.streams)
        phase.notes.update(events_per_message=EVENTS_PER_MESSAGE, bytes_per_event=round(bytes_per_event, 1),
                           sessions_per_stream=args.stream_sessions, events_per_stream=per_stream)
        if phase.items >= per_stream * (len(streams) - warmup):
            phase.notes["warning"] = "ran out of pre-built streams before --seconds: raise STREAM_EVENTS_PER_S_CAP"
        phases.append(phase)
    finally:
        await client.close()
    return phases


# --- raw inserts ---------------------------------------------------------------------------------------


def raw_engine(url: str) -> Engine:
    """An engine with the service's durability settings: SQLite WAL + synchronous=NORMAL, PostgreSQL
    synchronous_commit=on."""
    if url.startswith("sqlite"):
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1),
                         connect_args={"options": "-c synchronous_commit=on"})


def raw_inserts(url: str, seconds: float) -> list[Phase]:
    """The rows the service would store, built beforehand, then inserted with plain Core INSERTs."""
    ClickstreamStore(url).close()  # the service's schema and first batch
    engine = raw_engine(url)
    sessions = Sessions()
    now = int(time.time())
    phases = []
    try:
        with engine.connect() as conn:
            rows = []
            for i in range(int(20_000 * seconds)):
                session_id, n = sessions.next()
                request = session_request(session_id, n, now)
                rows.append({
                    "session_id": session_id, "batch_number": 1, "session_number": i + 1,
                    "search_query": request.search_query,
                    "search_results": json.dumps([{"object_id": r.object_id, "rank": r.rank, "meta": {}}
                                                  for r in request.search_results], separators=(",", ":")),
                    "search_meta": None, "user_id": request.user_id, "created_at": now, "is_irrelevant": False,
                    "fingerprint": uuid.uuid4().hex * 2,
                })
            progress("raw: sessions, one transaction each")
            done, started = 0, time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline and done < len(rows):
                with conn.begin():
                    conn.execute(insert(schema.sessions), rows[done])
                done += 1
            elapsed = time.perf_counter() - started
            phases.append(Phase("raw insert sessions", "sessions", done / elapsed, elapsed, done))

            progress(f"raw: events, {EVENTS_PER_MESSAGE} a transaction")
            targets = [(row["session_id"], i + 1) for i, row in enumerate(rows[:done])]
            messages = []
            for k in range(int(4_000 * seconds)):
                session_id, n = targets[k % len(targets)]
                shown = object_ids(n)
                messages.append([{"session_id": session_id, "event_id": str(uuid.uuid4()),
                                  "object_id": shown[e % RESULTS_PER_SESSION], "event_type": "click",
                                  "created_at": now, "meta": None} for e in range(EVENTS_PER_MESSAGE)])
            sent, started = 0, time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline and sent < len(messages):
                with conn.begin():
                    conn.execute(insert(schema.events), messages[sent])
                sent += 1
            elapsed = time.perf_counter() - started
            phases.append(Phase("raw insert events", "events", sent * EVENTS_PER_MESSAGE / elapsed, elapsed,
                                sent * EVENTS_PER_MESSAGE, notes={"events_per_transaction": EVENTS_PER_MESSAGE}))
    finally:
        engine.dispose()
    return phases


# --- one back-end --------------------------------------------------------------------------------------


def run_backend(backend: str, args: argparse.Namespace) -> list[Phase]:
    with tempfile.TemporaryDirectory(prefix=f"es-bench-{backend}-") as tmp:
        folder = Path(tmp)
        if backend == "sqlite":
            return measure(backend, folder, f"sqlite:///{folder / 'clickstream.db'}",
                           f"sqlite:///{folder / 'raw.db'}", args)
        with PostgresDatabase() as service_url, PostgresDatabase() as raw_url:
            return measure(backend, folder, service_url, raw_url, args)


def measure(backend: str, folder: Path, service_url: str, raw_url: str, args: argparse.Namespace) -> list[Phase]:
    nats = NatsServer(folder / "nats").start()
    try:
        env = {"ES_STATE_DIR": str(folder / "state"), "ES_CLICKSTREAM_DB_URL": service_url, "ES_NATS_URL": nats.url}
        service = ServiceProcess("ingest", env, folder / "ingest.log").start()
        progress(f"{backend}: ingest server pid {service.process.pid} on {service.address}")
        try:
            phases = asyncio.run(drive_service(service.address, service.process.pid, args))
        finally:
            if service.terminate() != 0:
                progress(f"{backend}: the server did not stop cleanly:\n{service.log()[-4000:]}")
    finally:
        nats.stop()
    phases += raw_inserts(raw_url, args.seconds)
    return phases


# --- report --------------------------------------------------------------------------------------------


def ratios(phases: list[Phase]) -> dict[str, float]:
    """The service's rate as a fraction of the raw insert rate of the same rows."""
    by_name = {p.name: p.rate for p in phases}
    raw_sessions, raw_events = by_name.get("raw insert sessions"), by_name.get("raw insert events")
    out = {}
    for phase in phases:
        raw = raw_sessions if phase.unit == "sessions" else raw_events if phase.unit == "events" else None
        if raw and not phase.name.startswith("raw"):
            out[phase.name] = phase.rate / raw
    return out


def table(results: dict[str, list[Phase]]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [f"{'backend':<11}{'phase':<30}{'rate/s':>12} {'unit':<9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
             f"{'srv cpu':>9}{'vs raw':>8}"]
    for backend, phases in results.items():
        service_ratios = ratios(phases)
        for p in phases:
            ratio = service_ratios.get(p.name)
            lines.append(f"{backend:<11}{p.name:<30}{p.rate:>12,.0f} {p.unit:<9}{ms(p.p50_ms):>9}{ms(p.p99_ms):>9}"
                         f"{p.errors:>8}{'-' if p.server_cpu is None else f'{p.server_cpu:.2f}':>9}"
                         f"{'-' if ratio is None else f'{ratio:.2f}':>8}")
        for p in phases:
            if p.notes:
                lines.append(f"{'':<11}{p.name}: " + ", ".join(f"{k}={v}" for k, v in p.notes.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measured phase")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    parser.add_argument("--concurrency", type=int, default=8, help="unary calls in flight in the closed loops")
    parser.add_argument("--rate", type=float, default=500.0, help="offered RegisterSession rate of the paced phase")
    parser.add_argument("--streams", type=int, default=1, help="Ingest streams open at a time")
    parser.add_argument("--stream-sessions", type=int, default=50, help="sessions in one Ingest stream")
    parser.add_argument("--messages-per-session", type=int, default=4,
                        help=f"messages of {EVENTS_PER_MESSAGE} events after each session in a stream")
    args = parser.parse_args()
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be in (0, 600]")

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = {backend: run_backend(backend, args) for backend in backends}
    load = os.getloadavg()
    print(table(results))
    print(f"{os.cpu_count()} CPUs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end "
          "(other work on the machine skews the numbers)")
    if args.json:
        print(json.dumps({
            "backends": {b: {"phases": [asdict(p) for p in phases], "ratio_to_raw": ratios(phases)}
                         for b, phases in results.items()},
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "cpus": os.cpu_count(), "load_average": load,
        }, sort_keys=True))


if __name__ == "__main__":
    main()
