"""A torchvision R-CNN loaded from its (cached) COCO weights is the network torchvision builds for them: frozen
BatchNorm in the backbone body (eps 0 for the first ResNet-50 FPN weights), the first stages not trainable."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _random_coco_state(arch: str) -> dict[str, torch.Tensor]:
    """A stand-in for the COCO weights (no download here): seeded, with small BatchNorm variances, where eps
    matters, as in real weights."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=91)
    state = net.state_dict()
    for key in [k for k in state if k.endswith("running_var")]:
        state[key] = torch.rand_like(state[key]) * 1e-3 + 1e-4
        state[key.replace("running_var", "weight")] = state[key].sqrt()  # each layer keeps its scale: no overflow
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _torchvision_built(arch: str, enum: str, state: dict, monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """torchvision's own pretrained build, its download replaced by ``state``."""
    import torchvision
    from torchvision.models import get_weight

    weights = get_weight(enum)
    monkeypatch.setattr(type(weights), "get_state_dict", lambda self, *a, **k: state)
    return torchvision.models.get_model(arch, weights=weights).eval()


def _cached_mobilenet_rcnn(tmp_path, monkeypatch) -> tuple[str, str, dict]:
    """The small Faster R-CNN's stand-in COCO weights, in torch hub's cache under torchvision's file name."""
    from cnnkit.models.hub import torchvision_cache_file, torchvision_weights

    arch, enum = "fasterrcnn_mobilenet_v3_large_320_fpn", "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    state = _random_coco_state(arch)
    cached = torchvision_cache_file(torchvision_weights(enum))
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    return arch, enum, state


def test_cached_faster_rcnn_gives_torchvisions_boxes(tmp_path, monkeypatch):
    from cnnkit.models.loader import resolve

    arch, enum, state = _cached_mobilenet_rcnn(tmp_path, monkeypatch)
    ours = resolve("detect", arch, None, backend="torch").module.eval()
    theirs = _torchvision_built(arch, enum, state, monkeypatch)
    grads = [(n, p.requires_grad) for n, p in ours.named_parameters()]
    assert grads == [(n, p.requires_grad) for n, p in theirs.named_parameters()]
    assert not all(g for _, g in grads)  # the first backbone stages are not trained
    image = torch.from_numpy(np.random.default_rng(1).random((1, 3, 320, 320), dtype=np.float32))
    with torch.inference_mode():
        a, b = ours.backbone(image), theirs.backbone(image)
    for key in b:  # every FPN level: the same numbers, so the same proposals and boxes
        scale = float(b[key].abs().max())
        assert scale > 0 and float((a[key] - b[key]).abs().max()) <= 1e-4 * scale, key


def test_the_first_resnet50_fpn_weights_get_eps_zero_and_frozen_stages():
    import torchvision
    from torchvision.ops.misc import FrozenBatchNorm2d

    from cnnkit.models.entries import as_pretrained_rcnn

    net = torchvision.models.get_model("maskrcnn_resnet50_fpn", weights=None, weights_backbone=None, num_classes=91)
    as_pretrained_rcnn(net, "maskrcnn_resnet50_fpn")
    frozen = [m for m in net.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and all(m.eps == 0.0 for m in frozen)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.backbone.body.modules())
    assert not net.backbone.body.conv1.weight.requires_grad and not any(
        p.requires_grad for p in net.backbone.body.layer1.parameters()
    )
    assert all(p.requires_grad for p in net.backbone.body.layer2.parameters())


def test_the_same_file_named_as_weights_builds_the_same_network(tmp_path, monkeypatch):
    """torchvision's own R-CNN file given as `weights` got plain BatchNorm (eps 1e-5, trainable), not the
    frozen BatchNorm it gets from the cache: 10 of 100 Mask R-CNN detections changed."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    from cnnkit.models.loader import resolve

    arch, enum, state = _cached_mobilenet_rcnn(tmp_path, monkeypatch)
    named = tmp_path / "mine.pth"
    torch.save(state, named)
    from_cache = resolve("detect", arch, None, backend="torch").module.eval()
    from_file = resolve("detect", arch, str(named), backend="torch").module.eval()
    assert any(isinstance(m, FrozenBatchNorm2d) for m in from_file.backbone.body.modules())
    assert [(n, p.requires_grad) for n, p in from_file.named_parameters()] == [
        (n, p.requires_grad) for n, p in from_cache.named_parameters()
    ]
    image = torch.from_numpy(np.random.default_rng(1).random((1, 3, 320, 320), dtype=np.float32))
    with torch.inference_mode():
        a, b = from_file.backbone(image), from_cache.backbone(image)
    assert all(torch.equal(a[key], b[key]) for key in b)
