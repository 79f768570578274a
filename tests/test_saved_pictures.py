"""Saved pictures at the input's own resolution (#15): a drafted JPEG feeds the model, never the pictures.

Each input here is a JPEG large enough for the bundled classifier and segmenter to decode it at reduced scale;
one carries EXIF orientation 6, so its record is 768 wide and 1024 high.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from cnnkit.cli import app

runner = CliRunner()
SEED = 4242  # unseen by the bundled models' training


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Two 1024×768 shapes scenes as JPEGs; the second is stored rotated, with EXIF orientation 6."""
    from cnnkit.data.shapes import scene

    folder = tmp_path_factory.mktemp("photos")
    plain, turned = folder / "plain.jpg", folder / "turned.jpg"
    Image.fromarray(scene(SEED, 0, size=(768, 1024)).image).save(plain, quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown after a 90° turn clockwise: stored as its counter-clockwise turn
    img = Image.fromarray(scene(SEED, 1, size=(1024, 768)).image).transpose(Image.Transpose.ROTATE_90)
    img.save(turned, quality=90, exif=exif)
    return [plain, turned]


def _original(path: str | Path) -> Image.Image:
    """The input as a viewer shows it: full decode, EXIF orientation applied."""
    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


def _records(args: list[str]) -> list[dict]:
    result = runner.invoke(app, [*args, "-f", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _reencoded(img: Image.Image) -> np.ndarray:
    """``img`` after the JPEG round trip cnnkit's saved pictures take (quality 92)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_inputs_are_drafted_for_the_models(photos):
    """The premise: the bundled classifier's and segmenter's decode of these inputs is reduced (the detector's
    never is), and the sizes are the record's."""
    from cnnkit.io.decode import decode
    from cnnkit.tasks.classify.predict import Classifier
    from cnnkit.tasks.detect.predict import Detector
    from cnnkit.tasks.segment.predict import Segmenter

    sides = [Classifier.load(device="cpu").min_side, Segmenter.load(device="cpu").min_side]
    assert Detector.load(device="cpu").min_side is None
    for side in sides:
        for path in photos:
            d = decode(str(path), min_side=side)
            assert d.drafted and d.rgb.shape[0] < d.height
            assert d.picture().shape == (d.height, d.width, 3)
            assert np.array_equal(d.picture(), np.asarray(_original(path)))
    assert [(d.width, d.height) for d in (decode(str(p), min_side=64) for p in photos)] == [(1024, 768), (768, 1024)]


def test_classify_saves_the_photo_at_its_own_size(photos, tmp_path):
    out = tmp_path / "pics"
    records = _records(["classify", *map(str, photos), "--save-dir", str(out)])
    assert len(records) == 2
    for rec in records:
        saved = Path(rec["saved"])
        assert saved.parent == out and saved.is_file()
        with Image.open(saved) as img:
            assert img.size == (rec["width"], rec["height"])
            pic = np.asarray(img.convert("RGB"), dtype=np.int16)
        # below the caption, the picture is the photo itself (only JPEG noise), not an upscaled 1/8 draft
        h = rec["height"]
        original = np.asarray(_original(rec["path"]), dtype=np.int16)
        assert np.abs(pic[h // 2 :] - original[h // 2 :]).mean() < 2.0


def test_detect_pictures_and_crops_come_from_the_full_image(photos, tmp_path):
    from cnnkit.results import crop_box

    out = tmp_path / "det"
    plain = _records(["detect", *map(str, photos)])
    records = _records(["detect", *map(str, photos), "--save-dir", str(out), "--save-crop"])
    # saving changes no prediction
    assert [r["predictions"] for r in records] == [r["predictions"] for r in plain]
    assert sum(len(r["predictions"]) for r in records) >= 2
    for rec in records:
        with Image.open(rec["saved"]) as img:
            assert Path(rec["saved"]).parent == out and img.size == (rec["width"], rec["height"])
        original = _original(rec["path"])
        assert len(rec["crops"]) == len(rec["predictions"])
        for crop, p in zip(rec["crops"], rec["predictions"]):
            box = crop_box(p["box"])
            assert box == tuple(round(v) for v in p["box"])
            with Image.open(crop) as img:
                assert img.size == (box[2] - box[0], box[3] - box[1])
                got = np.asarray(img.convert("RGB"))
            assert np.array_equal(got, _reencoded(original.crop(box)))


def test_segment_mask_and_overlay_at_the_input_size(photos, tmp_path):
    out = tmp_path / "seg"
    records = _records(["segment", *map(str, photos), "--save-dir", str(out)])
    for rec in records:
        size = (rec["width"], rec["height"])
        with Image.open(rec["mask"]) as m:
            assert m.size == size
            mask = np.asarray(m)
        with Image.open(rec["overlay"]) as o:
            assert o.size == size
            overlay = np.asarray(o.convert("RGB"))
        assert sum(c["pixels"] for c in rec["predictions"]) == rec["width"] * rec["height"]
        background = mask == 0
        assert background.any() and (~background).any()
        # the overlay leaves background pixels as they are: exactly the photo's, never a blurred draft
        assert np.array_equal(overlay[background], np.asarray(_original(rec["path"]))[background])


def test_instance_picture_and_masks_at_the_input_size(photos, tmp_path):
    from cnnkit.io.decode import decode
    from cnnkit.tasks.instance.predict import InstanceSegmenter

    seg = InstanceSegmenter.load(device="cpu", conf=0.3, save_masks=True)
    records = list(seg.stream([str(p) for p in photos], batch_size=1, save_dir=tmp_path / "inst"))
    assert sum(len(r.predictions) for r in records) >= 1
    for rec in records:
        size = (rec.width, rec.height)
        with Image.open(rec.extra["saved"]) as img:
            assert img.size == size
        for p in rec.predictions:
            with Image.open(p["mask_file"]) as m:
                assert m.size == size
        # drawn on the full image even when handed a drafted decode, where the record's masks fit
        drafted = decode(rec.path, min_side=128)
        assert drafted.drafted and seg.annotate(drafted, rec).size == size


def test_full_size_decode_only_when_saving(photos, tmp_path, monkeypatch):
    """Without a save folder every input is decoded once, drafted; with one, again in full, in the decode threads."""
    import threading

    import cnnkit.engine
    import cnnkit.io.decode
    from cnnkit.tasks.classify.predict import Classifier

    real = cnnkit.io.decode.decode
    calls: list[tuple[int | None, str]] = []

    def counting(*args, **kwargs):
        calls.append((kwargs.get("min_side"), threading.current_thread().name))
        return real(*args, **kwargs)

    monkeypatch.setattr(cnnkit.io.decode, "decode", counting)
    monkeypatch.setattr(cnnkit.engine, "decode", counting)
    clf = Classifier.load(device="cpu")
    paths = [str(p) for p in photos]
    plain = list(clf.stream(paths, batch_size=1))
    side = clf.min_side
    assert side == 3 * 64 and [c[0] for c in calls] == [side, side]  # DRAFT_MARGIN × the 64 px input

    calls.clear()
    saved = list(clf.stream(paths, batch_size=1, save_dir=tmp_path / "s"))
    assert sorted(c[0] or 0 for c in calls) == [0, 0, side, side]
    assert all(name.startswith("cnnkit-decode") for _, name in calls)
    assert [r.predictions for r in saved] == [r.predictions for r in plain]
    assert all(Image.open(r.extra["saved"]).size == (r.width, r.height) for r in saved)


@pytest.mark.parametrize("task", ["classify", "detect"])
def test_a_picture_wider_than_jpeg_allows_is_saved_as_png(photos, tmp_path, task):
    """70,000 × 4 pixels (under max_pixels): libjpeg refuses a side over 65,500, and `--save` ended the whole
    run with a traceback; the picture is a PNG and the next input is saved too."""
    wide = tmp_path / "wide.png"
    Image.new("RGB", (70000, 4), (90, 90, 90)).save(wide)
    out = tmp_path / "pics"
    records = _records([task, str(wide), str(photos[0]), "--save-dir", str(out)])
    saved = {Path(r["path"]).name: Path(r["saved"]) for r in records}
    assert saved["wide.png"].suffix == ".png" and saved["plain.jpg"].suffix == ".jpg"
    with Image.open(saved["wide.png"]) as img:
        assert img.size == (70000, 4)
    assert saved["plain.jpg"].is_file()
