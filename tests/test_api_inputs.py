"""What the Python API takes: the input kinds a caller passes and the option values one gets wrong.

A bad value is an :class:`OptionError` naming the option before a model loads or compiles; an input of a
kind the API takes (bytes, a generator, an open file, 16-bit or boolean arrays) gives the same result as
the same image as a file.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit
from cnnkit.errors import OptionError, UsageError

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SCENE = SAMPLES / "scene_0.png"


def _top(records: list) -> list[tuple[str, float]]:
    return [(p["label"], round(p["score"], 3)) for r in records for p in r.predictions[:1]]


def test_one_bytes_object_or_open_file_is_one_encoded_image() -> None:
    data = SCENE.read_bytes()
    expected = _top(cnnkit.classify(str(SCENE)))
    for source in (data, bytearray(data), io.BytesIO(data)):
        records = cnnkit.classify(source)
        assert len(records) == 1 and records[0].ok and _top(records) == expected


def test_a_generator_of_sources_is_its_items() -> None:
    records = cnnkit.classify(p for p in [str(SCENE), str(SAMPLES / "shape_1_circle.png")])
    assert [Path(r.path).name for r in records] == ["scene_0.png", "shape_1_circle.png"] and all(r.ok for r in records)


def test_a_generator_is_read_only_as_far_as_records_are_taken() -> None:
    pulled = 0

    def camera():  # as a camera loop is, but with an end, so that a reader that lists it first fails, not hangs
        nonlocal pulled
        while pulled < 500:
            pulled += 1
            yield np.full((32, 32, 3), pulled % 255, np.uint8)

    stream = cnnkit.load("classify", backend="torch").stream(camera(), batch_size=2, workers=1)
    first = next(stream)
    stream.close()
    assert first.ok and first.path == "<image 0>" and pulled <= 8


def test_a_pil_image_opened_from_a_file_is_an_in_memory_image(tmp_path: Path) -> None:
    """Its pixels (drawn on, or not turned by EXIF) are what is read, so its record does not claim the file."""
    path = tmp_path / "a.png"
    Image.open(SCENE).save(path)
    with Image.open(path) as picture:
        records = cnnkit.classify(picture, keep_pictures=True)
    assert records[0].path == "<image 0>" and records[0].picture is not None


@pytest.mark.parametrize("sources", [None, {"a": 1}, {str(SCENE)}])
def test_no_input_or_an_unordered_one_is_an_option_error(sources) -> None:
    with pytest.raises(OptionError) as err:
        cnnkit.classify(sources)
    assert "sources" in err.value.options


def test_sixteen_bit_and_boolean_arrays_read_as_pil_reads_them() -> None:
    rgb = np.asarray(Image.open(SCENE).convert("RGB"))
    as_file = cnnkit.detect(str(SCENE))[0].predictions
    wide = cnnkit.detect(rgb.astype(np.uint16) * 257)[0].predictions  # the same levels on 16 bits
    assert [p["label"] for p in wide] == [p["label"] for p in as_file]
    assert np.allclose([p["box"] for p in wide], [p["box"] for p in as_file], atol=1.0)
    mask = rgb[..., 0] > 127
    np.testing.assert_array_equal(
        cnnkit.segment(mask, save_dir=None)[0].result.mask, cnnkit.segment(mask.astype(np.uint8) * 255)[0].result.mask
    )


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"vid_stride": 0}, "vid_stride"),
        ({"start": -1}, "start"),
        ({"max_frames": 0}, "max_frames"),
        ({"shard": "3/2"}, "shard"),
    ],
)
def test_bad_video_and_shard_options_are_refused_at_the_call_before_a_model_loads(monkeypatch, options, name) -> None:
    """With stream=True they were raised only at the first next(), after the model had loaded."""
    monkeypatch.setattr("cnnkit.api.load", lambda *a, **k: pytest.fail("a model loaded before checking"))
    with pytest.raises(UsageError) as err:
        cnnkit.detect("clip.mp4", stream=True, **options)
    assert name in getattr(err.value, "options", ()) or name in str(err.value)


@pytest.mark.parametrize(
    ("task", "options", "name"),
    [
        ("detect", {"imgsz": 100000}, "imgsz"),
        ("detect", {"imgsz": -5}, "imgsz"),
        ("classify", {"imgsz": True}, "imgsz"),
        ("detect", {"conf": "high"}, "conf"),
        ("instance", {"conf": 2}, "conf"),
        ("instance", {"mask_threshold": 5}, "mask_threshold"),
        ("detect", {"max_det": 0}, "max_det"),
        ("classify", {"topk": 0}, "topk"),
        ("classify", {"half": "yes"}, "half"),
        ("classify", {"device": object()}, "device"),
        ("classify", {"batch_size": 0}, "batch_size"),
        ("classify", {"workers": -1}, "workers"),
        ("classify", {"max_pixels": 0}, "max_pixels"),
        ("classify", {"recursive": "no"}, "recursive"),
        ("classify", {"keep_pictures": "no"}, "keep_pictures"),
        ("detect", {"agnostic_nms": "x"}, "agnostic_nms"),
        ("detect", {"save_txt": "false"}, "save_txt"),
        ("classify", {"weights": 3}, "weights"),
        ("classify", {"model": 3}, "model"),
        ("classify", {"save_dir": 5}, "save_dir"),
        ("classify", {"skip": 1}, "skip"),
    ],
)
def test_bad_option_values_name_the_option_before_anything_compiles(monkeypatch, task, options, name) -> None:
    monkeypatch.setenv("CNNKIT_BACKEND", "auto")
    monkeypatch.setattr("cnnkit.runtimes.compile_loaded", lambda *a, **k: pytest.fail("compiled before checking"))
    with pytest.raises(UsageError) as err:  # an OptionError, or detect's own "inference size" line naming `imgsz`
        getattr(cnnkit, task)(str(SCENE), **options)
    assert name in getattr(err.value, "options", ()) or f"`{name}`" in str(err.value)


def test_friendly_spellings_of_options_are_taken() -> None:
    records = cnnkit.detect(str(SCENE), classes="star", device=torch.device("cpu"))
    assert {p["label"] for p in records[0].predictions} == {"star"}
    with pytest.raises(OptionError):
        cnnkit.load("bogus")


def test_in_memory_images_saved_by_two_calls_keep_both_pictures(tmp_path: Path) -> None:
    a = np.asarray(Image.open(SCENE).convert("RGB"))
    b = np.asarray(Image.open(SAMPLES / "scene_1.png").convert("RGB"))
    first = cnnkit.detect(a, save_dir=str(tmp_path))[0].extra["saved"]
    second = cnnkit.detect(b, save_dir=str(tmp_path))[0].extra["saved"]
    assert first != second and Path(first).is_file() and Path(second).is_file()
    assert not np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))


def test_one_predictor_on_a_compiled_runtime_serves_two_threads(monkeypatch) -> None:
    monkeypatch.setenv("CNNKIT_BACKEND", "auto")
    predictor = cnnkit.load("classify")
    errors: list[BaseException] = []
    results: list[list] = []

    def work() -> None:
        try:
            for _ in range(3):
                results.append(_top(predictor([str(SCENE)] * 4)))
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 6 and all(r == results[0] for r in results)


def test_one_yolo_detector_on_pytorch_runs_one_forward_at_a_time_for_many_threads() -> None:
    """ultralytics' head keeps the anchors of the last input shape on itself: two threads' batches of other sizes
    swapped them mid-forward (wrong boxes, or `The size of tensor a (1176) must match …`). Forwards now take
    turns; each is slowed here so that, without the turns, two would overlap."""
    import time

    from cnnkit.data.shapes import scene

    pictures = [scene(3, i, size=(160 + 7 * i, 200 - 5 * i)).image for i in range(4)]
    detector = cnnkit.load("detect", backend="torch", threads=1)
    expected = [[p["box"] for p in r.predictions] for r in detector(pictures)]
    net, inside, most = detector.backend.net, [0], [0]

    def slow(x):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.02)
        try:
            return net(x)
        finally:
            inside[0] -= 1

    detector.backend.net = slow
    errors: list[BaseException] = []
    got: list[list] = []

    def work(order: list[int]) -> None:
        try:
            for _ in range(2):
                records = detector([pictures[i] for i in order], batch_size=2)
                got.append([[p["box"] for p in r.predictions] == expected[i] for i, r in zip(order, records)])
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(order,)) for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and most[0] == 1 and len(got) == 6 and all(all(same) for same in got), (errors, most)


@pytest.mark.parametrize(
    ("options", "name"),
    [({"workers": -1}, "workers"), ({"lr": float("nan")}, "lr"), ({"seed": -1}, "seed"), ({"epochs": "2"}, "epochs")],
)
def test_finetune_option_errors_come_before_the_run_folder(tmp_path: Path, options, name) -> None:
    out = tmp_path / "run"
    with pytest.raises(OptionError) as err:
        cnnkit.finetune(str(tmp_path), task="classify", model="shapes-cnn", out=str(out), **options)
    assert name in err.value.options and not out.exists()


def test_keep_pictures_gives_an_in_memory_image_its_pixels():
    import numpy as np

    import cnnkit

    image = np.full((40, 50, 3), 7, np.uint8)
    [kept] = cnnkit.classify(image, keep_pictures=True)
    assert kept.picture is not None and kept.picture.shape == (40, 50, 3) and int(kept.picture.max()) == 7
    assert "picture" not in kept.to_dict()
    [plain] = cnnkit.classify(image)
    assert plain.picture is None


def test_ultralytics_warnings_still_reach_stderr_after_a_yolo_call() -> None:
    """cnnkit moves ultralytics' log lines off stdout; in a Python process they then follow its logging
    settings (a warning on stderr) instead of being dropped (a fresh process: the logger is global)."""
    import subprocess
    import sys

    script = (
        "import cnnkit\n"
        "from ultralytics.utils import LOGGER\n"
        f"assert cnnkit.detect(r'{SCENE}')[0].ok\n"
        "LOGGER.warning('the caller warns')\n"
        "LOGGER.info('the caller informs')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "the caller warns" in done.stderr and "the caller" not in done.stdout


def test_numbers_non_pixels_and_unknown_options_are_said_plainly() -> None:
    """A normalised tensor or NaNs would give a confident wrong answer; a typo'd keyword named a private method."""
    nan, normalised = np.full((8, 8, 3), np.nan, np.float32), np.linspace(-2.1, 2.6, 192, dtype=np.float32)
    records = cnnkit.classify([nan, normalised.reshape(8, 8, 3), 5.0, np.float32(0.5) * np.ones((8, 8, 3))])
    assert [r.error for r in records[:3]] == [
        "in-memory array holds NaN or infinite values, which are not pixels",
        "in-memory float array has values from -2.1 to 2.6; pass pixels in [0, 1] or [0, 255], not a normalised tensor",
        "a number (5.0) is not an image",
    ]
    assert records[3].ok
    overshoot = np.clip(np.linspace(-33.0, 293.0, 192, dtype=np.float32), -33, 293).reshape(8, 8, 3)
    assert cnnkit.classify(overshoot)[0].ok  # a bicubic resize of [0, 255] pixels: clipped, as it always was
    with pytest.raises(OptionError, match="not an option of classify"):
        cnnkit.classify(str(SCENE), arch="resnet18")
    with pytest.raises(OptionError, match="imgsz"):
        cnnkit.classify(str(SCENE), imgsz=0)
    with pytest.raises(OptionError, match="expected one of"):
        cnnkit.finetune(str(SAMPLES), task="zzz")


def test_numpy_numbers_are_taken_as_options_and_a_string_is_named_for_its_type() -> None:
    """`conf=np.float32(0.5)` was refused as "must be between 0 and 1" and `imgsz=np.int64(320)` as not a whole
    number: NumPy's numbers are what indexing an array gives, and ultralytics and torchvision take them."""
    from cnnkit.checks import check_load

    options = {"conf": np.float32(0.5), "imgsz": np.int64(96), "topk": np.int64(2), "threads": np.int32(1)}
    check_load(options)
    assert options == {"conf": 0.5, "imgsz": 96, "topk": 2, "threads": 1}
    assert [type(options[k]) for k in ("conf", "imgsz", "topk", "threads")] == [float, int, int, int]
    assert (
        len(cnnkit.classify(str(SCENE), imgsz=np.int64(64), topk=np.int64(2), batch_size=np.int64(2))[0].predictions)
        == 2
    )
    with pytest.raises(OptionError, match="must be a number between 0 and 1"):
        cnnkit.load("detect", conf="0.3")
    with pytest.raises(OptionError, match="must be a whole number"):
        cnnkit.load("classify", imgsz=np.float64(64.0))


def test_none_in_a_list_of_inputs_is_a_failed_input_that_says_so() -> None:
    """`None` in a list (a failed read upstream) was a record saying "no such file", of a file never named."""
    records = cnnkit.classify([np.zeros((32, 32, 3), np.uint8), None, 5.5], threads=1)
    assert [r.error is None for r in records] == [True, False, False]
    assert records[1].path == "<image 1>" and records[1].error.startswith("None is not an image")


def test_a_4d_batch_is_one_input_per_image() -> None:
    """A B×C×H×W tensor (ultralytics' tensor source) or a B×H×W×C array was one failed record ("… is not an
    image"); each of its B images is an input, with the records of the same images given one by one."""
    import torch

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 48, 64, 3), dtype=np.uint8)
    one_by_one = [r.predictions for r in cnnkit.classify(list(images), threads=1)]
    as_array = cnnkit.classify(images, threads=1)
    as_tensor = cnnkit.classify(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, threads=1)
    assert [r.path for r in as_array] == ["<image 0>", "<image 1>", "<image 2>"]
    assert [r.predictions for r in as_array] == one_by_one
    assert [[p["label"] for p in r.predictions] for r in as_tensor] == [[p["label"] for p in ps] for ps in one_by_one]


def test_batches_inside_a_list_or_a_generator_are_their_images() -> None:
    """A 4-D batch inside a list (or a generator) was one failed record ("… is not an image"), though a batch
    given alone is its images."""
    batch = np.zeros((2, 48, 64, 3), np.uint8)
    records = cnnkit.classify([str(SCENE), batch], threads=1)
    assert [r.error for r in records] == [None, None, None] and len(records) == 3
    streamed = list(cnnkit.classify(iter([batch, torch.zeros(2, 3, 48, 64)]), stream=True, threads=1))
    assert len(streamed) == 4 and all(r.error is None for r in streamed)


def test_a_task_that_is_not_a_name_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="task"):
        cnnkit.load(["classify"])  # type: ignore[arg-type]


def test_a_float_pil_image_in_memory_reads_as_the_same_float_array() -> None:
    """A PIL image of mode F was stretched to its range (a constant 0.5 grey came out black), while the same
    floats as an array are pixels in [0, 1]."""
    from cnnkit.io.decode import _from_memory

    grey = np.full((32, 32), 0.5, np.float32)
    dim = np.linspace(0.2, 0.45, 32 * 32, dtype=np.float32).reshape(32, 32)
    for values in (grey, dim):
        assert np.array_equal(_from_memory(Image.fromarray(values)), _from_memory(values))
