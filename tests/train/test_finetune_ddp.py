"""``torchrun --nproc-per-node 2 -m cnnkit finetune``: DDP with gloo on CPU (issue 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.models.checkpoint import read_meta
from tests.fixtures.finetune import NAMES

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], folder: Path) -> tuple[str, str]:
    """Run ``cmd`` with its output in files opened as plain descriptors.

    Late in a single-process run of the whole suite (after the native runtimes have been loaded and
    used), the pipes and text wrappers of ``capture_output=True, text=True`` crashed the pytest
    process here (SIGSEGV in ``TextIOWrapper.fileno``); descriptors avoid that code path.
    """
    out_path, err_path = folder / "stdout.txt", folder / "stderr.txt"
    out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        code = subprocess.call(cmd, stdout=out_fd, stderr=err_fd, stdin=subprocess.DEVNULL, cwd=REPO, timeout=240)
    finally:
        os.close(out_fd)
        os.close(err_fd)
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    assert code == 0, stderr[-3000:]
    return stdout, stderr


def test_two_cpu_processes_train_one_model_that_loads_and_classifies(tiny_digits, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "cnnkit",
        "finetune",
        str(tiny_digits),
        "--model",
        "lenet5",
        "--no-pretrained",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    stdout, stderr = _run(cmd, tmp_path)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, stdout  # rank 0 reports, rank 1 stays quiet
    summary = json.loads(lines[0])
    assert summary["metrics"]["world_size"] == 2
    meta = read_meta(out / "best.safetensors")
    assert meta["world_size"] == 2 and meta["labels"] == sorted(NAMES)
    assert summary["metrics"]["val_images"] == 3 * round(12 * 0.2)  # both ranks counted, none twice
    assert not list(out.glob(".*.tmp"))
    r = CliRunner().invoke(
        app,
        ["classify", str(tiny_digits / "one"), "--weights", str(out / "best.safetensors"), "-f", "jsonl", "-k", "1"],
    )
    assert r.exit_code == 0, r.output
    labels = [json.loads(line)["predictions"][0]["label"] for line in r.stdout.splitlines()]
    assert len(labels) == 12 and set(labels) <= set(NAMES)
