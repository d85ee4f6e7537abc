"""The MLflow layout the trainer writes and the registry reads: experiment names, run tags, the model
archive (a tar of a sentence-transformers folder, recorded with its sha256) and its safe extraction."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only the callers that talk to MLflow pay for importing it (about a second)
    from mlflow import MlflowClient
    from mlflow.entities import Run

# The seed's experiment names (REFERENCE.md): one experiment holds every plugin's initial model, and
# each fine-tuning iteration (a plugin on a batch) has its own.
INITIAL_EXPERIMENT = "iteration / initial"
_ITERATION_PREFIX = "iteration / "

TAG_PLUGIN = "es.plugin"
TAG_PLUGIN_VERSION = "es.plugin_version"
TAG_BATCH = "es.batch_id"
TAG_TASK = "es.task_id"
TAG_KIND = "es.kind"
KIND_INITIAL = "initial"
KIND_TRIAL = "trial"
TAG_SHA256 = "es.model_sha256"
TAG_SIZE = "es.model_size"

MODEL_ARCHIVE_PATH = "model/model.tar"
# The MLflow Model Registry alias of a plugin's best version; only the registry moves it.
BEST_ALIAS = "champion"

# Pickled weights would run code when loaded; a model folder must hold safetensors only.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# MLflow refuses "/" and ":" in model names, and its search filters quote names with "'".
_NAME_FORBIDDEN = ("/", ":", "'")


# MLflow's HTTP client retries a refused connection 7 times with exponential backoff (minutes); a
# caller should hear UNAVAILABLE within seconds instead, and retry itself. Its artifact transfers draw
# progress bars, which would land in a service's JSON log. MLflow reads both from the environment
# only; an operator's own values win.
_MLFLOW_CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                           "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def apply_mlflow_client_defaults() -> None:
    """Sets the MLflow client's retry and progress-bar defaults of a service (before its first call)."""
    for name, value in _MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)


class ModelArchiveError(Exception):
    """A model archive is missing, unsafe, or does not match its recorded sha256."""


def iteration_experiment_name(plugin_name: str, batch_id: str) -> str:
    return f"{_ITERATION_PREFIX}{plugin_name} / {batch_id}"


def parse_iteration_experiment_name(name: str) -> tuple[str, str] | None:
    """(plugin name, batch id) of an iteration experiment's name; None for any other experiment."""
    if name == INITIAL_EXPERIMENT or not name.startswith(_ITERATION_PREFIX):
        return None
    # Batch ids never contain " / "; plugin names may.
    plugin, separator, batch = name.removeprefix(_ITERATION_PREFIX).rpartition(" / ")
    return (plugin, batch) if separator and plugin and batch else None


def registered_model_name(plugin_name: str) -> str:
    """The MLflow registered model whose versions are the plugin's models."""
    if not plugin_name.strip() or any(char in plugin_name for char in _NAME_FORBIDDEN):
        raise ValueError(f"plugin name {plugin_name!r} cannot name an MLflow registered model: it must not be "
                         f"empty or contain any of {' '.join(_NAME_FORBIDDEN)}")
    return plugin_name


@dataclass(frozen=True)
class ModelArchive:
    sha256: str
    size_bytes: int


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def recorded_archive(run: Run) -> ModelArchive | None:
    """The archive recorded with a run by `log_model_folder`; None if the run has none."""
    sha256, size = run.data.tags.get(TAG_SHA256), run.data.tags.get(TAG_SIZE)
    if not sha256 or not size:
        return None
    return ModelArchive(sha256=sha256, size_bytes=int(size))


def _reset_owner(member: tarfile.TarInfo) -> tarfile.TarInfo:
    # The same folder gives the same bytes (and sha256) wherever and whenever it is archived.
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    member.mtime = 0
    return member


def write_model_archive(model_dir: Path, tar_path: Path) -> ModelArchive:
    """Tars a model folder (entries relative to it, sorted, no links) and returns its sha256 and size."""
    if not (model_dir / "modules.json").is_file():
        raise ModelArchiveError(f"{model_dir} is not a sentence-transformers model folder (no modules.json)")
    files = sorted(path for path in model_dir.rglob("*") if not path.is_dir())
    for path in files:
        if path.is_symlink() or not path.is_file():
            raise ModelArchiveError(f"{path} is not a regular file; a model archive holds regular files only")
        if path.suffix in _PICKLE_SUFFIXES:
            raise ModelArchiveError(f"{path} looks pickled; save the model with safetensors")
    with tarfile.open(tar_path, "w") as tar:
        for path in files:
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False, filter=_reset_owner)
    return ModelArchive(sha256=sha256_of(tar_path), size_bytes=tar_path.stat().st_size)


def log_model_folder(client: MlflowClient, run_id: str, model_dir: Path) -> ModelArchive:
    """Logs a sentence-transformers folder as the run's MODEL_ARCHIVE_PATH and records its sha256 and
    size as the run's TAG_SHA256 and TAG_SIZE."""
    archive_dir, archive_name = PurePosixPath(MODEL_ARCHIVE_PATH).parent, PurePosixPath(MODEL_ARCHIVE_PATH).name
    with tempfile.TemporaryDirectory(prefix="es-model-") as tmp:
        tar_path = Path(tmp) / archive_name
        archive = write_model_archive(Path(model_dir), tar_path)
        client.log_artifact(run_id, str(tar_path), str(archive_dir))
    client.set_tag(run_id, TAG_SHA256, archive.sha256)
    client.set_tag(run_id, TAG_SIZE, str(archive.size_bytes))
    return archive


def download_model_archive(client: MlflowClient, run_id: str, dest_dir: Path) -> tuple[Path, ModelArchive]:
    """Downloads a run's model archive into `dest_dir` and checks it against the recorded sha256."""
    archive = recorded_archive(client.get_run(run_id))
    if archive is None:
        raise ModelArchiveError(f"run {run_id} has no model archive recorded (tag {TAG_SHA256})")
    tar_path = Path(client.download_artifacts(run_id, MODEL_ARCHIVE_PATH, str(dest_dir)))
    actual = sha256_of(tar_path)
    if actual != archive.sha256:
        raise ModelArchiveError(f"the model archive of run {run_id} has sha256 {actual}, but {archive.sha256} was "
                                f"recorded when it was saved: the stored file was changed or damaged")
    return tar_path, archive


def extract_model_archive(tar_path: Path, dest_dir: Path) -> Path:
    """Extracts a model archive into `dest_dir` (created if missing) and returns it; refuses absolute
    paths, `..`, links and anything else that is not a plain file or folder."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "r:") as tar:
        members = tar.getmembers()
        for member in members:
            path = PurePosixPath(member.name)
            if path.is_absolute() or ".." in path.parts:
                raise ModelArchiveError(f"{tar_path}: refusing entry {member.name!r} outside the model folder")
            if not (member.isfile() or member.isdir()):
                raise ModelArchiveError(f"{tar_path}: refusing entry {member.name!r}: not a plain file or folder")
        # The data filter checks the same again and also drops modes like setuid.
        tar.extractall(dest_dir, members=members, filter="data")
    return dest_dir
