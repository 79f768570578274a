"""Device selection logic, tested with availability passed in / mocked (no GPU here)."""

from __future__ import annotations

import pytest

from cnnkit.device import Runtime, check_half, choose_device, resolve_device, set_threads
from cnnkit.errors import UsageError


@pytest.mark.parametrize(
    ("spec", "cuda", "mps", "expected"),
    [
        ("auto", 2, True, "cuda:0"),
        ("auto", 0, True, "mps"),
        ("auto", 0, False, "cpu"),
        ("cpu", 4, True, "cpu"),
        ("cuda", 1, False, "cuda:0"),
        ("cuda:1", 2, False, "cuda:1"),
        ("1", 2, False, "cuda:1"),
        ("MPS", 0, True, "mps"),
    ],
)
def test_choose_device(spec, cuda, mps, expected):
    assert choose_device(spec, cuda_count=cuda, mps_available=mps) == expected


@pytest.mark.parametrize(
    ("spec", "cuda", "mps", "message"),
    [
        ("cuda", 0, False, "no CUDA device"),
        ("cuda:3", 2, False, "only 2 CUDA"),
        ("mps", 0, False, "MPS is not available"),
        ("tpu", 0, False, "expected auto"),
    ],
)
def test_choose_device_errors(spec, cuda, mps, message):
    with pytest.raises(UsageError, match=message):
        choose_device(spec, cuda_count=cuda, mps_available=mps)


def test_env_variable_is_the_default(monkeypatch):
    monkeypatch.setenv("CNNKIT_DEVICE", "mps")
    assert choose_device(None, cuda_count=0, mps_available=True) == "mps"
    assert choose_device("cpu", cuda_count=0, mps_available=True) == "cpu"


def test_resolve_device_uses_torch_availability(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type in ("cpu", "mps")


def test_half_only_on_cuda():
    assert check_half(True, "cuda:0") is True
    assert check_half(False, "cpu") is False
    with pytest.raises(UsageError, match="^half: needs a CUDA device"):
        check_half(True, "cpu")


def test_threads(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(UsageError):
        set_threads(0)


def test_runtime_channels_last_and_dtype():
    import torch

    rt = Runtime.create("cpu")
    model = rt.prepare(torch.nn.Conv2d(3, 4, 3))
    x = rt.batch(torch.zeros(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert x.dtype == torch.float32
    assert model(x).shape == (2, 4, 6, 6)
    with pytest.raises(UsageError):
        Runtime.create("cpu", half=True)
