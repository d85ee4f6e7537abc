"""`RegistryClient`: which model version a search backend should serve, and its files.

    from services.client import RegistryClient

    with RegistryClient("127.0.0.1:50054") as registry:
        best = registry.best_model("Default Fine Tuning Method")
        folder = registry.download("Default Fine Tuning Method", out=Path("model")).path
    SentenceTransformer(str(folder))

A download is checked against the size and sha256 the registry recorded at upload before anything is
extracted; failures are the domain errors of `services.client.calls`, and `DownloadError` for a
download that does not match its record or cannot be put where it was asked."""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.api.embedding_studio.v1 import registry_pb2 as pb
from services.api.embedding_studio.v1 import registry_pb2_grpc
from services.client.calls import RetryPolicy, ServiceClient, call
from services.common.errors import ServiceError
from services.common.mlflow_models import ModelArchiveError, extract_model_archive
from services.common.settings import Limits, Settings


class DownloadError(ServiceError):
    """A download that cannot be trusted or put where it was asked; nothing was extracted."""


@dataclass(frozen=True)
class Downloaded:
    archive: pb.ModelArchive  # the version, its sha256 and size, as the registry recorded them
    path: Path  # the folder the version was extracted into


def default_folder(plugin: str, version: str) -> Path:
    """./<plugin>-v<version>, the plugin's name reduced to letters, digits, dots, dashes and underscores."""
    return Path.cwd() / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', plugin).strip('-')}-v{version}"


class RegistryClient(ServiceClient):
    """A blocking client of `embedding_studio.v1.RegistryService` at `address` (default: the settings'
    `ES_REGISTRY_ADDR`); `settings`, `timeout_s` and `retry` as for `ClickstreamClient`."""

    def __init__(self, address: str | None = None, *, settings: Settings | None = None, timeout_s: float = 60.0,
                 retry: RetryPolicy | None = None, limits: Limits | None = None) -> None:
        settings = settings or Settings()
        super().__init__(address or settings.registry_addr, registry_pb2_grpc.RegistryServiceStub,
                         settings=settings, timeout_s=timeout_s, retry=retry, limits=limits)

    def best_model(self, plugin: str) -> pb.ModelVersion:
        """The version to serve now: its held-out scores, what it beat, its archive's sha256."""
        return self._call("GetBestModel", pb.GetBestModelRequest(fine_tuning_method=plugin)).model

    def serving_plan(self, plugin: str) -> pb.GetServingPlanResponse:
        """What to serve now: the champion, and while an online experiment runs, the challenger and the
        experiment's id (interleave the two with `services.client.interleaving.team_draft`)."""
        return self._call("GetServingPlan", pb.GetServingPlanRequest(fine_tuning_method=plugin))

    def experiment(self, experiment_id: str) -> pb.Experiment:
        """An online experiment with its counts, p-value and decision."""
        return self._call("GetExperiment", pb.GetExperimentRequest(experiment_id=experiment_id)).experiment

    def list_versions(self, plugin: str) -> list[pb.ModelVersion]:
        """Every version of the plugin, oldest first (all pages); `is_best` marks the one to serve."""
        versions: list[pb.ModelVersion] = []
        token = ""
        while True:
            page = self._call("ListModelVersions", pb.ListModelVersionsRequest(fine_tuning_method=plugin,
                                                                               page_token=token))
            versions.extend(page.versions)
            token = page.next_page_token
            if not token:
                return versions

    def download(self, plugin: str, version: str = "", out: Path | None = None,
                 on_progress: Callable[[pb.ModelArchive, int], None] = lambda _archive, _received: None
                 ) -> Downloaded:
        """Streams a version (default: the best) into `out` (default `default_folder`; it must be empty
        or new), checked against its recorded size and sha256 before it is extracted. `on_progress`
        hears the bytes received so far after every chunk. A stream that nothing answered is started
        again, under the client's retry policy."""
        return call(lambda: self._download(plugin, version, out, on_progress), self.address, self._retry)

    def _download(self, plugin: str, version: str, out: Path | None,
                  on_progress: Callable[[pb.ModelArchive, int], None]) -> Downloaded:
        stream = self._stub.DownloadModel(pb.DownloadModelRequest(fine_tuning_method=plugin, version=version),
                                          timeout=3600)
        header = next(stream).archive
        if not re.fullmatch(r"[1-9][0-9]*", header.version):
            stream.cancel()
            raise DownloadError(f"the registry at {self.address} answered version {header.version!r} for {plugin}, "
                                f"which is not a version number; nothing was written")
        folder = out or default_folder(plugin, header.version)
        if folder.exists() and any(folder.iterdir()):
            stream.cancel()
            raise DownloadError(f"{folder} is not empty; choose another folder")
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".es-download-", dir=folder.parent) as tmp:
            tar_path = Path(tmp) / "model.tar"
            digest, received = hashlib.sha256(), 0
            with open(tar_path, "wb") as handle:
                for message in stream:
                    handle.write(message.chunk)
                    digest.update(message.chunk)
                    received += len(message.chunk)
                    on_progress(header, received)
            if digest.hexdigest() != header.sha256 or received != header.size_bytes:
                raise DownloadError(
                    f"the download of {plugin} version {header.version} does not match the registry's record: got "
                    f"{received} bytes with sha256 {digest.hexdigest()}, expected {header.size_bytes} bytes with "
                    f"sha256 {header.sha256}; nothing was extracted")
            try:
                extract_model_archive(tar_path, folder)
            except ModelArchiveError as error:
                raise DownloadError(str(error)) from error
        return Downloaded(header, folder)

