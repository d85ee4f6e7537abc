"""`es task create|get|list|watch|cancel|restart` against a real trainer: results on stdout (`--json`:
one object on the last line), a refused call exits non-zero with the service's reason."""

from __future__ import annotations

import json
import os
import subprocess

from tests.servers import REPO_ROOT, VENV_BIN
from tests.trainer.conftest import PLUGIN, Stack


def es(stack: Stack, trainer_addr: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env, "ES_TRAINER_ADDR": trainer_addr}
    return subprocess.run([str(VENV_BIN / "es"), "task", *args], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


def last_json(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_task_commands_drive_a_task_through_its_states(stack: Stack) -> None:
    trainer = stack.start_trainer("cli-trainer").address
    stack.knobs(epochs=2000, trials=1)  # long enough to cancel it while it runs
    stack.fill_batch("cli", sessions=60, seed=8)
    created = last_json(es(stack, trainer, "create", PLUGIN, "--idempotency-key", "cli-1",
                           "--metadata", '{"team": "search"}', "--trials", "1", "--json"))
    task_id = created["task"]["task_id"]
    assert created["task"]["metadata"] == {"team": "search"} and created["task"]["max_trials"] == 1

    again = es(stack, trainer, "create", PLUGIN, "--idempotency-key", "cli-1")
    assert again.returncode == 0 and "already created under this idempotency key" in again.stdout

    shown = last_json(es(stack, trainer, "get", task_id, "--json"))
    assert shown["task_id"] == task_id and shown["batch_id"] == created["task"]["batch_id"]
    listed = last_json(es(stack, trainer, "list", "--plugin", PLUGIN, "--json"))
    assert task_id in [t["task_id"] for t in listed["tasks"]]

    canceled = last_json(es(stack, trainer, "cancel", task_id, "--json"))
    assert canceled["status"] == "TASK_STATUS_CANCELED"
    watched = es(stack, trainer, "watch", task_id)
    assert watched.returncode == 1 and "canceled" in watched.stdout  # a task that did not end done
    restarted = last_json(es(stack, trainer, "restart", task_id, "--json"))
    assert restarted["status"] == "TASK_STATUS_PENDING" and restarted["attempt"] == "2"
    last_json(es(stack, trainer, "cancel", task_id, "--json"))


def test_the_task_commands_refuse_bad_input_with_the_reason(stack: Stack) -> None:
    trainer = stack.start_trainer("cli-refusals").address
    missing = es(stack, trainer, "get", "no-such-task")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "no-such-task" in missing.stderr
    bad_metadata = es(stack, trainer, "create", PLUGIN, "--metadata", "[1, 2]")
    assert bad_metadata.returncode == 2 and "--metadata must be a JSON object" in bad_metadata.stderr
    bad_status = es(stack, trainer, "list", "--status", "sleeping")
    assert bad_status.returncode == 2 and "sleeping" in bad_status.stderr
    unknown = es(stack, trainer, "create", "No Such Method")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
