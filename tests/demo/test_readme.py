"""The README's own flow, word for word: "Your own stack"'s first block (`scripts/es up`) in one shell;
in another, its second block (source the env file `es up` wrote, emulate, task create --watch, model best,
model download); then Ctrl-C stops it all and nothing is left running. (The README's Python blocks run in
tests/registry/test_readme_examples.py.) What changes is only what a test must change: a home of its own
(so `~/.embedding_studio` is the test's), and a plugins folder whose "Default Fine Tuning Method" is the
tiny 2-layer test plugin, so training takes seconds."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.servers import REPO_ROOT, listening

README = (REPO_ROOT / "README.md").read_text()
TINY_PLUGIN = REPO_ROOT / "tests" / "trainer" / "plugins" / "tiny_plugin.py"


def _bash_blocks(heading: str) -> list[str]:
    start = README.index(f"\n## {heading}\n")
    end = README.find("\n## ", start + 1)
    return re.findall(r"```bash\n(.*?)```", README[start:end if end != -1 else None], flags=re.DOTALL)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _stop(up: subprocess.Popen[str], state: Path) -> int | None:
    """Ctrl-C, as a terminal sends it (SIGINT to the shell's whole foreground group); if the stack does not
    stop, it is killed outright (its children follow their parent) and whatever still runs on its state
    folder with it, so a failed run never leaves a stack behind."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(up.pid, signal.SIGINT)
    try:
        return up.wait(120)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(up.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-KILL", "-f", str(state)], check=False)
        up.wait(30)
        return None


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


@pytest.mark.timeout(1800)  # es emulate embeds the BBC corpus with the base model: minutes on a busy CPU
def test_the_readmes_own_stack_flow_runs_as_written_and_ctrl_c_stops_it_all(
        user_home: tuple[Path, dict[str, str]]) -> None:
    work, env = user_home
    [up_block, client_block] = _bash_blocks("Your own stack")
    assert up_block.strip() == "scripts/es up"
    defaults_free = all(_port_free(port) for port in range(50051, 50055))
    state = Path(env["HOME"]) / ".embedding_studio"
    env_file = state / "env"
    # A terminal's foreground job has SIGINT's default action; a test run started in the background
    # (`cmd &` in a script, as CI may be) inherits it ignored, and Ctrl-C would then reach nothing.
    up = subprocess.Popen(["bash", "-c", up_block], cwd=work, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, start_new_session=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    returned: int | None = None
    try:
        deadline = time.monotonic() + 300
        while not env_file.exists():
            assert up.poll() is None, up.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "es up did not write its env file in 300 s"
            time.sleep(0.5)
        exported = env_file.read_text()
        if defaults_free:  # the README's examples name 127.0.0.1:50051
            assert "export ES_INGEST_ADDR=127.0.0.1:50051\n" in exported
            assert "export ES_REGISTRY_ADDR=127.0.0.1:50054\n" in exported
        assert "export ES_ITEMS_URI=" in exported  # the demo corpus's items, for the plugins' loaders

        flow = subprocess.run(["bash", "-e", "-c", client_block], cwd=work, env=env, capture_output=True,
                              text=True, timeout=1200)
        assert flow.returncode == 0, flow.stdout[-3000:] + flow.stderr[-5000:]
        assert re.search(r"task \S+: done", flow.stdout), flow.stdout
        assert "Default Fine Tuning Method: version" in flow.stdout  # es model best
        [model] = work.glob("Default-Fine-Tuning-Method-v*")  # es model download
        assert (model / "modules.json").is_file()
    finally:
        returned = _stop(up, state)
    assert returned == 0, up.stderr.read()[-3000:]
    assert not env_file.exists()  # no stale addresses left to source
    ports = [int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", exported)]
    assert len(ports) == 6 and not any(listening(port) for port in ports)  # NATS, MLflow, the four services
    for service in ("ingest", "dataprep", "registry", "trainer"):
        assert '"stopped"' in (state / "logs" / f"{service}.log").read_text().splitlines()[-1]
