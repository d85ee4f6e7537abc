"""A trainer's tasks live in the NATS bucket: its health says NOT_SERVING until NATS is connected and the
bucket open, so whatever waits for SERVING (es up, a load balancer, the test stacks) never calls a trainer
that would answer UNAVAILABLE."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.servers import NatsServer, ServiceProcess, free_port, wait_for_port, wait_healthy


def test_the_trainer_is_not_serving_until_its_task_bucket_is_reachable(tmp_path: Path) -> None:
    nats = NatsServer(tmp_path / "nats", port=free_port())  # not started yet
    env = {k: v for k, v in os.environ.items() if not k.startswith("ES_")}
    env.update({"ES_NATS_URL": nats.url, "ES_STATE_DIR": str(tmp_path / "state"), "ES_LOG_FORMAT": "json"})
    trainer = ServiceProcess("trainer", env, tmp_path / "trainer.log").start(wait=False)
    try:
        wait_for_port(trainer.port, timeout=60)
        with grpc.insecure_channel(trainer.address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        nats.start()
        wait_healthy(trainer.address, timeout=60)  # SERVING once the bucket opens
    finally:
        trainer.terminate()
        nats.stop()
