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


def test_sigterm_anywhere_cleans_up_and_exits_130(tmp_path):
    """SIGTERM outside the record loop (here: writing a video of `data shapes --video`) was the default action:
    exit 143, nothing said, the half-written temp file left beside the outputs. It is Ctrl-C for every command."""
    out = tmp_path / "videos"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "data", "shapes", str(out), "--video", "--n", "3", "--frames", "2000"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".*.tmp*")):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"interrupted" in err
    assert not [p.name for p in out.rglob("*") if ".tmp" in p.name]
    assert not (out / "summary.json").exists()


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


def test_stdout_gets_all_of_a_document_despite_short_writes(tmp_path, monkeypatch):
    """With PYTHONUNBUFFERED=1 a full disk's short write was dropped by Python's text layer (a cut JSON, exit 0):
    every byte is written or an OSError is raised."""
    from cnnkit.io import writers

    real = os.write
    monkeypatch.setattr(writers.os, "write", lambda fd, data: real(fd, bytes(data[:5])))  # 5 bytes at a time
    text = json.dumps([{"path": f"{i}.png", "label": "ünï"} for i in range(50)])
    with open(tmp_path / "out.json", "w", encoding="utf-8") as stream:
        writers.write_text(stream, text)
    assert json.loads((tmp_path / "out.json").read_text(encoding="utf-8")) == json.loads(text)

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers.os, "write", full)
    with open(tmp_path / "full.json", "w") as stream, pytest.raises(OSError, match="No space left"):
        writers.write_text(stream, text)


def test_a_full_disk_while_saving_a_video_or_a_checkpoint_is_one_line(tmp_path, monkeypatch):
    """Both were tracebacks (PyAV's OSError, safetensors' own error type); a checkpoint is made with the
    umask's mode, not safetensors' 0600."""
    import torch

    from cnnkit.errors import CnnkitError
    from cnnkit.io.video import VideoWriter
    from cnnkit.models import checkpoint

    writer = VideoWriter(tmp_path / "v.mp4", 10.0, 32, 32)

    class Full:  # the container on a disk that is full (PyAV's own attributes cannot be patched)
        def __init__(self, real):
            self.real = real

        def mux(self, packet):
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.real, name)

    writer._container = Full(writer._container)
    with pytest.raises(CnnkitError, match=r"v.mp4: cannot write \(No space left on device\)"):
        for _ in range(40):  # the encoder hands out its first packet after a few frames
            writer.write(np.zeros((32, 32, 3), np.uint8))
    assert not list(tmp_path.glob(".v.mp4.*"))

    model = torch.nn.Linear(2, 2)
    saved = checkpoint.save_checkpoint(tmp_path / "ok.safetensors", model, {"task": "classify"})
    mask = os.umask(0)
    os.umask(mask)
    assert saved.stat().st_mode & 0o777 == 0o666 & ~mask

    def no_space(*args, **kwargs):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("safetensors.torch.save_file", no_space)
    with pytest.raises(CnnkitError, match="best.safetensors: cannot write .*No space left"):
        checkpoint.save_checkpoint(tmp_path / "best.safetensors", model, {"task": "classify"})
    assert not (tmp_path / "best.safetensors").exists() and not list(tmp_path.glob(".best.*"))


def test_a_fifo_named_like_a_video_is_a_failed_input_not_a_hang(tmp_path):
    """FFmpeg's read of a FIFO blocks until something writes to it: the whole batch waited."""
    os.mkfifo(tmp_path / "clip.mp4")
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    proc = subprocess.run(
        [sys.executable, "-m", "cnnkit", "classify", str(tmp_path), "-f", "jsonl", "--backend", "torch"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    records = {Path(json.loads(line)["path"]).name: json.loads(line)["error"] for line in proc.stdout.splitlines()}
    assert proc.returncode == 1 and records["a.png"] is None and "not a regular file" in records["clip.mp4"]


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_run(tmp_path, monkeypatch):
    """A read-only folder was found after every input was done (all the results lost)."""
    from cnnkit.io import writers

    folder = tmp_path / "ro"
    folder.mkdir()
    real = os.access
    shut = {folder, Path("/dev")}  # /dev: what a user who is not root finds
    monkeypatch.setattr(writers.os, "access", lambda p, mode: False if Path(p) in shut else real(p, mode))
    with pytest.raises(Exception, match="cannot write into .*ro \\(read-only, or no permission\\)"):
        writers.check_output(str(folder / "out.json"), "json")
    writers.check_output("/dev/null", "json")  # a device is written through, whatever its folder allows


def test_a_compile_that_fails_for_the_disk_is_not_remembered():
    """A full cache disk on the first run disabled the compiled runtime for good (remembered as the model's)."""
    from cnnkit.runtimes import _passing

    full = RuntimeError("shapes-cnn: ONNX export failed")
    full.__cause__ = OSError(28, "No space left on device")
    assert _passing(full) and _passing(OSError(30, "Read-only file system"))
    assert not _passing(RuntimeError("shapes-cnn: exported output differs from PyTorch by 0.3"))


def test_a_parquet_output_that_fails_to_flush_leaves_no_temporary_file(tmp_path, monkeypatch):
    """A full disk arrives from the flush as cnnkit's own error: the temp file (a disk's worth) stayed."""
    from cnnkit.errors import CnnkitError
    from cnnkit.io.parquet import ParquetWriter

    writer = ParquetWriter(tmp_path / "out.parquet")
    writer.write({"path": "a.png", "task": "classify", "predictions": [], "error": None})

    def full() -> None:
        raise CnnkitError(f"{tmp_path / 'out.parquet'}: write failed (No space left on device)")

    monkeypatch.setattr(writer, "_flush", full)
    with pytest.raises(CnnkitError, match="No space left"):
        writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_fifo_or_device_named_by_a_file_url_is_refused_not_read(tmp_path):
    """`file:///x/pipe.jpg` went straight to fsspec: the run waited on the FIFO for ever (deaf to SIGTERM in
    that open), and `file:///dev/zero` was read to 1 GiB before it was refused. As by their names, refused."""
    import threading

    from cnnkit.errors import DecodeError
    from cnnkit.io.decode import decode
    from cnnkit.io.video import read_frames

    os.mkfifo(tmp_path / "pipe.jpg")
    os.mkfifo(tmp_path / "pipe.mp4")
    outcome: dict[str, str] = {}

    def attempt() -> None:  # in a thread: the old code blocks in open() and the test must still end
        with pytest.raises(DecodeError, match="not a regular file") as image:
            decode(f"file://{tmp_path}/pipe.jpg")
        outcome["image"] = str(image.value)
        (video,) = list(read_frames(f"file://{tmp_path}/pipe.mp4"))
        outcome["video"] = str(video.error)
        with pytest.raises(DecodeError, match="not a regular file"):
            decode("file:///dev/zero")
        outcome["device"] = "refused"

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "blocked on a FIFO"
    assert "not a regular file" in outcome["video"] and outcome["device"] == "refused", outcome
