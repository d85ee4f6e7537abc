"""The MLflow layout shared by the trainer and the registry: model archives are reproducible, hold no
pickles, are checked against their recorded sha256 when downloaded, and extract only inside their folder."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from services.common.mlflow_models import (
    ModelArchiveError,
    download_model_archive,
    extract_model_archive,
    write_model_archive,
)
from tests.registry.helpers import log_initial, new_plugin, stored_archive


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
