"""``cnnkit summary``: parameter counts from the chapter and receptive fields worked by hand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.errors import UsageError
from cnnkit.models.registry import list_models
from cnnkit.viz.summary import summarize, summarize_target
from tests.conftest import REPO
from tests.fixtures.visual import cli_error, lenet_checkpoint

runner = CliRunner()


def _meta(build):
    with torch.device("meta"):
        return build()


def test_lenet5_has_about_60k_parameters():
    from cnnkit.models.nets import LeNet5

    s = summarize(_meta(LeNet5), (1, 3, 32, 32))
    assert s.params == sum(p.numel() for p in LeNet5().parameters())
    assert abs(s.params - 60_000) / 60_000 < 0.05  # the chapter: "LeNet-5 … 60K params"
    assert [r.output for r in s.layers if r.type == "AvgPool2d"] == [[6, 14, 14], [16, 5, 5]]


@pytest.mark.parametrize("name, chapter", [("vgg16", 138e6), ("resnet50", 25.6e6), ("efficientnet_b0", 5.3e6)])
def test_chapter_parameter_counts_and_torchvision_ops(name, chapter):
    from cnnkit.models import hub
    from cnnkit.models.registry import get_spec

    s = summarize_target(name)
    assert s.device == "meta"
    assert abs(s.params - chapter) / chapter < 0.01
    # torchvision's weights metadata quotes GFLOPS counted as multiply-adds of conv and linear layers.
    gmacs = hub.torchvision_weights(get_spec(name).weights).meta["_ops"]
    assert s.macs / 1e9 == pytest.approx(gmacs, rel=0.01)
    assert s.params == sum(r.params for r in s.layers)


def test_two_stacked_3x3_convs_see_5x5():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    s = summarize(net, (1, 1, 16, 16), device="cpu")
    assert [r.rf for r in s.layers] == [[3, 3], [3, 3], [5, 5]]
    assert s.rf == [5, 5] and s.jump == [1, 1]


def _chapter_classic_cnn() -> nn.Sequential:
    """The chapter's "Classic CNN architecture": (conv 3×3, conv 3×3, pool 2×2) × 3, flatten, dense."""
    layers: list[nn.Module] = []
    cin = 3
    for cout in (64, 128, 256):
        layers += [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        cin = cout
    layers += [
        nn.Flatten(),
        nn.Linear(28 * 28 * 256, 4096),
        nn.ReLU(),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Linear(4096, 1000),
    ]
    return nn.Sequential(*layers)


def test_chapter_vgg_stack_by_hand():
    s = summarize(_meta(_chapter_classic_cnn), (1, 3, 224, 224))
    spatial = [r for r in s.layers if r.type in ("Conv2d", "MaxPool2d")]
    # By hand: conv 3×3 adds 2·jump, pool 2×2 adds 1·jump and doubles the jump.
    # conv1 1+2=3, conv2 3+2=5, pool 5+1=6 (j 2), conv3 6+4=10, conv4 14, pool 16 (j 4),
    # conv5 16+8=24, conv6 32, pool 36 (j 8).
    assert [r.rf[0] for r in spatial] == [3, 5, 6, 10, 14, 16, 24, 32, 36]
    assert [r.jump[0] for r in spatial] == [1, 1, 2, 2, 2, 4, 4, 4, 8]
    pools = [r.output for r in s.layers if r.type == "MaxPool2d"]
    assert pools == [[64, 112, 112], [128, 56, 56], [256, 28, 28]]  # the chapter's shapes
    assert next(r.output for r in s.layers if r.type == "Flatten") == [200_704]
    assert s.layers[1].params == 0 and s.layers[0].params == 64 * 3 * 9 + 64  # "64 filters × 3×3×3 = 1,728" + bias


def test_strides_dilation_and_residuals_follow_the_main_path():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(4, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
            self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 4, 1), nn.Sigmoid())

        def forward(self, x):
            y = self.b(self.a(x))
            return (y * self.gate(y)) + x  # SE gate and identity shortcut: neither is the main path

    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), Block(), nn.Upsample(scale_factor=2))
    s = summarize(net, (1, 3, 32, 32), device="cpu")
    by_name = {r.name: r for r in s.layers}
    assert by_name["0"].rf == [3, 3] and by_name["0"].jump == [2, 2]
    assert by_name["1.a"].rf == [7, 7]  # 3 + 2·2
    assert by_name["1.b"].rf == [15, 15]  # 7 + (3-1)·2·2
    assert by_name["1.gate.0"].rf == [15 + 15 * 2, 15 + 15 * 2]  # global pool over 16 cells: 15 + (16-1)·2
    assert by_name["2"].rf == [15, 15] and by_name["2"].jump == [
        1,
        1,
    ]  # the sum kept the conv path; upsampling halves j


def test_checkpoint_summary_through_the_cli(tmp_path):
    ckpt = lenet_checkpoint(tmp_path)
    result = runner.invoke(app, ["summary", str(ckpt), "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    from cnnkit.models.nets import LeNet5

    assert data["input"] == [1, 3, 32, 32]
    assert data["params"] == sum(p.numel() for p in LeNet5().parameters())
    assert data["model"] == "lenet-test"
    assert data["layers"][0]["rf"] == [5, 5]


def test_summary_table_and_imgsz():
    result = runner.invoke(
        app,
        ["summary", "shapes-cnn", "--imgsz", "32", "--format", "table"],
        env={"COLUMNS": "160"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "features.0.0" in result.stdout and "receptive field" in result.stdout
    assert "3×32×32" in result.stdout


def test_fixed_size_models_refuse_other_sizes():
    with pytest.raises(UsageError, match="32x32 inputs only"):
        summarize_target("lenet5", imgsz=64)


def test_summary_errors():
    assert "no-such-net" in cli_error(runner.invoke(app, ["summary", "no-such-net"]), 2)
    assert "xml" in cli_error(runner.invoke(app, ["summary", "shapes-cnn", "--format", "xml"]), 2)
    assert "safetensors" in cli_error(runner.invoke(app, ["summary", str(REPO / "samples" / "bus.jpg")]), 2)


@pytest.mark.parametrize("spec", list_models(), ids=lambda s: s.name)
def test_every_registry_model_summarises(spec):
    s = summarize_target(spec.name, imgsz=None if spec.meta.get("fixed_size") else 64)
    assert s.layers and s.params > 0 and s.macs > 0
    assert s.rf is not None and s.rf[0] >= 3


def test_summary_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "cnnkit", "summary", "shapes-cnn", "-f", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["params"] == sum(r["params"] for r in data["layers"])


def test_an_input_size_the_model_cannot_take(tmp_path):
    ckpt = lenet_checkpoint(tmp_path)
    assert "48" in cli_error(runner.invoke(app, ["summary", str(ckpt), "--imgsz", "48"]), 2)


def test_meta_build_leaves_library_constants_real(tmp_path, monkeypatch):
    """A library first imported by the builder keeps real module-level tensors (ultralytics has such)."""
    from cnnkit.models.meta_device import build_on_meta

    (tmp_path / "lib_with_constants.py").write_text(
        "import torch\nANCHORS = torch.zeros(2)\n"
        "def build():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    def builder():
        import lib_with_constants

        return lib_with_constants.build()

    model = build_on_meta(builder)
    import lib_with_constants

    assert lib_with_constants.ANCHORS.device.type == "cpu"
    assert {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()} == {"meta"}
    assert isinstance(model[0].weight, torch.nn.Parameter) and model[0].weight.requires_grad
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"  # the patch is gone afterwards


def test_meta_build_of_a_constructor_that_runs_its_network():
    from cnnkit.models.meta_device import build_on_meta

    class SelfMeasuring(nn.Module):  # as ultralytics' DetectionModel measures its strides
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2)
            self.stride = 8 // self.conv(torch.zeros(1, 3, 8, 8)).shape[-1]

    model = build_on_meta(SelfMeasuring)
    assert model.stride == 2 and model.conv.weight.device.type == "meta"
    assert sum(p.numel() for p in model.parameters()) == 4 * 3 * 9 + 4


def test_attention_is_counted_and_a_dense_layer_over_a_flattened_map_sees_all_of_it():
    """ViT's attention was no row (nn.MultiheadAttention is not a leaf, and it multiplies by its projection
    weights instead of calling out_proj): mult-adds 11.27 G where torchvision says 17.56 G, and a third of the
    parameters in no row. A conv 3×3 → flatten → linear head reported a final field of 3 px, though each output
    reads every pixel (LeNet-5: 16 of 32)."""
    from cnnkit.models import hub
    from cnnkit.models.registry import get_spec

    vit = summarize_target("vit_b_16")
    assert vit.macs / 1e9 == pytest.approx(hub.torchvision_weights(get_spec("vit_b_16").weights).meta["_ops"], rel=0.01)
    attention = [r for r in vit.layers if r.type == "MultiheadAttention"]
    assert len(attention) == 12 and all(r.params == 4 * 768 * 768 + 4 * 768 for r in attention)
    assert vit.rf == [224, 224]  # attention mixes every patch
    head = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 4))
    s = summarize(head, (1, 1, 8, 8), device="cpu")
    assert [r.rf for r in s.layers] == [[3, 3], [8, 8], [8, 8]] and s.rf == [8, 8]
    assert summarize_target("lenet5").rf == [32, 32]


def test_attention_counts_its_tokens_whatever_its_batch_layout():
    """An unbatched (L, E) input was read as E tokens: the count of an attention layer depends on its tokens."""

    class SelfAttention(nn.Module):
        def __init__(self, batch_first: bool) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)

        def forward(self, x):
            return self.attn(x, x, x)[0]

    tokens, e = 5, 8
    want = tokens * 4 * e * e + 2 * tokens * tokens * e
    for batch_first, shape in ((True, (1, tokens, e)), (False, (tokens, 1, e)), (False, (tokens, e))):
        assert summarize(SelfAttention(batch_first), shape, device="cpu").macs == want, (batch_first, shape)
