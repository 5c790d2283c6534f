"""Start a script under torchrun on the CPU (gloo) and read what each rank wrote: for tests/test_distributed_*.py."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent / "distributed"


def require_gloo():
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: str, *args, nproc: int = 2, timeout: int = 180, env: dict | None = None):
    """Run tests/distributed/SCRIPT under torchrun with NPROC CPU processes; fail with its output if it fails."""
    require_gloo()
    # `python -m torch.distributed.run` is torchrun itself, found through this interpreter whatever PATH says.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(SCRIPTS / script), *map(str, args)]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join([str(SCRIPTS.parent.parent), full_env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    assert proc.returncode == 0, (f"torchrun {script} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                                  f"{proc.stderr[-6000:]}")
    return proc


def rank_outputs(out_dir: Path, nproc: int = 2) -> list[dict]:
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(nproc)]
