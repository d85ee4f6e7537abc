"""Typed settings of every service, read from `ES_`-prefixed environment variables (and `.env`).

Every setting has a default that works on one machine; the local defaults all live under
`ES_STATE_DIR`. The README lists every variable.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The plugins shipped with the product: the repository's folder, or where an installed wheel puts it
# (pyproject.toml's data-files, under the environment's prefix).
REPO_PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
INSTALLED_PLUGINS = Path(sysconfig.get_path("data")) / "share" / "embedding-studio" / "plugins"


def default_plugins_path() -> Path:
    """ES_PLUGINS_PATH's default, absolute: ./plugins when there is one, else the shipped plugins (the
    repository's, or an installed wheel's)."""
    if Path("plugins").is_dir():
        return Path("plugins").resolve()
    return REPO_PLUGINS if REPO_PLUGINS.is_dir() else INSTALLED_PLUGINS


def local_path(uri: str) -> str:
    """A `file:` URI (`file:///data/items.jsonl`, as MLflow users write it) as the plain path it names; any
    other string as it is. A `file:` URI naming another host is refused: there is no reading it here."""
    if not uri.startswith("file:"):
        return uri
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"{uri!r} names the host {parts.netloc!r}: a file: URI must be local (file:///path)")
    return unquote(parts.path)


class Limits(BaseSettings):
    """Input limits: a request over any of them is refused whole with INVALID_ARGUMENT naming it."""

    model_config = SettingsConfigDict(env_prefix="ES_", env_file=".env", extra="ignore")

    max_id_length: int = Field(256, ge=1, description="Characters in any id (session, event, object, user, release).")
    max_query_length: int = Field(4096, ge=1, description="Characters in a search query.")
    max_results: int = Field(1000, ge=1, description="Search results in one session.")
    max_events_per_request: int = Field(10_000, ge=1, description="Events in one PushEvents or RegisterSession.")
    max_event_type_length: int = Field(64, ge=1, description="Characters in an event type.")
    max_meta_bytes: int = Field(16_384, ge=2, description="Bytes of one meta, search_meta or task metadata "
                                "(protobuf-encoded).")
    max_meta_depth: int = Field(16, ge=1, le=30, description="Structs and lists nested in one meta/search_meta "
                                "(protobuf stops parsing a message at 100 nested levels; each one here is three).")
    max_event_age_s: int = Field(30 * 86_400, ge=0, description="How far in the past a created_at may lie.")
    max_clock_skew_s: int = Field(300, ge=0, description="How far in the future a created_at may lie.")
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="gRPC message size limit.")
    max_ingest_errors: int = Field(100, ge=1, description="Rejections listed in an Ingest summary.")


class Settings(BaseSettings):
    """Everything a service or the CLI is configured with."""

    model_config = SettingsConfigDict(env_prefix="ES_", env_file=".env", extra="ignore")

    state_dir: Path = Field(Path.home() / ".embedding_studio", description="Folder of every local default.")
    plugins_path: Path = Field(default_factory=default_plugins_path, description="Folder the plugins are discovered "
                               "in; default ./plugins if there is one, else the shipped plugins.")
    nats_url: str = "nats://127.0.0.1:4222"
    clickstream_db_url: str = Field("", description="SQLAlchemy URL; default SQLite under ES_STATE_DIR.")
    mlflow_tracking_uri: str = Field("", description="Default: SQLite store under ES_STATE_DIR.")
    artifacts_uri: str = Field("", description="Local folder or s3://bucket/prefix; default under ES_STATE_DIR.")
    items_uri: str = Field("", description="items.jsonl path or s3://bucket/prefix the default plugin reads.")
    ingest_addr: str = "127.0.0.1:50051"
    dataprep_addr: str = "127.0.0.1:50052"
    trainer_addr: str = "127.0.0.1:50053"
    registry_addr: str = "127.0.0.1:50054"
    auth_token: str = Field("", description="Bearer token every RPC but health needs; empty turns auth off.")
    tls_cert: Path | None = Field(None, description="Server certificate (PEM); with ES_TLS_KEY turns TLS on.")
    tls_key: Path | None = Field(None, description="Server private key (PEM).")
    tls_ca: Path | None = Field(None, description="CA (PEM) clients verify servers with; servers require client certs.")
    trainer_lease_s: float = Field(60.0, gt=0, description=(
        "Seconds a trainer replica's claim on a task outlives its last heartbeat; also how long NATS waits "
        "before redelivering a task whose replica died."))
    dataprep_max_deliver: int = Field(20, ge=1, description=(
        "Deliveries a dataset request gets (waits from 2 s doubling to 60 s between them, about 17 minutes "
        "in all at 20) before dataprep fails the dataset with the last error."))
    promotion: str = Field("offline", pattern="^(offline|online)$", description=(
        "offline: a candidate that wins the held-out gate becomes the best; online: it becomes the challenger "
        "of an interleaving experiment with real users and the best only if it wins there."))
    experiment_alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of an online experiment's "
                                    "decision.")
    experiment_min_sessions: int = Field(200, ge=1, description=(
        "Non-tied sessions an online experiment needs before it may decide."))
    experiment_max_sessions: int = Field(20_000, ge=1, description=(
        "Sessions, ties included, after which an undecided online experiment stops and the champion stays."))
    experiment_poll_s: float = Field(10.0, gt=0, description="Seconds between the registry's looks at the "
                                     "counts of running experiments.")
    shutdown_grace_s: float = Field(10.0, ge=0, description="Seconds in-flight RPCs get to finish on SIGTERM.")
    log_level: str = Field("info", pattern="^(?i:debug|info|warning|error|critical)$",
                           description="debug, info, warning, error or critical.")
    log_format: str = Field("json", pattern="^(json|console)$")

    @field_validator("artifacts_uri", "items_uri")
    @classmethod
    def _file_uris_as_paths(cls, uri: str) -> str:
        return local_path(uri)

    @model_validator(mode="after")
    def _local_defaults(self) -> Settings:
        state = self.state_dir.expanduser()
        self.state_dir = state
        if not self.clickstream_db_url:
            self.clickstream_db_url = f"sqlite:///{state / 'clickstream.db'}"
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{state / 'mlflow.db'}"
        if not self.artifacts_uri:
            self.artifacts_uri = str(state / "artifacts")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("ES_TLS_CERT and ES_TLS_KEY must be set together")
        if self.experiment_min_sessions > self.experiment_max_sessions:
            raise ValueError(f"ES_EXPERIMENT_MIN_SESSIONS ({self.experiment_min_sessions}) must not exceed "
                             f"ES_EXPERIMENT_MAX_SESSIONS ({self.experiment_max_sessions})")
        return self

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None
