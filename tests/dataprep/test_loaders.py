"""Item loaders against real sources: local items.jsonl and folders, and a real S3 server (moto) for the
ES_ITEMS_URI prefix and the seed's AWSS3DataLoader; storage producers for text and images."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from services.fine_tuning.data import (
    AWSS3DataLoader,
    CLIPItemStorageProducer,
    DatasetError,
    DatasetFieldsNormalizer,
    ItemSourceUnavailable,
    ItemsSourceLoader,
    ItemStorageProducer,
    MissingItems,
    SearchResult,
    UnreadableItems,
)
from tests.dataprep.conftest import write_items
from tests.s3_server import S3Server


def results(*ids: str, **info: dict) -> list[SearchResult]:
    return [SearchResult(item_id=i, position=n + 1, rank=0.0, item_info=info.get(i, {})) for n, i in enumerate(ids)]


def png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


def by_id(rows: list[dict]) -> dict:
    return {row["item_id"]: row["item"] for row in rows}


def test_items_jsonl_loader_finds_items_by_object_id(tmp_path: Path) -> None:
    path = write_items(tmp_path / "items.jsonl", {"a": "alpha", "b": "beta", "c": "gamma"})
    assert by_id(ItemsSourceLoader(str(path)).load(results("c", "a"))) == {"c": "gamma", "a": "alpha"}


def test_items_jsonl_loader_lists_every_missing_item(tmp_path: Path) -> None:
    path = write_items(tmp_path / "items.jsonl", {"a": "alpha"})
    with pytest.raises(MissingItems, match=r"2 items missing from .*items.jsonl: 'x', 'y'") as info:
        ItemsSourceLoader(str(path)).load(results("a", "y", "x"))
    assert info.value.missing == ["x", "y"]


def test_items_jsonl_loader_names_the_bad_line_and_the_record_without_text(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"id": "a", "title": "no text"}) + "\n")
    with pytest.raises(UnreadableItems, match="'a': line 1 has no string 'text' field"):
        ItemsSourceLoader(str(path)).load(results("a"))
    path.write_text("{not json\n")
    with pytest.raises(DatasetError, match="line 1 is not a JSON object"):
        ItemsSourceLoader(str(path)).load(results("a"))


def test_items_loader_reads_es_items_uri_only_when_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ES_ITEMS_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    loader = ItemsSourceLoader()  # a plugin can be built where items are never loaded (the trainer)
    with pytest.raises(DatasetError, match="set ES_ITEMS_URI"):
        loader.load(results("a"))
    monkeypatch.setenv("ES_ITEMS_URI", str(write_items(tmp_path / "items.jsonl", {"a": "alpha"})))
    assert by_id(loader.load(results("a"))) == {"a": "alpha"}
    monkeypatch.setenv("ES_ITEMS_URI", (tmp_path / "items.jsonl").as_uri())  # file:///..., as MLflow users write it
    assert by_id(loader.load(results("a"))) == {"a": "alpha"}
    monkeypatch.setenv("ES_ITEMS_URI", str(tmp_path / "nowhere.jsonl"))
    with pytest.raises(DatasetError, match=r"nowhere\.jsonl does not exist"):
        loader.load(results("a"))


def test_folder_loader_reads_files_named_by_object_id_and_refuses_paths_outside(tmp_path: Path) -> None:
    (tmp_path / "items").mkdir()
    (tmp_path / "items" / "a.png").write_bytes(b"A")
    (tmp_path / "secret").write_bytes(b"S")
    loader = ItemsSourceLoader(str(tmp_path / "items"))
    assert by_id(loader.load(results("a.png"))) == {"a.png": b"A"}
    with pytest.raises(MissingItems, match=r"'b\.png'"):
        loader.load(results("a.png", "b.png"))
    with pytest.raises(UnreadableItems, match="outside the item folder"):
        loader.load(results("../secret"))


def test_s3_prefix_loader_fetches_objects_named_by_object_id(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    client = s3.client()
    for i in range(30):
        client.put_object(Bucket=bucket, Key=f"catalog/item-{i}", Body=f"text {i}".encode())
    loader = ItemsSourceLoader(f"s3://{bucket}/catalog", max_workers=8)
    rows = by_id(loader.load(results(*(f"item-{i}" for i in range(30)))))
    assert rows["item-29"] == b"text 29" and len(rows) == 30
    with pytest.raises(MissingItems, match=rf"1 items missing from s3://{bucket}/catalog: 'nope'"):
        loader.load(results("item-1", "nope"))


def test_s3_items_jsonl_object_is_read_like_a_local_one(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    body = "".join(json.dumps({"id": i, "text": f"t{i}"}) + "\n" for i in ("a", "b"))
    s3.client().put_object(Bucket=bucket, Key="data/items.jsonl", Body=body.encode())
    assert by_id(ItemsSourceLoader(f"s3://{bucket}/data/items.jsonl").load(results("b"))) == {"b": "tb"}


def test_aws_s3_data_loader_downloads_by_the_locator_in_meta_with_keys(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    s3.client().put_object(Bucket=bucket, Key="img/cat.png", Body=png("red"))
    loader = AWSS3DataLoader(aws_access_key_id="testing", aws_secret_access_key="testing")
    rows = loader.load(results("cat", "ghost", cat={"bucket": bucket, "file": "img/cat.png"},
                               ghost={"bucket": bucket, "file": "img/ghost.png"})[:1])
    assert by_id(rows) == {"cat": png("red")}
    with pytest.raises(MissingItems, match=rf"missing from s3://{bucket}: 'ghost'"):
        loader.load(results("cat", "ghost", cat={"bucket": bucket, "file": "img/cat.png"},
                            ghost={"bucket": bucket, "file": "img/ghost.png"}))


def test_aws_s3_data_loader_without_credentials_is_anonymous_and_with_a_role_assumes_it(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    s3.client().put_object(Bucket=bucket, Key="a.png", Body=b"A", ACL="public-read")
    s3.client().put_object(Bucket=bucket, Key="private.png", Body=b"P")
    with pytest.raises(UnreadableItems, match=r"'p': ClientError.*403"):
        AWSS3DataLoader().load(results("p", p={"bucket": bucket, "file": "private.png"}))
    meta = {"a": {"bucket": bucket, "file": "a.png"}}
    assert by_id(AWSS3DataLoader().load(results("a", **meta))) == {"a": b"A"}
    role = AWSS3DataLoader(role_arn="arn:aws:iam::123456789012:role/es-data")
    assert by_id(role.load(results("a", **meta))) == {"a": b"A"}


def test_aws_s3_data_loader_needs_a_locator_and_both_keys() -> None:
    with pytest.raises(ValueError, match="must be given together"):
        AWSS3DataLoader(aws_access_key_id="only-one")
    with pytest.raises(DatasetError, match="parse with AWSS3ClickstreamParser"):
        AWSS3DataLoader().load(results("a"))


def test_text_producer_decodes_utf8_files_and_names_the_ones_that_are_not() -> None:
    storage = ItemStorageProducer(DatasetFieldsNormalizer("item", "item_id"))(
        [{"item_id": "a", "item": "alpha"}, {"item_id": "b", "item": "béta".encode()}])
    assert dict(storage) == {"a": "alpha", "b": "béta"} and storage.kind == "text"
    with pytest.raises(UnreadableItems, match="'c': not UTF-8 text"):
        ItemStorageProducer()([{"item_id": "c", "item": b"\xff\xfe"}])


def test_clip_producer_keeps_image_bytes_and_names_the_files_that_are_not_images() -> None:
    producer = CLIPItemStorageProducer(DatasetFieldsNormalizer("item", "item_id"))
    storage = producer([{"item_id": "a", "item": png("red")}])
    assert storage["a"] == png("red") and storage.kind == "image"
    with pytest.raises(UnreadableItems, match="'b': not a readable image"):
        CLIPItemStorageProducer()([{"item_id": "b", "item": b"not a png"}])


def test_normalizer_names_the_fields_it_expected() -> None:
    with pytest.raises(ValueError, match="no 'image' field"):
        DatasetFieldsNormalizer("image", "item_id")({"item_id": "a", "item": "x"})
    with pytest.raises(ValueError, match="two different non-empty names"):
        DatasetFieldsNormalizer("item", "item")


def test_an_s3_item_source_out_of_reach_is_retryable_and_access_denied_is_not(
        s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # A server that is down (connection refused): the prefix and the jsonl object alike are "try again",
    # which dataprep retries, not a failed dataset.
    gone = S3Server().start()
    bucket = gone.new_bucket()
    gone.client().put_object(Bucket=bucket, Key="catalog/a", Body=b"A")
    gone.stop()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", gone.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", gone.endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for uri in (f"s3://{bucket}/catalog", f"s3://{bucket}/data/items.jsonl"):
        with pytest.raises(ItemSourceUnavailable, match=rf"cannot read items from {uri}: EndpointConnectionError"):
            ItemsSourceLoader(uri).load(results("a"))
    # A bucket that does not exist on a server that answers: asking again changes nothing.
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DatasetError) as refused:
        ItemsSourceLoader("s3://no-such-bucket-here/data/items.jsonl").load(results("a"))
    assert not isinstance(refused.value, ItemSourceUnavailable)
