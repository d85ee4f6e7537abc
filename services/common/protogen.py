"""Generates the Python gRPC stubs under `services/api/` from `protos/`, the single source of truth.

The stubs are committed; `tests/test_contracts.py` regenerates them into a temporary folder and fails
on any drift. Run `python -m services.common.protogen` after changing a `.proto` file.
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
API_PACKAGE = "services.api"
API_DIR = REPO_ROOT / "services" / "api"

# protoc writes `from embedding_studio.v1 import x_pb2`; our stubs live inside `services.api`.
_IMPORT = re.compile(r"^from embedding_studio\.v1 import ", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("embedding_studio/v1/*.proto"))


def generate(out_dir: Path = API_DIR) -> list[Path]:
    """Generates `*_pb2.py`, `*_pb2.pyi` and `*_pb2_grpc.py` into `out_dir`; returns the files written."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {PROTO_ROOT}")
    written = []
    package_dir = out_dir / "embedding_studio" / "v1"
    for folder in (out_dir / "embedding_studio", package_dir):
        (folder / "__init__.py").touch()
    for path in sorted(package_dir.glob("*_pb2*.py*")):
        text = path.read_text()
        path.write_text(_IMPORT.sub(f"from {API_PACKAGE}.embedding_studio.v1 import ", text))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(REPO_ROOT), file=sys.stderr)
