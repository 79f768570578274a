"""The bad-input corpus through every predictor, interrupted batches, and fuzzing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.errors import DecodeError
from cnnkit.io.decode import decode
from cnnkit.io.sources import expand_sources
from cnnkit.records import validate_record
from cnnkit.tasks import TASK_NAMES
from tests.conftest import REPO
from tests.corpus.make_corpus import build

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    expected = build(folder)
    yield folder, expected
    os.chmod(folder / "unreadable.jpg", 0o644)


def test_corpus_is_big_enough(corpus):
    _, expected = corpus
    assert len(expected) >= 25
    assert sum(v == "fail" for v in expected.values()) >= 10


@pytest.mark.parametrize("task", TASK_NAMES)
def test_corpus_through_every_predictor(corpus, task):
    folder, expected = corpus
    paths = [str(folder / name) for name in sorted(expected)]
    result = runner.invoke(app, [task, *paths, "--format", "jsonl", "--batch-size", "4"])
    assert result.exit_code == 1, result.output  # something failed, and the exit code says so
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == paths  # every input answered, in order
    for rec in records:
        validate_record(rec)
        name = os.path.basename(rec["path"])
        want = expected[name]
        if want == "ok":
            assert rec["error"] is None, (name, rec["error"])
        else:
            assert rec["error"] and "\n" not in rec["error"], name
    for name, want in expected.items():
        if want == "fail":
            assert name in result.stderr or os.fsencode(name).decode("utf-8", "replace") in result.stderr


def test_exif_record_reports_display_size(corpus):
    folder, _ = corpus
    rec = json.loads(runner.invoke(app, ["classify", str(folder / "exif_rotated.jpg"), "-f", "jsonl"]).stdout)
    assert (rec["width"], rec["height"]) == (40, 80)


def test_non_utf8_name_survives_json(corpus):
    folder, _ = corpus
    name = os.fsdecode(b"caf\xe9-latin1.png")
    result = runner.invoke(app, ["classify", str(folder / name), "-f", "jsonl"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["path"] == str(folder / name)


N_SLOW = 2000


def _slow_folder(tmp_path) -> Path:
    """Enough work (2,000 hard links to one 512 px noise PNG) that a run cannot end before the signal."""
    folder = tmp_path / "many"
    folder.mkdir()
    first = folder / "0000.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(first)
    for i in range(1, N_SLOW):
        os.link(first, folder / f"{i:04d}.png")
    return folder


def test_sigint_leaves_complete_jsonl(tmp_path):
    folder = _slow_folder(tmp_path)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "classify", str(folder), "-o", str(out), "-b", "4"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # a shell's background job (`cmd &`) starts with SIGINT ignored, and children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.stat().st_size < 2000):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    lines = out.read_text().splitlines()
    assert 0 < len(lines) < N_SLOW
    for line in lines:
        validate_record(json.loads(line))
    assert b"interrupted" in err


def test_sigterm_is_handled_like_sigint(tmp_path):
    folder = _slow_folder(tmp_path)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "classify", str(folder), "-o", str(out), "-b", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.stat().st_size < 1000):
        time.sleep(0.05)
    proc.terminate()
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = out.read_text().splitlines()
    assert 0 < len(lines) < N_SLOW
    assert all(json.loads(line)["task"] == "classify" for line in lines)


# ---- fuzzing -----------------------------------------------------------------------------------

SEED_IMAGES = [
    b"\x89PNG\r\n\x1a\n",
    Image.new("RGB", (8, 8)).tobytes(),
]


def _valid(fmt: str) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


VALID = {fmt: _valid(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}


@st.composite
def mutated_images(draw):
    data = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(mutated_images(), st.binary(max_size=512)))
def test_fuzz_decoder(tmp_path, data):
    path = tmp_path / "fuzz.img"
    path.write_bytes(data)
    outcomes = []
    for _ in range(2):
        try:
            d = decode(str(path), max_pixels=4_000_000, min_side=8)
            assert d.rgb.dtype == np.uint8 and d.rgb.ndim == 3 and d.rgb.shape[2] == 3
            outcomes.append(("ok", d.rgb.tobytes()))
        except DecodeError as exc:
            assert "\n" not in str(exc) and str(exc)
            outcomes.append(("fail", str(exc)))
    assert outcomes[0] == outcomes[1]


NAME = st.text(
    alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=12
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(NAME, max_size=8),
    pattern=st.sampled_from(["*", "*.png", "**/*.jpg", "[a-z]*", "?", "-"]),
    recursive=st.booleans(),
)
def test_fuzz_sources(tmp_path_factory, names, pattern, recursive):
    import io

    root = tmp_path_factory.mktemp("src")
    for name in names:
        if name in (".", ".."):
            continue
        try:
            (root / (name + ".png")).write_bytes(b"x")
        except OSError:
            pass
    args = [str(root), str(root / pattern) if pattern != "-" else "-"]
    stdin = io.StringIO("\n".join(str(root / n) for n in names))
    first = expand_sources(args, recursive=recursive, stdin=stdin)
    stdin.seek(0)
    second = expand_sources(args, recursive=recursive, stdin=stdin)
    assert [i.path for i in first] == [i.path for i in second]
    assert len({i.path for i in first}) == len(first)


OPTION_VALUES = st.one_of(
    st.text(max_size=6), st.integers(-3, 40).map(str), st.sampled_from(["1/2", "0/0", "cpu", "json", "-1"])
)


@settings(max_examples=40, deadline=None)
@given(
    opts=st.lists(
        st.tuples(
            st.sampled_from(
                ["--topk", "--shard", "--format", "--device", "--batch-size", "--workers", "--max-pixels", "--threads"]
            ),
            OPTION_VALUES,
        ),
        max_size=3,
    )
)
def test_fuzz_cli_options(opts):
    path = str(REPO / "samples" / "shape_0_triangle.png")
    args = ["classify", path] + [x for pair in opts for x in pair]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1, 2), (args, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))


def test_importing_ultralytics_leaves_pil_open_alone(tmp_path):
    """ultralytics patches PIL.Image.open (HEIF auto-install); cnnkit's adapter undoes it."""
    from PIL import Image

    from cnnkit.ultralytics_adapter import ultralytics

    before = Image.open
    ultralytics()
    assert Image.open is before
    path = tmp_path / "junk.jpg"
    path.write_bytes(b"\x00")
    with pytest.raises(DecodeError, match="not a recognised image format"):
        decode(str(path))


def test_closed_pipe_stops_quietly(tmp_path):
    """`cnnkit classify … | head -1`: exit 141 like a SIGPIPE'd tool, no traceback.

    300 records (~100 KB) overflow the pipe buffer, so the writer must meet the closed pipe."""
    for i in range(300):
        Image.new("RGB", (16, 16), (i % 256, 0, 0)).save(tmp_path / f"{i:03d}.png")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "classify", str(tmp_path), "-f", "jsonl"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert json.loads(first)["task"] == "classify"
    assert proc.returncode == 141, err.decode()
    assert b"Traceback" not in err


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_whole_document_to_a_closed_pipe_stops_quietly_too(fmt, tmp_path):
    """CSV and JSON reach stdout in one piece at the end; a reader already gone gave exit 1 with no line."""
    import os

    Image.new("RGB", (16, 16), (9, 0, 0)).save(tmp_path / "a.png")
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cnnkit", "classify", str(tmp_path), "-f", fmt, "--backend", "torch"],
            cwd=REPO,
            stdout=write,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    finally:
        os.close(write)
    assert proc.returncode == 141, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
