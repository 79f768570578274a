"""``cnnkit conv``: the chapter's edge kernel and max-pooling examples, and the output-size formula."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.viz.conv import KERNELS, convolve, output_size, read_matrix
from tests.conftest import REPO
from tests.fixtures.visual import cli_error

runner = CliRunner()
EDGE = np.array(KERNELS["edge"], dtype=float)
POOL_INPUT = "[1, 3, 2, 4]\n[5, 6, 1, 8]\n[3, 2, 7, 1]\n[9, 4, 8, 3]\n"  # as printed in the chapter


def test_edge_kernel_is_the_chapters():
    assert KERNELS["edge"] == [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]


def test_edge_kernel_by_hand():
    x = np.array([[1, 2, 3, 0], [4, 5, 6, 1], [7, 8, 9, 2], [0, 1, 2, 3]], dtype=float)
    # centre·8 minus the eight neighbours, at each of the 2×2 valid positions:
    # (1,1): 8·5 − (1+2+3+4+6+7+8+9) = 0     (1,2): 8·6 − (2+3+0+5+1+8+9+2) = 18
    # (2,1): 8·8 − (4+5+6+7+9+0+1+2) = 30    (2,2): 8·9 − (5+6+1+8+2+1+2+3) = 44
    r = convolve(x, EDGE)
    np.testing.assert_allclose(r.conv, [[0, 18], [30, 44]])


def test_edge_kernel_smooth_region_and_zero_padding():
    # A flat patch gives 0 ("smooth region, no edge"); with padding 1 the zeros outside make
    # the border an edge: corner 8 − 3 neighbours = 5, side 8 − 5 = 3, inside 8 − 8 = 0.
    r = convolve(np.ones((4, 4)), EDGE, padding=1)
    np.testing.assert_allclose(r.conv, [[5, 3, 3, 5], [3, 0, 0, 3], [3, 0, 0, 3], [5, 3, 3, 5]])


def test_chapter_max_pooling():
    x = np.array([[1, 3, 2, 4], [5, 6, 1, 8], [3, 2, 7, 1], [9, 4, 8, 3]], dtype=float)
    r = convolve(x, np.array([[1.0]]), pool=2)
    np.testing.assert_array_equal(r.pooled, [[6, 8], [9, 8]])


@pytest.mark.parametrize("n, k, s, p", [(224, 3, 1, 1), (224, 3, 2, 1), (32, 5, 1, 0), (7, 3, 2, 0), (9, 4, 3, 2)])
def test_output_size_formula_matches_torch(n, k, s, p):
    import torch

    out = torch.nn.functional.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p)
    assert output_size(n, k, s, p) == out.shape[-1]
    assert output_size(224, 3, 1, 1) == 224 and output_size(224, 3, 2, 1) == 112  # "same", then halved


def test_cli_pooling_matrix_from_text(tmp_path):
    grid = tmp_path / "grid.txt"
    grid.write_text(POOL_INPUT)
    result = runner.invoke(
        app, ["conv", str(grid), "--kernel", "identity", "--pool", "2", "--format", "json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["output"] == [[6, 8], [9, 8]] and data["output_size"] == [2, 2] and data["saved"] is None


def test_cli_prints_the_size_formula(tmp_path):
    grid = tmp_path / "m.csv"
    grid.write_text("\n".join(",".join(str(v) for v in row) for row in np.arange(49).reshape(7, 7)))
    result = runner.invoke(
        app,
        ["conv", str(grid), "--kernel", "sobel-x", "--stride", "2", "--padding", "1", "--format", "table"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "⌊(7 + 2·1 − 3) / 2⌋ + 1 = 4 → 4×4" in result.stdout
    # a horizontal ramp (+1 per column): Sobel-x answers 8 inside, and the zero padding shows at the edges
    rows = [line.split() for line in result.stdout.splitlines()[result.stdout.splitlines().index("output:") + 1 :]]
    assert [float(v) for v in rows[1][1:3]] == [8.0, 8.0]


def test_cli_image_writes_picture_numbers_reruns_and_refuses_overwrite(tmp_path, rgb_image, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["conv", str(rgb_image), "--kernel", "blur", "--pool", "2", "--format", "json"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    saved = tmp_path / json.loads(result.stdout)["saved"]
    assert saved.name == "rgb-blur-pool2.png"
    assert Image.open(saved).size == (31, 23)  # 64×48 → conv 3×3 → 62×46 → pool 2 → 31×23
    first = saved.read_bytes()
    rerun = runner.invoke(app, args, catch_exceptions=False)  # a default name that is taken: the next number
    assert rerun.exit_code == 0, rerun.output
    assert Path(json.loads(rerun.stdout)["saved"]).name == "rgb-blur-pool2-2.png"
    assert saved.read_bytes() == first
    named = [*args, "-o", str(saved)]  # a name the user chose is never replaced without --exist-ok
    assert "already exists" in cli_error(runner.invoke(app, named), 1)
    assert runner.invoke(app, [*named, "--exist-ok"]).exit_code == 0


def test_cli_kernel_file_rgb_and_matrix_outputs(tmp_path, rgb_image):
    kfile = tmp_path / "k.txt"
    kfile.write_text("0 0 0\n0 2 0\n0 0 0\n")
    out = tmp_path / "doubled.npy"
    result = runner.invoke(
        app,
        ["conv", str(rgb_image), "--kernel", str(kfile), "--rgb", "--output", str(out), "-f", "json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    arr = np.load(out)
    rgb = np.asarray(Image.open(rgb_image).convert("RGB"), dtype=float) / 255
    np.testing.assert_allclose(arr, 2 * rgb[1:-1, 1:-1], atol=1e-9)
    txt = tmp_path / "edge.txt"
    grid = tmp_path / "g.txt"
    grid.write_text(POOL_INPUT)
    assert runner.invoke(app, ["conv", str(grid), "--output", str(txt), "-f", "json"]).exit_code == 0
    np.testing.assert_allclose(read_matrix(txt), convolve(read_matrix(grid), EDGE).conv)


def test_cli_errors(tmp_path, rgb_image):
    grid = tmp_path / "g.txt"
    grid.write_text("1 2\n3 4\n")
    assert "does not fit" in cli_error(runner.invoke(app, ["conv", str(grid), "--kernel", "edge"]), 2)
    assert "sobel" in cli_error(runner.invoke(app, ["conv", str(grid), "-k", "laplace"]), 2)
    (tmp_path / "bad.txt").write_text("1 2\n3\n")
    assert "not a matrix" in cli_error(runner.invoke(app, ["conv", str(tmp_path / "bad.txt")]), 1)
    out = tmp_path / "x.gif"
    assert "expected .png" in cli_error(runner.invoke(app, ["conv", str(rgb_image), "--output", str(out)]), 2)
    assert not out.exists()


def test_conv_subprocess(tmp_path):
    grid = tmp_path / "grid.txt"
    grid.write_text(POOL_INPUT)
    proc = subprocess.run(
        [sys.executable, "-m", "cnnkit", "conv", str(grid), "-k", "identity", "--pool", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["output"] == [[6, 8], [9, 8]]


def test_nan_or_inf_in_a_matrix_or_kernel_is_refused(tmp_path):
    """NaN or inf would spread through the output and print invalid JSON; a bad kernel file is a bad option."""
    (tmp_path / "m.txt").write_text("1 nan\n2 3\n")
    (tmp_path / "k.txt").write_text("1 0\n0 inf\n")
    image = tmp_path / "a.png"
    Image.new("L", (8, 8), 128).save(image)
    runner = CliRunner()
    result = runner.invoke(app, ["conv", str(tmp_path / "m.txt")])
    assert result.exit_code == 1 and "holds NaN or infinity" in result.output
    result = runner.invoke(app, ["conv", str(image), "--kernel", str(tmp_path / "k.txt")])
    assert result.exit_code == 2 and "--kernel" in result.output and "holds NaN or infinity" in result.output


def test_matrices_read_and_written_exactly_as_given(tmp_path):
    """Found probing `conv`: an empty CSV cell (`1,,2,3`) was dropped, shifting the row left; a `.npy` of text
    was a ValueError traceback and one of complex numbers lost its imaginary part with only a warning; and a
    finite 1e305 came out as JSON's non-standard `Infinity` (rounding multiplied it by 1e4)."""
    from cnnkit.errors import CnnkitError

    holes = tmp_path / "holes.csv"
    holes.write_text("1,,2,3\n4,5,6\n7,8,9\n")
    with pytest.raises(CnnkitError, match="line 1 has an empty cell"):
        read_matrix(holes)
    listed = tmp_path / "listed.txt"
    listed.write_text("[[1, 2, 3],\n [4, 5 6],  # a comment\n\n [7; 8; 9]]\n")
    assert read_matrix(listed).tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    for name, values in (("text.npy", np.array([["a", "b"], ["c", "d"]])), ("complex.npy", np.ones((2, 2)) * 1j)):
        np.save(tmp_path / name, values)
        with pytest.raises(CnnkitError, match="not real numbers"):
            read_matrix(tmp_path / name)
    huge = tmp_path / "huge.txt"
    huge.write_text("1e305 2\n3 4\n")
    result = runner.invoke(app, ["conv", str(huge), "--kernel", "identity", "-f", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["output"] == [[1e305, 2], [3, 4]]
    assert "Infinity" not in result.stdout
    over = tmp_path / "over.txt"
    over.write_text("1e308 1e308 1e308\n" * 3)
    assert "the output overflows" in cli_error(
        runner.invoke(app, ["conv", str(over), "--kernel", "sharpen", "-f", "json"]), 1
    )
