"""`protos/` is the single source of truth: the committed stubs are exactly what it generates, and it
declares the services and names DESIGN.md gives."""

from __future__ import annotations

from pathlib import Path

from services.api.embedding_studio.v1 import clickstream_pb2, dataprep_pb2, registry_pb2, trainer_pb2
from services.common.protogen import API_DIR, generate


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert fresh, "protoc generated nothing"
    for path in fresh:
        relative = path.relative_to(tmp_path)
        committed = API_DIR / relative
        assert committed.exists(), f"{relative} is not committed: run python -m services.common.protogen"
        assert committed.read_text() == path.read_text(), (
            f"{relative} drifted from protos/: run python -m services.common.protogen")


def test_each_service_has_the_contract_rpcs() -> None:
    expected = {
        (clickstream_pb2, "ClickstreamService"): {"RegisterSession", "PushEvents", "MarkSessionIrrelevant",
                                                  "GetSession", "GetBatch", "ReleaseBatch",
                                                  "StreamBatchSessions", "Ingest", "GetExperimentOutcome"},
        (dataprep_pb2, "DataPrepService"): {"PrepareDataset", "GetDataset"},
        (trainer_pb2, "TrainerService"): {"CreateTask", "GetTask", "ListTasks", "CancelTask", "RestartTask",
                                          "WatchTask"},
        (registry_pb2, "RegistryService"): {"RegisterInitialModel", "GetBestModel", "ListModelVersions",
                                            "ListIterations", "GetIteration", "DownloadModel", "SubmitCandidate",
                                            "GetServingPlan", "Interleave", "GetExperiment", "ListExperiments"},
    }
    for (module, name), methods in expected.items():
        service = module.DESCRIPTOR.services_by_name[name]
        assert service.full_name == f"embedding_studio.v1.{name}"
        assert {m.name for m in service.methods} == methods
        for method in service.methods:  # Buf style: one request and one response message per RPC
            assert method.input_type.name == f"{method.name}Request"
            assert method.output_type.name == f"{method.name}Response"
