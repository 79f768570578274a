"""Helpers shared by the visual/export tests: a LeNet-5 family in the registry and checkpoints of it."""

from __future__ import annotations

from pathlib import Path

DIGITS = [str(i) for i in range(10)]


def lenet_family() -> str:
    """The registry family of LeNet-5: the real entry when registered, else a test-only one."""
    from cnnkit.models.preprocess import Preprocess
    from cnnkit.models.registry import ModelSpec, list_models, register

    for spec in list_models():
        if spec.family in ("lenet5", "test_lenet5"):
            return spec.family

    def build(num_classes: int = 10):
        from cnnkit.models.nets import LeNet5

        return LeNet5(num_classes=num_classes)

    register(ModelSpec(
        name="test-lenet5", task="classify", family="test_lenet5", builder=build, source="none",
        labels=tuple(DIGITS), preprocess=Preprocess(resize=32, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3),
    ))
    return "test_lenet5"


def lenet_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A cnnkit checkpoint of a randomly initialised LeNet-5 (32×32 input, ten digit labels)."""
    import torch

    from cnnkit.models.checkpoint import save_checkpoint
    from cnnkit.models.nets import LeNet5
    from cnnkit.models.preprocess import Preprocess

    torch.manual_seed(seed)
    pre = Preprocess(resize=32, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    meta = {"arch": lenet_family(), "task": "classify", "name": "lenet-test", "labels": DIGITS, "preprocess": pre.to_dict()}
    return save_checkpoint(folder / "lenet.safetensors", LeNet5(), meta)


def cli_error(result, code: int) -> str:
    """The message of a failed CLI run, checking its exit ``code``.

    The root group turns a ``CnnkitError`` into ``Error: …`` and its exit code; where it
    does not (yet), CliRunner hands back the raised error, which carries the same code.
    """
    from cnnkit.errors import CnnkitError

    if isinstance(result.exception, CnnkitError):
        assert result.exception.exit_code == code, result.exception
        return str(result.exception)
    assert result.exit_code == code, result.output
    return result.output
