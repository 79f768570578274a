"""Checks that need CUDA (``-m gpu``; skipped without it). ``scripts/gpu_check.sh`` runs them on a GPU machine.

Every comparison is against the CPU in the same process: fp32 on CUDA gives the CPU's records within
float tolerance, ``--half`` the same labels, and ``auto`` stays on PyTorch there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import SAMPLES

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture()
def auto_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNKIT_BACKEND")
    return tmp_path / "cache"


def test_auto_stays_on_torch_on_cuda(auto_cache):
    from cnnkit import api

    predictor = api.load("classify", device="cuda")
    assert predictor.loaded.runtime == "torch" and predictor.runtime.device.type == "cuda"
    assert not (auto_cache / "runtimes").exists()


@pytest.mark.parametrize("task", ["classify", "segment", "detect"])
def test_cuda_records_match_cpu(task):
    import cnnkit

    run = getattr(cnnkit, task)
    cpu = run(SAMPLES, device="cpu", backend="torch")
    gpu = run(SAMPLES, device="cuda", backend="torch")
    half = run(SAMPLES, device="cuda", half=True, backend="torch")
    assert len(cpu) == len(gpu) == len(half) > 0
    for c, g, h in zip(cpu, gpu, half):
        assert g.error is None and h.error is None
        if task == "classify":
            assert [p["label"] for p in g.predictions] == [p["label"] for p in c.predictions]
            np.testing.assert_allclose(
                [p["score"] for p in g.predictions], [p["score"] for p in c.predictions], atol=1e-3
            )
            assert h.predictions[0]["label"] == c.predictions[0]["label"]
        elif task == "segment":
            assert {p["label"] for p in g.predictions} == {p["label"] for p in c.predictions}
        else:
            assert abs(len(g.predictions) - len(c.predictions)) <= 1
            for pg, pc in zip(g.predictions, c.predictions):
                if pg["label"] == pc["label"]:
                    np.testing.assert_allclose(pg["box"], pc["box"], atol=2.0)


def test_benchmark_on_cuda_reports_the_allocator_peak():
    from cnnkit.benchmark import run

    [row] = run(["shapes-cnn"], backends=["torch"], device="cuda", images=8, batch_size=4, seconds=0.2)
    assert row.runtime == "torch" and row.e2e_ips > 0 and row.forward_ips > 0 and row.peak_mb > 0


@pytest.mark.parametrize("model", ["shapes-cnn", "shapes-yolov8n", "shapes-unet", "shapes-maskrcnn"])
def test_benchmark_times_fp16_on_cuda(model):
    from cnnkit.benchmark import run

    [row] = run([model], backends=["torch"], device="cuda", images=4, batch_size=2, seconds=0.2, half=True)
    assert row.precision == "fp16" and row.forward_ips > 0 and row.e2e_ips > 0
