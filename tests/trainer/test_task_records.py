"""Task records stay readable across changes of the contract: a record the trainer stored before
`max_trials` and the TaskStage enum existed (its trials in the metadata key `initial_max_evals`, its
stage a string) still reads, and trains that many trials."""

from __future__ import annotations

import json

from services.api.embedding_studio.v1 import trainer_pb2 as pb
from services.trainer.tasks import TaskRecord
from services.trainer.worker import max_evals

# What the trainer at 768f0c5 wrote to the KV bucket for `CreateTask(metadata={"initial_max_evals": 3})`.
RECORD_BEFORE_MAX_TRIALS = json.dumps({
    "announced_attempt": 1, "announced_changes": 2, "announced_requeues": 0, "changes": 2, "heartbeat": 0.0,
    "task": {"task_id": "7f0c", "fine_tuning_method": "Default Fine Tuning Method", "batch_id": "batch-1",
             "status": "TASK_STATUS_PENDING", "idempotency_key": "demo-0-2000-3",
             "metadata": {"initial_max_evals": 3.0}, "created_at": "1764700000", "updated_at": "1764700000",
             "progress": {"stage": "dataprep"}, "attempt": "1"},
}, sort_keys=True).encode()


def test_a_record_stored_before_max_trials_still_trains_the_trials_its_metadata_asked_for() -> None:
    record = TaskRecord.from_bytes(RECORD_BEFORE_MAX_TRIALS, revision=5)
    assert (record.task.max_trials, max_evals(record.task)) == (0, 3)
    assert record.task.progress.stage == pb.TASK_STAGE_DATAPREP  # the stage was a free string then


def test_max_trials_wins_and_zero_means_the_plugins_own_number() -> None:
    assert max_evals(pb.Task(max_trials=4)) == 4
    assert max_evals(pb.Task()) is None
    record = TaskRecord(pb.Task(task_id="t", max_trials=2))
    assert max_evals(TaskRecord.from_bytes(record.to_bytes(), revision=1).task) == 2
