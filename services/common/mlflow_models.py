"""The MLflow layout the trainer writes and the registry reads: experiment names, run tags, the model
(an MLflow Model of the `sentence_transformers` flavor, or a tar for a model that flavor cannot hold),
its sha256, and its safe extraction.

A run's `model/` artifact is one of two layouts, named by the run's tag `es.model_layout`:

- "sentence_transformers" (every text model): an MLflow Model, so `mlflow.sentence_transformers.load_model
  ("models:/<plugin>@champion")` and `mlflow models serve` work; the sentence-transformers folder is
  `model/model.sentence_transformer/` and carries the version's own model card (README.md). The sha256
  recorded is that of `write_model_archive` of that folder, which is byte for byte repeatable, so the
  registry rebuilds the archive it streams and the client's check covers the stored files.
- "archive" (a two-tower `Router` model such as the CLIP plugin's, which the flavor cannot load, and every
  run logged before the flavor): the tar itself, `model/model.tar`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import quote

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
TAG_LAYOUT = "es.model_layout"
LAYOUT_FLAVOR = "sentence_transformers"
LAYOUT_ARCHIVE = "archive"

MODEL_ARTIFACT_DIR = "model"
MODEL_ARCHIVE_PATH = "model/model.tar"  # the "archive" layout
FLAVOR_DATA_PATH = "model/model.sentence_transformer"  # the flavor's folder in the "sentence_transformers" layout
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


def ui_url(tracking_uri: str, experiment_id: str = "", run_id: str = "", model: str = "", version: str = ""
           ) -> str | None:
    """The MLflow UI page of a run (experiment and run ids) or of a model version, when the tracking URI
    is an MLflow server (http or https); None for a local store, which has no UI."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    base = tracking_uri.rstrip("/")
    if run_id and experiment_id:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    if model and version:
        return f"{base}/#/models/{quote(model)}/versions/{version}"
    return None


def find_initial_run(client: MlflowClient, plugin_name: str) -> Run | None:
    """The plugin's initial model: the newest finished run of `INITIAL_EXPERIMENT` tagged with the plugin
    and the kind "initial" (None when none is logged). The trainer starts from it and the registry
    registers it as version 1."""
    experiment = client.get_experiment_by_name(INITIAL_EXPERIMENT)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=(f"tags.`{TAG_PLUGIN}` = '{plugin_name}' AND tags.`{TAG_KIND}` = '{KIND_INITIAL}' "
                       f"AND attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


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
    # The same folder gives the same bytes (and sha256) wherever and whenever it is archived, whatever
    # modes the files got on the way (an artifact store's download may not keep them).
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    member.mtime = 0
    member.mode = 0o644
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


def _is_two_tower(model_dir: Path) -> bool:
    """Whether the folder's first module is a sentence-transformers `Router` (one folder per tower)."""
    modules = json.loads((model_dir / "modules.json").read_text())
    return bool(modules) and modules[0].get("type", "").rsplit(".", 1)[-1] == "Router"


def _flavor_model(model_dir: Path, dest: Path, card: str | None) -> Path:
    """The MLflow Model of the `sentence_transformers` flavor for a saved folder, written to `dest`; its
    requirements are pinned to the installed sentence-transformers (nothing is inferred or downloaded)."""
    import mlflow.sentence_transformers
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    mlflow.sentence_transformers.save_model(
        model, str(dest), pip_requirements=[f"sentence-transformers=={sentence_transformers.__version__}"])
    data = dest / PurePosixPath(FLAVOR_DATA_PATH).name
    for path in data.rglob("*"):
        if path.suffix in _PICKLE_SUFFIXES:
            raise ModelArchiveError(f"{path} looks pickled; save the model with safetensors")
    if card is not None:
        (data / "README.md").write_text(card)
    return data


def log_model_folder(client: MlflowClient, run_id: str, model_dir: Path, card: str | None = None) -> ModelArchive:
    """Logs a saved sentence-transformers folder as the run's `model/` artifact (an MLflow Model of the
    `sentence_transformers` flavor with `card` as its README.md, or the "archive" layout for a two-tower
    model) and records the layout, the archive's sha256 and its size as run tags."""
    model_dir = Path(model_dir)
    if not (model_dir / "modules.json").is_file():
        raise ModelArchiveError(f"{model_dir} is not a sentence-transformers model folder (no modules.json)")
    with tempfile.TemporaryDirectory(prefix="es-model-") as tmp:
        if _is_two_tower(model_dir):
            layout, tar_path = LAYOUT_ARCHIVE, Path(tmp) / PurePosixPath(MODEL_ARCHIVE_PATH).name
            if card is not None:  # the caller's folder stays as it is
                model_dir = Path(shutil.copytree(model_dir, Path(tmp) / "folder"))
                (model_dir / "README.md").write_text(card)
            archive = write_model_archive(model_dir, tar_path)
            client.log_artifact(run_id, str(tar_path), MODEL_ARTIFACT_DIR)
        else:
            layout, flavored = LAYOUT_FLAVOR, Path(tmp) / MODEL_ARTIFACT_DIR
            data = _flavor_model(model_dir, flavored, card)
            archive = write_model_archive(data, Path(tmp) / "archive.tar")  # its sha256 only; not stored
            client.log_artifacts(run_id, str(flavored), MODEL_ARTIFACT_DIR)
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(TAG_LAYOUT, layout), RunTag(TAG_SHA256, archive.sha256),
                                   RunTag(TAG_SIZE, str(archive.size_bytes))])
    return archive


def fetch_model_archive(client: MlflowClient, run: Run, dest_dir: Path) -> Path:
    """The run's model archive in `dest_dir`, unchecked: the stored tar of the "archive" layout, or the
    tar `write_model_archive` builds from the flavor's stored folder. Raises MlflowException (missing
    artifacts included) as MLflow raises it."""
    run_id = run.info.run_id
    if run.data.tags.get(TAG_LAYOUT) != LAYOUT_FLAVOR:
        return Path(client.download_artifacts(run_id, MODEL_ARCHIVE_PATH, str(dest_dir)))
    folder = Path(client.download_artifacts(run_id, FLAVOR_DATA_PATH, str(dest_dir)))
    tar_path = dest_dir / "model.tar"
    write_model_archive(folder, tar_path)
    return tar_path


def download_model_archive(client: MlflowClient, run_id: str, dest_dir: Path) -> tuple[Path, ModelArchive]:
    """Downloads a run's model archive into `dest_dir` and checks it against the recorded sha256."""
    run = client.get_run(run_id)
    archive = recorded_archive(run)
    if archive is None:
        raise ModelArchiveError(f"run {run_id} has no model archive recorded (tag {TAG_SHA256})")
    tar_path = fetch_model_archive(client, run, dest_dir)
    actual = sha256_of(tar_path)
    if actual != archive.sha256:
        raise ModelArchiveError(f"the model archive of run {run_id} has sha256 {actual}, but {archive.sha256} was "
                                f"recorded when it was saved: the stored files were changed or damaged")
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
