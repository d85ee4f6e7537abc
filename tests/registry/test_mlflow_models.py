"""The MLflow layout shared by the trainer and the registry: model archives are reproducible, hold no
pickles, are checked against their recorded sha256 when downloaded, and extract only inside their folder."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from services.common.mlflow_models import (
    ModelArchiveError,
    download_model_archive,
    extract_model_archive,
    log_model_folder,
    sha256_of,
    ui_url,
    write_model_archive,
)
from tests.registry.helpers import (
    log_initial,
    log_legacy_archive,
    mlflow_tracking,
    new_plugin,
    stored_archive,
    stored_model,
)


def test_the_same_model_folder_gives_the_same_archive_and_sha256(tiny_model_dir, tmp_path: Path) -> None:
    first = write_model_archive(tiny_model_dir, tmp_path / "a.tar")
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    assert write_model_archive(copy, tmp_path / "b.tar") == first


def test_a_model_folder_with_pickled_weights_is_refused(tiny_model_dir, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelArchiveError, match="pickled"):
        write_model_archive(folder, tmp_path / "model.tar")


def test_download_model_archive_refuses_an_archive_that_does_not_match_its_sha256(
        mlflow_client, mlflow_server, tiny_model_dir, tmp_path: Path) -> None:
    run_id = log_initial(mlflow_client, new_plugin(), tiny_model_dir)
    path, archive = download_model_archive(mlflow_client, run_id, tmp_path / "good")
    assert path.stat().st_size == archive.size_bytes

    stored = stored_archive(mlflow_server.artifacts_dir, run_id)
    tampered = bytearray(stored.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    stored.write_bytes(bytes(tampered))
    with pytest.raises(ModelArchiveError, match=f"{archive.sha256} was recorded"):
        download_model_archive(mlflow_client, run_id, tmp_path / "bad")


def test_extracting_an_archive_refuses_entries_outside_the_folder_and_links(tmp_path: Path) -> None:
    for name, kind in (("../evil.txt", tarfile.REGTYPE), ("/etc/evil.txt", tarfile.REGTYPE),
                       ("link", tarfile.SYMTYPE)):
        tar_path = tmp_path / "bad.tar"
        with tarfile.open(tar_path, "w") as tar:
            member = tarfile.TarInfo(name)
            member.type = kind
            member.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            member.size = 0 if kind == tarfile.SYMTYPE else 4
            tar.addfile(member, None if kind == tarfile.SYMTYPE else io.BytesIO(b"evil"))
        with pytest.raises(ModelArchiveError):
            extract_model_archive(tar_path, tmp_path / "out")
        assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "link").exists()


def test_a_text_model_is_an_mlflow_sentence_transformers_model_with_its_own_card(
        mlflow_client, mlflow_server, tiny_model_dir, tmp_path: Path) -> None:
    import mlflow.sentence_transformers
    from sentence_transformers import SentenceTransformer

    plugin = new_plugin()
    run = mlflow_client.create_run(mlflow_client.create_experiment(f"cards {plugin}"))
    archive = log_model_folder(mlflow_client, run.info.run_id, tiny_model_dir, card="# the card of this version\n")
    stored = stored_model(mlflow_server.artifacts_dir, run.info.run_id)
    assert (stored / "MLmodel").is_file() and "sentence_transformers" in (stored / "MLmodel").read_text()
    assert (stored / "model.sentence_transformer" / "README.md").read_text() == "# the card of this version\n"
    assert not [p for p in stored.rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".pickle")]
    assert (tiny_model_dir / "README.md").read_text() != "# the card of this version\n"  # the source is untouched

    with mlflow_tracking(mlflow_server.url):
        loaded = mlflow.sentence_transformers.load_model(f"runs:/{run.info.run_id}/model")
    sentences = ["trail running shoes"]
    np.testing.assert_allclose(loaded.encode(sentences), SentenceTransformer(str(tiny_model_dir)).encode(sentences),
                               atol=1e-6)
    path, checked = download_model_archive(mlflow_client, run.info.run_id, tmp_path / "archive")
    assert checked == archive and sha256_of(path) == archive.sha256  # rebuilt byte for byte


def test_a_model_logged_before_mlflow_models_still_downloads_and_verifies(
        mlflow_client, tiny_model_dir, tmp_path: Path) -> None:
    run = mlflow_client.create_run(mlflow_client.create_experiment(f"legacy {new_plugin()}"))
    log_legacy_archive(mlflow_client, run.info.run_id, tiny_model_dir, tmp_path)
    path, archive = download_model_archive(mlflow_client, run.info.run_id, tmp_path / "down")
    assert sha256_of(path) == archive.sha256
    assert (extract_model_archive(path, tmp_path / "model") / "modules.json").is_file()


def test_ui_links_point_into_an_mlflow_servers_ui_and_a_local_store_has_none() -> None:
    assert ui_url("http://mlflow:5000/", "7", "a" * 32) == f"http://mlflow:5000/#/experiments/7/runs/{'a' * 32}"
    assert ui_url("https://m.example", model="Default Fine Tuning Method", version="3") == (
        "https://m.example/#/models/Default%20Fine%20Tuning%20Method/versions/3")
    assert ui_url("sqlite:///state/mlflow.db", "7", "a" * 32) is None
