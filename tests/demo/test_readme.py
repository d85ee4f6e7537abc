"""The README's own flow, word for word: `scripts/es up` in one shell; in another, `source` the env file
it writes and run the README's commands (emulate, task create --watch, model best, model download); then
the README's Python examples against the same stack; Ctrl-C stops it all. What changes is only what a
test must change: a home folder of its own (so `~/.embedding_studio` is the test's), and a plugins folder
whose "Default Fine Tuning Method" is the tiny 2-layer test plugin, so training takes seconds."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.servers import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
TINY_PLUGIN = REPO_ROOT / "tests" / "trainer" / "plugins" / "tiny_plugin.py"


def _section(heading: str) -> str:
    start = README.index(f"\n## {heading}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def _blocks(heading: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(heading), flags=re.DOTALL)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def user_home(tmp_path: Path, tiny_model_dir: Path) -> tuple[Path, dict[str, str]]:
    """A working folder that looks like the repository to the README's commands (scripts/, .venv/), a home of
    its own, and the environment of a user who set nothing but the test's plugin."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("scripts", ".venv", "pyproject.toml", "constraints.txt"):
        (work / name).symlink_to(REPO_ROOT / name)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "readme_plugin.py").write_text(
        TINY_PLUGIN.read_text().replace('name="Tiny Test Method"', 'name="Default Fine Tuning Method"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ES_")}
    env.update({"HOME": str(tmp_path / "home"), "ES_PLUGINS_PATH": str(plugins),
                "ES_TEST_MODEL_PATH": str(tiny_model_dir)})
    return work, env


def test_the_readmes_own_stack_flow_runs_as_written(user_home: tuple[Path, dict[str, str]]) -> None:
    work, env = user_home
    [up_block, client_block] = _blocks("Your own stack", "bash")
    assert up_block.strip() == "scripts/es up"
    defaults_free = all(_port_free(port) for port in range(50051, 50055))
    env_file = Path(env["HOME"]) / ".embedding_studio" / "env"
    up = subprocess.Popen(["bash", "-c", up_block], cwd=work, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not env_file.exists():
            assert up.poll() is None, up.stderr.read()
            assert time.monotonic() < deadline, "es up did not write its env file in 240 s"
            time.sleep(0.5)
        exported = env_file.read_text()
        if defaults_free:  # the README's examples name 127.0.0.1:50051
            assert "export ES_INGEST_ADDR=127.0.0.1:50051\n" in exported
            assert "export ES_REGISTRY_ADDR=127.0.0.1:50054\n" in exported
        assert "export ES_ITEMS_URI=" in exported  # the demo corpus's items, for the plugins' loaders

        flow = subprocess.run(["bash", "-e", "-c", client_block], cwd=work, env=env, capture_output=True,
                              text=True, timeout=900)
        assert flow.returncode == 0, flow.stdout[-3000:] + flow.stderr[-5000:]
        assert re.search(r"task \S+: done", flow.stdout), flow.stdout
        assert "Default Fine Tuning Method: version" in flow.stdout  # es model best
        [model] = work.glob("Default-Fine-Tuning-Method-v*")
        assert (model / "modules.json").is_file()

        python_blocks = [*_blocks("Sending clickstream", "python"), *_blocks("Writing a plugin", "python")]
        assert len(python_blocks) == 2
        for block in python_blocks if defaults_free else []:  # they name 127.0.0.1:50051
            ran = subprocess.run([str(work / ".venv" / "bin" / "python"), "-c", block], cwd=REPO_ROOT, env=env,
                                 capture_output=True, text=True, timeout=120)
            assert ran.returncode == 0, f"{block}\n{ran.stderr[-3000:]}"
    finally:
        up.send_signal(signal.SIGINT)  # Ctrl-C
        returned = up.wait(120)
    assert returned == 0, up.stderr.read()[-3000:]
    assert not env_file.exists()  # no stale addresses left to source
    state = env_file.parent
    for service in ("ingest", "dataprep", "registry", "trainer"):
        assert '"stopped"' in (state / "logs" / f"{service}.log").read_text().splitlines()[-1]
