"""Video sources, frame records and annotated video, with a fake predictor (no model).

Each test video's frame ``i`` is filled with grey level ``8 * i`` (H.264 at a low CRF keeps it within a
few levels), so every record can be traced back to the frame it came from.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import threading
import tracemalloc
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

from cnnkit.engine import Predictor, StreamState  # noqa: E402
from cnnkit.errors import OptionError  # noqa: E402
from cnnkit.io.decode import Decoded  # noqa: E402
from cnnkit.io.sources import expand_sources  # noqa: E402
from cnnkit.io.video import VideoOptions, VideoWriter, expand_videos, read_frames  # noqa: E402
from cnnkit.io.writers import RecordWriter, tidy_jsonl  # noqa: E402
from cnnkit.records import Record, validate_record  # noqa: E402
from cnnkit.results import Box, Boxes  # noqa: E402


def make_video(path: Path, frames: int = 30, fps: float = 10.0, size: tuple[int, int] = (64, 48)) -> Path:
    w, h = size
    writer = VideoWriter(path, fps, w, h, crf=0)
    for i in range(frames):
        writer.write(np.full((h, w, 3), (8 * i) % 256, np.uint8))
    return writer.close()


def level(rgb: np.ndarray) -> int:
    """The frame index a test frame shows."""
    return round(float(rgb.mean()) / 8)


class GreyBoxes(Predictor):
    """One box per frame whose score says the frame's grey level (``level / 100``)."""

    task = "detect"
    name = "grey"

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def preprocess(self, decoded: Decoded) -> int:
        return level(decoded.rgb)

    def predict_batch(self, inputs: list[int], decoded: list[Decoded], state: StreamState) -> list[Boxes]:
        return [
            Boxes([Box("grey", 0, v / 100, (2.0, 2.0, 20.0, 20.0))], d.width, d.height)
            for v, d in zip(inputs, decoded, strict=True)
        ]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4")


def test_frames_come_in_order_with_index_and_time(clip: Path) -> None:
    items = list(read_frames(str(clip)))
    assert [it.frame for it in items] == list(range(30))
    assert [level(it.data) for it in items] == list(range(30))
    assert [it.time_s for it in items] == pytest.approx([i / 10 for i in range(30)])
    assert all(it.path == str(clip) and it.data.shape == (48, 64, 3) for it in items)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (VideoOptions(vid_stride=3), list(range(0, 30, 3))),
        (VideoOptions(start=1.0, end=2.0), list(range(10, 20))),
        (VideoOptions(start=1.0, vid_stride=4), list(range(10, 30, 4))),
        (VideoOptions(max_frames=5), [0, 1, 2, 3, 4]),
        (VideoOptions(vid_stride=2, max_frames=3), [0, 2, 4]),
    ],
)
def test_stride_start_end_and_max_frames_pick_the_frames(
    clip: Path, options: VideoOptions, expected: list[int]
) -> None:
    items = list(read_frames(str(clip), options))
    assert [it.frame for it in items] == expected
    assert [level(it.data) for it in items] == expected  # the pixels are those frames' pixels


def test_damaged_packets_are_failed_frames_not_patched_up(tmp_path: Path) -> None:
    """Bytes overwritten inside one frame's packet: FFmpeg's decoder conceals most such damage by default and
    returns a frame patched up from its neighbours, which a detector would then read as a good one. Read
    strictly (``err_detect=explode``), the damage is a failed record naming that frame (2 of these 16 damaged
    copies are caught without it, 7 with it), and the other frames still come."""
    rng = np.random.default_rng(0)
    writer = VideoWriter(tmp_path / "noise.mp4", 10.0, 64, 48, crf=18)
    for _ in range(12):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    video = writer.close()
    with av.open(str(video)) as container:
        pos, size = [(p.pos, p.size) for p in container.demux(video=0) if p.size][6]
    caught = 0
    for step in (50, 100, 200, 400):
        for start in (8, 20, 60, 200):
            data = bytearray(video.read_bytes())
            noise = np.random.default_rng(step + start)
            for k in range(pos + start, pos + size, step):
                data[k] = int(noise.integers(256))
            damaged = tmp_path / f"damaged-{step}-{start}.mp4"
            damaged.write_bytes(bytes(data))
            items = list(read_frames(str(damaged)))
            failed = [it for it in items if it.error]
            assert len(items) == 12 and len(failed) <= 1
            if failed:
                assert failed[0].error.startswith(f"frame {failed[0].frame}: cannot decode")
                caught += 1
    assert caught >= 5, f"only {caught} of 16 damaged copies reported"


def test_a_start_past_the_end_is_a_failed_item_saying_where_the_video_ends(clip: Path) -> None:
    (item,) = list(read_frames(str(clip), VideoOptions(start=5.0)))
    assert item.error == "no frame from start 5 s on (the last is at 2.9 s)"


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"vid_stride": 0}, "vid_stride"),
        ({"start": -1.0}, "start"),
        ({"start": 2.0, "end": 1.0}, "start"),
        ({"max_frames": 0}, "max_frames"),
        # a Python caller's: 2.5 frames read 3, a string was a bare TypeError
        ({"max_frames": 2.5}, "max_frames"),
        ({"start": "1"}, "start"),
        ({"end": "2"}, "end"),
        ({"vid_stride": True}, "vid_stride"),
        ({"end": float("nan")}, "end"),  # passed `end <= start`, then hid the frames lost in a damaged stream
    ],
)
def test_bad_video_options_name_the_option(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(OptionError) as err:
        VideoOptions(**kwargs)
    assert option in err.value.options


def test_numpy_whole_numbers_are_whole_numbers(clip: Path) -> None:
    """`vid_stride=np.int64(2)` (from an array of settings) was refused as not a whole number."""
    opts = VideoOptions(vid_stride=np.int64(2), max_frames=np.int32(3))
    assert type(opts.vid_stride) is int and [it.frame for it in read_frames(str(clip), opts)] == [0, 2, 4]


def test_unreadable_videos_are_failed_items_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "text.mkv").write_text("not a video at all\n" * 50)
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name in ("text.mkv", "empty.mp4", "missing.avi"):
        items = list(read_frames(str(tmp_path / name)))
        assert len(items) == 1 and items[0].error and items[0].data is None, name
        assert "cannot open video" in items[0].error or "no video stream" in items[0].error


def test_a_header_whose_metadata_is_not_text_is_a_failed_item(clip: Path, tmp_path: Path) -> None:
    """PyAV's UnicodeDecodeError on a garbled metadata string was a traceback that ended the batch."""
    data = bytearray(clip.read_bytes())
    at = data.index(b"Lavf")  # the encoder tag, a metadata string of the header
    data[at : at + 4] = b"\x82\xff\xfe\x80"
    bad = tmp_path / "garbled.mp4"
    bad.write_bytes(bytes(data))
    (item,) = list(read_frames(str(bad)))
    assert item.error == "cannot open video (its metadata is not UTF-8 text: a damaged header?)"


def test_a_damaged_stream_gives_failed_records_naming_frames(clip: Path, tmp_path: Path) -> None:
    data = bytearray(clip.read_bytes())
    bad = tmp_path / "damaged.mp4"
    # keep the header (moov at the end with libx264's mp4 muxer: keep both ends), garble the middle
    middle = len(data) // 2
    data[middle - 200 : middle + 200] = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    bad.write_bytes(bytes(data))
    items = list(read_frames(str(bad)))
    good = [it for it in items if it.error is None]
    failed = [it for it in items if it.error is not None]
    assert good, "frames before the damage still decode"
    assert failed, "the garbled packets are reported"
    named: list[int] = []
    for it in failed:  # the frames that did not decode are named in the reason: one, or the first and last of a run
        m = re.fullmatch(r"frames? (\d+)(?:–(\d+))?: cannot decode \(.+\)", it.error)
        assert m and int(m[1]) == it.frame, it.error
        named += range(int(m[1]), int(m[2] or m[1]) + 1)
    frames = sorted([it.frame for it in good] + named)
    assert frames == list(range(30)), "every frame of the clip is a good record or named lost, once"


def write_levels(path: Path, frames: int, fps: int = 25, fmt: str | None = None, **options: str) -> Path:
    """A video whose frame ``i`` is grey level ``8 i`` (as :func:`make_video`), in any container and GOP; a
    corner of noise (too small to change the level) gives every frame a packet worth damaging."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"crf": "0", **options}
        for i in range(frames):
            rgb = np.full((48, 64, 3), (8 * i) % 256, np.uint8)
            rgb[:12, :12] = np.clip(rgb[:12, :12] + rng.integers(-30, 31, (12, 12, 3)), 0, 255)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.mark.parametrize("gop", ["10", "60"])
def test_start_reads_from_its_frame_where_seeking_overshoots(tmp_path: Path, gop: str) -> None:
    """MPEG-TS seeks by bytes and lands after the key frame it asked for (or, with one key frame in the file,
    on no key frame at all): the frames from ``start`` still come, the same ones an mp4 gives."""
    video = write_levels(tmp_path / f"gop{gop}.ts", 30, fmt="mpegts", g=gop)
    items = list(read_frames(str(video), VideoOptions(start=0.8, end=1.0)))
    assert [it.frame for it in items] == [20, 21, 22, 23, 24]
    assert [level(it.data) for it in items] == [20, 21, 22, 23, 24]
    assert [it.time_s for it in items] == pytest.approx([0.8, 0.84, 0.88, 0.92, 0.96])


@pytest.mark.parametrize("fmt", ["mpeg", "vob"])
def test_start_in_an_mpeg_program_stream_reads_from_its_frame(tmp_path: Path, fmt: str) -> None:
    """An MPEG-2 .mpg or .vob: after a seek FFmpeg stamps its frames half a frame late, and every frame from
    ``start`` came numbered (and timed) one on."""
    video = tmp_path / f"clip.{fmt}"
    with av.open(str(video), "w", format=fmt) as container:
        stream = container.add_stream("mpeg2video", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": "12"}
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (8 * i) % 256, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    for start, first in ((0.8, 20), (1.0, 25), (1.5, 38)):
        items = list(read_frames(str(video), VideoOptions(start=start, max_frames=3)))
        assert [it.frame for it in items] == [first, first + 1, first + 2]
        assert [level(it.data) for it in items] == [i % 32 for i in (first, first + 1, first + 2)]
        assert [it.time_s for it in items] == pytest.approx([i / 25 for i in (first, first + 1, first + 2)])


def test_start_between_frames_begins_at_the_next_frame(tmp_path: Path) -> None:
    video = write_levels(tmp_path / "slow.mp4", 5, fps=1)
    assert [it.frame for it in read_frames(str(video), VideoOptions(start=0.5))] == [1, 2, 3, 4]
    assert [it.frame for it in read_frames(str(video), VideoOptions(start=2.5))] == [3, 4]


@pytest.mark.parametrize("b_frames", ["0", "3"])
def test_frames_after_a_damaged_run_keep_their_numbers(tmp_path: Path, b_frames: str) -> None:
    """A run of packets that do not decode (with B-frames the decoder's error surfaces packets later, without
    them a lost reference frame takes the rest of its group): the frames after it keep their own numbers and
    times, and one failed item names the frames lost."""
    video = write_levels(tmp_path / "gop.mkv", 60, fmt="matroska", g="10", bf=b_frames)
    data = bytearray(video.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(b ^ 0xFF for b in data[middle : middle + 200])
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(bytes(data))
    items = list(read_frames(str(damaged)))
    good = [it for it in items if it.error is None]
    failed = [it for it in items if it.error is not None]
    assert failed and good
    for it in good:  # number, time and pixels agree
        assert level(it.data) == it.frame % 32 and it.time_s == pytest.approx(it.frame / 25)
    named = []
    for it in failed:
        m = re.fullmatch(r"frames? (\d+)(?:–(\d+))?: cannot decode \(.+\)", it.error)
        assert m and int(m[1]) == it.frame, it.error
        named += range(int(m[1]), int(m[2] or m[1]) + 1)
    assert sorted([it.frame for it in good] + named) == list(range(60))


def frames_accounted(items: list[Any], reason: str) -> list[int]:
    """The frames of good items and those failed items name (``frame N`` or ``frames N–M``, with ``reason``)."""
    named = []
    for it in items:
        if it.error is not None:
            m = re.fullmatch(rf"frames? (\d+)(?:–(\d+))?: {reason}", it.error)
            assert m and int(m[1]) == it.frame, it.error
            named += range(int(m[1]), int(m[2] or m[1]) + 1)
    return sorted([it.frame for it in items if it.error is None] + named)


def test_a_matroska_cluster_the_demuxer_skips_is_named_missing(tmp_path: Path) -> None:
    """A damaged Matroska cluster is passed over by the demuxer without an error: its frames were missing from the
    records with nothing said (20 and more frames for 8 garbled bytes)."""
    video = write_levels(tmp_path / "long.mkv", 200, fmt="matroska", g="10")
    data = bytearray(video.read_bytes())
    clusters = [m.start() for m in re.finditer(re.escape(bytes([0x1F, 0x43, 0xB6, 0x75])), bytes(data))]
    assert len(clusters) > 4
    infos: dict[str, Any] = {}
    assert [it.error for it in read_frames(str(video), infos=infos)] == [None] * 200  # whole: no gap said
    assert infos[str(video)].frames == 200  # from the track's DURATION tag: no frame count in the header
    for at in (clusters[2], clusters[-1]):  # a cluster in the middle, and the last one
        damaged = tmp_path / f"damaged-{at}.mkv"
        garbled = bytearray(data)
        garbled[at : at + 8] = bytes(b ^ 0xFF for b in garbled[at : at + 8])
        damaged.write_bytes(bytes(garbled))
        items = list(read_frames(str(damaged)))
        failed = [it for it in items if it.error is not None]
        assert len(failed) == 1 and [it.frame for it in items if it.error is None] != list(range(200))
        reason = r"missing \((the file goes from frame \d+ to frame \d+; damaged data skipped\?|the file ends .+)\)"
        assert frames_accounted(items, reason) == list(range(200))
        for it in items:
            if it.error is None:
                assert level(it.data) == it.frame % 32


@pytest.mark.parametrize("b_frames", ["0", "3"])
def test_a_skipped_cluster_just_after_a_packet_that_does_not_decode_is_named_too(tmp_path: Path, b_frames: str) -> None:
    """A packet that does not decode near the end of one Matroska cluster, and the next cluster garbled: the
    demuxer reads past the jump before the decoder hands out the frame that names the first loss, and the
    skipped cluster's frames went unsaid (the jump was forgotten once the first gap was named)."""
    video = write_levels(tmp_path / "long.mkv", 200, fmt="matroska", g="10", bf=b_frames)
    data = bytes(video.read_bytes())
    clusters = [m.start() for m in re.finditer(re.escape(bytes([0x1F, 0x43, 0xB6, 0x75])), data)]
    with av.open(str(video)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    for k in (3, 5):
        pos, size = [p for p in packets if p[0] < clusters[k]][-3]  # the third packet before cluster k
        garbled = bytearray(data)
        for at, n in ((pos + size // 2, 20), (clusters[k], 8)):
            garbled[at : at + n] = bytes(b ^ 0xFF for b in garbled[at : at + n])
        damaged = tmp_path / f"damaged-{k}.mkv"
        damaged.write_bytes(bytes(garbled))
        items = list(read_frames(str(damaged)))
        reason = r"(cannot decode \(.+\)|missing \(the file goes from frame \d+ to frame \d+; damaged data skipped\?\))"
        assert frames_accounted(items, reason) == list(range(200))
        assert any("missing" in (it.error or "") for it in items)


@pytest.mark.parametrize("how", ["cut", "blanked"])
@pytest.mark.parametrize("b_frames", ["0", "2"])
def test_an_mpegts_frame_lost_whole_is_named_missing(tmp_path: Path, b_frames: str, how: str) -> None:
    """The transport packets of one frame dropped from an MPEG-TS (a lossy link), or overwritten by null packets:
    every other frame decodes, so only the skipped continuity counter and the timestamps show the loss, and the
    frame went missing with exit 0."""
    video = write_levels(tmp_path / "clip.ts", 60, fmt="mpegts", g="10", bf=b_frames)
    data = video.read_bytes()
    packets = [data[i : i + 188] for i in range(0, len(data), 188)]
    starts = [i for i, p in enumerate(packets) if ((p[1] & 0x1F) << 8 | p[2]) == 0x100 and p[1] & 0x40]
    assert len(starts) == 60
    a, b = starts[25], starts[26]  # the packets of the 26th frame in decode order
    null = b"\x47\x1f\xff\x10" + b"\xff" * 184
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(b"".join(packets[:a] + ([] if how == "cut" else [null] * (b - a)) + packets[b:]))
    items = list(read_frames(str(damaged)))
    failed = [it for it in items if it.error is not None]
    assert len(failed) == 1 and len(items) == 60
    assert frames_accounted(
        items, r"missing \(the file goes from frame \d+ to frame \d+; damaged data skipped\?\)"
    ) == list(range(60))
    assert [it.error for it in read_frames(str(video))] == [None] * 60  # the whole file: nothing said


@pytest.mark.parametrize("b_frames", ["0", "2"])
def test_an_mpegts_run_of_lost_packets_spanning_frames_is_named_missing(tmp_path: Path, b_frames: str) -> None:
    """Twenty transport packets cut from near the start of an MPEG-TS: whole frames are lost and no packet the
    demuxer hands out is flagged corrupt, so the frames went missing with exit 0; the step in the packets'
    decode times shows the loss (with B-frames, frames shown after the next one are lost with it)."""
    video = write_levels(tmp_path / "clip.ts", 60, fmt="mpegts", g="12", bf=b_frames)
    data = video.read_bytes()
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(data[: 8 * 188] + data[28 * 188 :])
    items = list(read_frames(str(damaged)))
    assert any(it.error for it in items)
    reason = r"missing \(the file goes from frame \d+ to frame \d+; damaged data skipped\?\)"
    accounted = frames_accounted(items, reason)
    assert accounted == sorted(set(accounted)) and accounted == list(range(accounted[-1] + 1))


def test_an_mpegts_frame_lost_whole_before_a_long_gop_leaves_the_tail_read(tmp_path: Path) -> None:
    """One frame's packets cut from an H.264 MPEG-TS with one key frame every 25: FFmpeg's frame threads failed every
    packet after it, so the reader named a frame and gave up after 25 failures, the other 40 frames unread and
    unsaid. A flushed decoder takes the stream up again at the next key frame."""
    video = tmp_path / "clip.ts"
    with av.open(str(video), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"bf": "0", "g": "25"}
        for i in range(50):
            rgb = np.full((48, 64, 3), 4 * i, np.uint8)
            rgb[(i * 3) % 48, :, 1] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = video.read_bytes()
    packets = [data[i : i + 188] for i in range(0, len(data), 188)]
    starts = [i for i, p in enumerate(packets) if ((p[1] & 0x1F) << 8 | p[2]) == 0x100 and p[1] & 0x40]
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(b"".join(packets[: starts[10]] + packets[starts[11] :]))
    items = list(read_frames(str(damaged)))
    reason = r"(cannot decode \(.+\)|missing \(the file goes from frame \d+ to frame \d+; damaged data skipped\?\))"
    assert frames_accounted(items, reason) == list(range(50))
    good = [it.frame for it in items if it.error is None]
    assert len(good) >= 40 and 10 not in good and good[-1] == 49


@pytest.mark.parametrize("offset", [5800, 8786])
def test_a_damaged_mpeg_program_stream_names_frames_it_holds(tmp_path: Path, offset: int) -> None:
    """Sixteen bytes zeroed in an MPEG-2 ``.mpg`` (no frame count in the file). At 8786 a packet fails yet every
    frame comes: the failure was named as frame 60 of a 60-frame file. At 5800 the decoder drops a frame without an
    error: it went missing with exit 0; the decoder took 60 packets and gave 59 frames."""
    video = tmp_path / "clip.mpg"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg2video", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": "12"}
        stream.codec_context.max_b_frames = 2
        for i in range(60):
            rgb = np.zeros((48, 64, 3), np.uint8)
            rgb[..., 0], rgb[(i * 3) % 48, :, 1] = i * 4, 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    assert [it.error for it in read_frames(str(video))] == [None] * 60
    data = bytearray(video.read_bytes())
    data[offset : offset + 16] = bytes(16)
    damaged = tmp_path / "damaged.mpg"
    damaged.write_bytes(bytes(data))
    items = list(read_frames(str(damaged)))
    failed = [it for it in items if it.error is not None]
    assert failed and all(0 <= it.frame < 60 for it in failed)
    reason = r"(decoded from damaged data \(.+\)|missing \(the file goes from frame \d+ to frame \d+; .+\))"
    assert set(frames_accounted(items, reason)) == set(range(60))


def test_an_mpeg4_ts_at_half_its_clock_tick_is_numbered_on_its_own_frames(tmp_path: Path) -> None:
    """MPEG-4 Part 2 at 12.5 fps in MPEG-TS: the container measures no average rate and the codec's clock ticks 25
    times a second, so frames were numbered 0, 2, 4, … and every one after the first was said missing (exit 1 on a
    healthy file); the packets' decode times step two ticks, so the rate is 12.5."""
    video = tmp_path / "half.ts"
    with av.open(str(video), "w", format="mpegts") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(25, 2))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    infos: dict[str, Any] = {}
    items = list(read_frames(str(video), infos=infos))
    assert [it.error for it in items] == [None] * 30
    assert [it.frame for it in items] == list(range(30))
    assert np.abs(np.array([level(it.data) for it in items]) - np.arange(30)).max() <= 1  # MPEG-4 is lossy
    assert infos[str(video)].fps == pytest.approx(12.5)
    strided = list(read_frames(str(video), VideoOptions(vid_stride=2, start=1.0)))
    assert [it.frame for it in strided] == list(range(13, 30, 2))
    assert [it.time_s for it in strided] == pytest.approx([i / 12.5 for i in range(13, 30, 2)])


def front_indexed_noise(path: Path, fps: int, frames: int = 40, codec: str = "libx264") -> Path:
    """``frames`` frames of noise (every frame's packet about the same size) in an mp4 with its index at the
    front (or another container ``path`` names)."""
    with av.open(str(path), "w", options={"movflags": "faststart"} if path.suffix == ".mp4" else {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_a_truncated_video_says_which_frames_are_missing(tmp_path: Path) -> None:
    """An mp4 with its index at the front, cut short: the frames before the cut come, and a failed item says
    the file ends early instead of the run reporting a whole video."""
    whole = front_indexed_noise(tmp_path / "whole.mp4", 25)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    items = list(read_frames(str(cut)))
    good = [it for it in items if it.error is None]
    assert 0 < len(good) < 40 and [it.frame for it in good] == list(range(len(good)))
    assert items[-1].error == (
        f"frames {len(good)}–39: missing (the file ends after frame {len(good) - 1}, the header says 40 frames; "
        "truncated?)"
    )
    assert len(list(read_frames(str(whole)))) == 40  # the whole file: no such item


@pytest.mark.parametrize("name", ["whole.mp4", "whole.avi"])
def test_a_video_cut_before_its_last_frame_says_so(tmp_path: Path, name: str) -> None:
    """An mp4 (index at the front) or AVI cut where its last frame's packet begins: the header counts its samples,
    so the one frame missing is named (a duration's count may be one off; a sample count is not)."""
    whole = front_indexed_noise(tmp_path / name, 25, frames=20, codec="libx264" if name.endswith("mp4") else "mpeg4")
    with av.open(str(whole)) as container:
        last = max(p.pos for p in container.demux(container.streams.video[0]) if p.size)
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(whole.read_bytes()[:last])
    assert [it.error for it in read_frames(str(whole))] == [None] * 20
    items = list(read_frames(str(cut)))
    assert [it.frame for it in items[:-1]] == list(range(19)) and all(it.error is None for it in items[:-1])
    assert items[-1].frame == 19 and items[-1].error == (
        "frame 19: missing (the file ends after frame 18, the header says 20 frames; truncated?)"
    )


def test_an_mp4_cut_inside_its_last_b_frame_names_that_frame(tmp_path: Path) -> None:
    """MPEG-4 with B-frames, its last sample (a B-frame, shown before the P-frame decoded ahead of it) cut off: the
    frame after it still came, so the file's end looked whole and the frame went missing with exit 0."""
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": "12"}
        stream.codec_context.max_b_frames = 2
        for i in range(40):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 4 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:-28])
    assert [it.error for it in read_frames(str(whole))] == [None] * 40
    items = list(read_frames(str(cut)))
    failed = [it for it in items if it.error is not None]
    assert len(failed) == 1 and failed[0].error is not None and failed[0].error.startswith("frame 38: missing")
    assert sorted(it.frame for it in items) == list(range(40))


def test_a_truncated_video_read_from_a_start_says_which_asked_frames_are_missing(tmp_path: Path) -> None:
    """The same cut read with ``start`` and ``end``: the frames past the cut are named missing, as without
    ``start``, instead of the window ending early in silence."""
    whole = front_indexed_noise(tmp_path / "whole.mp4", 10)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.5)])
    kept = len([it for it in read_frames(str(cut)) if it.error is None])
    assert 5 < kept < 30
    items = list(read_frames(str(cut), VideoOptions(start=0.5, end=3.0)))
    good = [it.frame for it in items if it.error is None]
    assert good == list(range(5, kept))
    assert items[-1].error is not None and items[-1].error.startswith(f"frames {kept}–39: missing")
    assert items[-1].frame == kept
    past = list(read_frames(str(cut), VideoOptions(start=3.5)))  # a start among the lost frames: said once
    assert len(past) == 1 and past[0].error is not None and past[0].error.startswith(f"frames {kept}–39: missing")


def test_a_run_of_damaged_packets_names_every_frame_it_costs(tmp_path: Path) -> None:
    """Bytes overwritten across several packets of an H.264 mp4 with B-frames: FFmpeg's threaded decoder
    reports a run of failed packets, then hands out frames with more than one gap between them. Every frame
    of the video is a record or named in a failed item; none goes missing unsaid."""
    src = tmp_path / "src.mp4"
    with av.open(str(src), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for i in range(60):
            a = np.zeros((96, 128, 3), np.uint8)
            a[:] = (40, 80, 40)
            x = int(88 * i / 59)
            a[32:72, x : x + 40] = (255, 0, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = bytearray(src.read_bytes())
    at = data.find(b"mdat")
    for offset in (1500, 900, 2500):
        damaged = tmp_path / f"damaged-{offset}.mp4"
        data2 = bytearray(data)
        data2[at + offset : at + offset + 200] = b"\xff" * 200
        damaged.write_bytes(bytes(data2))
        items = list(read_frames(str(damaged)))
        assert any(it.error for it in items)
        assert frames_accounted(items, r"cannot decode \(.+\)") == list(range(60))


def test_folders_mix_images_and_videos(clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    os.link(clip, folder / "b.mp4")
    Image.fromarray(np.full((10, 12, 3), 40, np.uint8)).save(folder / "a.png")
    (folder / "notes.txt").write_text("x")
    items = expand_sources([str(folder)])
    assert [Path(it.path).name for it in items] == ["a.png", "b.mp4"]
    records = list(GreyBoxes().stream([str(folder)], batch_size=4, max_frames=6))
    assert [(Path(r.path).name, r.frame) for r in records] == [("a.png", None)] + [("b.mp4", i) for i in range(6)]
    for r in records:
        data = json.loads(r.to_json())
        validate_record(data)
        assert ("frame" in data) == (r.frame is not None)
    assert [r.predictions[0]["score"] for r in records[1:]] == [i / 100 for i in range(6)]


def test_annotated_video_has_the_frames_size_and_rate(clip: Path, tmp_path: Path) -> None:
    records = list(GreyBoxes().stream(str(clip), save_dir=tmp_path / "out", vid_stride=2, batch_size=4))
    saved = {r.extra["saved"] for r in records}
    assert len(records) == 15 and len(saved) == 1
    out = Path(saved.pop())
    assert out.suffix == ".mp4" and out.parent == tmp_path / "out"
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert (stream.width, stream.height) == (64, 48)
        assert float(stream.average_rate) == pytest.approx(5.0)  # 10 fps read every 2nd frame
    assert len(frames) == 15
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")], "no temporary file left"


def test_odd_sized_video_is_written_at_its_own_size(tmp_path: Path) -> None:
    video = make_video(tmp_path / "odd.mp4", frames=4, size=(61, 45))
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (45, 61, 3)
    assert [level(f) for f in frames] == [0, 1, 2, 3]


def rotate_display(video: Path, out: Path) -> Path:
    """``video`` with its first track's matrix set to a quarter turn clockwise (how a phone stores portrait
    video: landscape pixels and a rotation to show them by)."""
    import struct

    data = bytearray(video.read_bytes())
    at = data.find(b"tkhd")
    version = data[at + 4]
    matrix = at + 8 + (16 if version == 0 else 28) + 4 + 8 + 8  # after times, track id, duration, layer…volume
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    out.write_bytes(bytes(data))
    return out


def test_frames_are_turned_as_the_display_matrix_says(tmp_path: Path) -> None:
    w, h = 64, 48
    writer = VideoWriter(tmp_path / "flat.mp4", 10.0, w, h, crf=0)
    for i in range(3):
        rgb = np.full((h, w, 3), 8 * i, np.uint8)
        rgb[:8, :16] = 255  # a white mark in the stored top-left corner
        writer.write(rgb)
    portrait = rotate_display(writer.close(), tmp_path / "portrait.mp4")
    items = list(read_frames(str(portrait)))
    assert [it.data.shape for it in items] == [(w, h, 3)] * 3  # shown upright: tall, not wide
    top_right = items[0].data[:16, -8:]  # a clockwise quarter turn takes the top-left corner to the top right
    assert top_right.mean() > 200, "the frame is not turned clockwise"
    assert items[0].data[-16:, :8].mean() < 50
    saved = list(GreyBoxes().stream(str(portrait), save_dir=tmp_path / "out"))
    with av.open(saved[0].extra["saved"]) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (h, w)


def test_a_stream_that_changes_size_midway_is_read_and_saved_whole(tmp_path: Path) -> None:
    """Two MPEG-TS recordings of different sizes joined byte to byte (what a camera's segments can give): every
    frame is read at its own size, and the annotated mp4 keeps the first size (later frames scaled to it)."""
    joined = b""
    for w, h in ((64, 48), (80, 60)):
        part = tmp_path / f"{w}.ts"
        with av.open(str(part), "w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for i in range(5):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((h, w, 3), 40 * i, np.uint8), "rgb24")))
            container.mux(stream.encode())
        joined += part.read_bytes()
    (tmp_path / "in").mkdir()
    video = tmp_path / "in" / "joined.ts"
    video.write_bytes(joined)
    records = list(GreyBoxes().stream(str(tmp_path / "in"), save_dir=tmp_path / "out"))
    assert [(r.frame, r.width, r.ok) for r in records] == [(i, 64 if i < 5 else 80, True) for i in range(10)]
    with av.open(records[-1].extra["saved"]) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (64, 48)
        assert sum(1 for _ in container.decode(video=0)) == 10


def test_frames_stream_without_accumulating(tmp_path: Path) -> None:
    """Peak memory while reading a 200-frame video stays near a few frames, not the video (7.4 MB here)."""
    video = make_video(tmp_path / "long.mp4", frames=200, size=(128, 96))
    frame_bytes = 128 * 96 * 3
    tracemalloc.start()
    try:
        n = sum(1 for r in GreyBoxes().stream(str(video), batch_size=4) if r.ok)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 200
    assert peak < 40 * frame_bytes, f"peak {peak:,} bytes: frames accumulate"


def test_closing_a_stream_early_stops_the_reader(clip: Path) -> None:
    frames = expand_videos(expand_sources([str(clip)]), VideoOptions())
    first = next(frames)
    assert first.frame == 0
    frames.close()
    assert not [t for t in threading.enumerate() if t.name == "cnnkit-video" and t.is_alive()]


def test_jsonl_keeps_every_frame_and_resumes_per_frame(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    writer = RecordWriter("jsonl", str(out))
    for i in range(3):
        writer.write(Record("v.mp4", "detect", "m", 8, 8, [], 1.0, frame=i, time_s=i / 10))
    writer.write(Record("v.mp4", "detect", "m", error="frame 3: cannot decode (x)", frame=3, time_s=0.3))
    writer.close()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["frame"] for x in lines] == [0, 1, 2, 3]
    assert list(lines[0])[:3] == ["path", "frame", "time_s"] and lines[0]["schema_version"] == 3
    resume = tidy_jsonl(out)
    assert len(resume.done) == 3 and len(resume.known) == 4  # the failed frame is retried


@contextlib.contextmanager
def served(folder: Path) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving ``folder`` (http.server in a thread) while the block runs."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def live_tcp(data: bytes) -> Iterator[str]:
    """``tcp://127.0.0.1:PORT`` sending ``data`` to the first client, then closing: a live stream (no seeking)."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))

    def send() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.sendall(data)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        thread.join(timeout=5)


def mpegts(frames: int = 12, size: tuple[int, int] = (64, 48)) -> bytes:
    """A test video (frame ``i`` at grey level ``8 * i``) as MPEG-TS bytes, the format live streams carry."""
    out = io.BytesIO()
    w, h = size
    with av.open(out, "w", format="mpegts") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"qscale": "1"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 8 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return out.getvalue()


def test_a_stream_url_served_on_loopback_is_read(clip: Path) -> None:
    """An ``http://`` source goes to PyAV as a URL, not to the file walker (served here by http.server)."""
    with served(clip.parent) as root:
        url = f"{root}/{clip.name}"
        assert [it.path for it in expand_sources([url])] == [url]
        records = list(GreyBoxes().stream(url, max_frames=4))
        assert [(r.path, r.frame) for r in records] == [(url, i) for i in range(4)]
        missing = list(GreyBoxes().stream(url.replace(clip.name, "nothing.mp4")))
        assert len(missing) == 1 and missing[0].error.startswith("cannot open stream")


def test_an_mp4_with_its_index_at_the_end_is_read_from_a_server_without_byte_ranges(tmp_path: Path) -> None:
    """``python -m http.server`` ignores ``Range``: FFmpeg reads an mp4's index at its end and cannot come back to
    its frames ("Input/output error" on the first packet, once the file is larger than FFmpeg's buffer), so the
    file is read from a downloaded copy, with ``start`` still honoured."""
    rng = np.random.default_rng(0)
    path = tmp_path / "noisy.mp4"
    writer = VideoWriter(path, 10.0, 160, 120, crf=0)
    for i in range(30):
        frame = rng.integers(0, 40, (120, 160, 3), dtype=np.uint8) + np.uint8(8 * i)  # level i, noise: a big file
        writer.write(frame)
    writer.close()
    data = path.read_bytes()
    assert path.stat().st_size > 500_000 and data.rfind(b"moov") > data.find(b"mdat")  # the index follows
    with served(tmp_path) as root:
        url = f"{root}/{path.name}"
        items = list(read_frames(url, VideoOptions(start=1.0, max_frames=5)))
        assert [(it.error, it.frame) for it in items] == [(None, i) for i in range(10, 15)]
        assert [round((float(it.data.mean()) - 19.5) / 8) for it in items] == list(range(10, 15))
        assert len(list(read_frames(url))) == 30


def test_a_url_failing_again_when_read_from_its_first_frame_is_read_from_a_copy(
    clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seek that finds no way in reads the video again from its first frame; if that read fails before its first
    packet as an mp4 from a server without byte ranges does, the copy is read, as it is when the first read fails
    so (it escaped as an exception from the second read)."""
    from cnnkit.io import video
    from cnnkit.io.sources import Item

    reads: list[bool] = []

    def frames(container: Any, path: str, info: Any, opts: Any, *, seek: bool = True, **_: Any) -> Iterator[Item]:
        reads.append(seek)
        raise video._FromStart if seek else video._NoRanges("Input/output error")
        yield  # a generator, as _frames is

    def from_copy(path: str, info: Any, opts: Any, max_pixels: int | None, reason: str) -> Iterator[Item]:
        yield Item(path, error=f"copied after: {reason}")

    monkeypatch.setattr(video, "_frames", frames)
    monkeypatch.setattr(video, "_from_copy", from_copy)
    items = list(read_frames(str(clip), VideoOptions(start=1.0)))
    assert reads == [True, False]
    assert [it.error for it in items] == ["copied after: Input/output error"]


def test_a_stream_that_sends_nothing_times_out_saying_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """It failed as "Immediate exit requested", FFmpeg's words for PyAV's timeout."""
    import socket

    import cnnkit.io.video as video

    monkeypatch.setattr(video, "STREAM_TIMEOUT_S", 1.0)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the backlog) and never sends
        url = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        (item,) = list(read_frames(url))
    assert item.error is not None and "timed out: nothing received for 1 s" in item.error, item.error


def test_a_live_tcp_stream_is_read_frame_by_frame() -> None:
    with live_tcp(mpegts(12)) as url:
        records = list(GreyBoxes().stream(url, vid_stride=3))
    assert [r.frame for r in records] == [0, 3, 6, 9]
    assert [round(r.predictions[0]["score"] * 100) for r in records] == [0, 3, 6, 9]  # the frames they name


def test_cnnkit_detect_and_its_api_read_a_video_url(clip: Path, tmp_path: Path) -> None:
    """The bundled detector through the CLI and ``cnnkit.detect`` on an mp4 served over http."""
    from typer.testing import CliRunner

    import cnnkit
    from cnnkit.cli import app

    with served(clip.parent) as root:
        url = f"{root}/{clip.name}"
        out = tmp_path / "frames.jsonl"
        result = CliRunner().invoke(app, ["detect", url, "--max-frames", "3", "--output", str(out), "--threads", "1"])
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [(r["path"], r["frame"], r["error"]) for r in lines] == [(url, i, None) for i in range(3)]
        assert [r["time_s"] for r in lines] == pytest.approx([0.0, 0.1, 0.2])
        assert "3 record(s) (3 video frame(s)), 0 failed" in result.stderr
        records = list(cnnkit.detect(url, stream=True, vid_stride=2, max_frames=2, threads=1))
        assert [(r.path, r.frame, r.ok) for r in records] == [(url, 0, True), (url, 2, True)]


@pytest.mark.parametrize("source", ["9", "/dev/video9"])
def test_a_webcam_with_no_device_is_a_one_line_error_naming_it(source: str) -> None:
    from typer.testing import CliRunner

    from cnnkit.cli import app

    if os.path.exists("/dev/video9"):
        pytest.skip("this machine has a /dev/video9")
    result = CliRunner().invoke(app, ["detect", source, "--threads", "1"])
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if line.startswith("failed ")]
    assert line.startswith(f"failed {source}: cannot open webcam {source}") and "/dev/video9" in line


def test_a_report_of_a_video_draws_its_frames_and_keeps_few(tmp_path: Path, monkeypatch) -> None:
    """A video frame cannot be read again from its path: the stream hands the report its pixels when asked,
    and the report keeps at most VIDEO_THUMBS evenly spaced thumbnails per video, saying which."""
    import cnnkit.report.html as html_mod

    monkeypatch.setattr(html_mod, "VIDEO_THUMBS", 4)
    clip = make_video(tmp_path / "clip.mp4", frames=20)
    report = html_mod.Report(tmp_path / "report.html")
    plain = list(GreyBoxes().stream([str(clip)]))
    assert all(r.picture is None for r in plain)  # off by default: a list of records holds no frames
    for record in GreyBoxes().stream([str(clip)], keep_pictures=True):
        assert record.picture is not None and level(record.picture) == record.frame
        report.add(record)
    kept = [i for i, t in enumerate(report.thumbs) if t]
    assert kept == [0, 8, 16] and len(report.entries) == 20  # stride 1 → 2 → 4 → 8 as frames came
    report.write()
    html = (tmp_path / "report.html").read_text()
    assert html.count("every 8th frame of this video") == 17  # on each frame without a thumbnail
    entries = [e for e in report.entries if not report.thumbs[e["i"]]]
    assert len(entries) == 17 and all(e["note"] == "thumbnails: every 8th frame of this video" for e in entries)


def test_detect_report_on_a_video_has_pictures(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cnnkit.cli import app

    clip = make_video(tmp_path / "clip.mp4", frames=6)
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["detect", str(clip), "--report", str(out), "-o", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0, result.output
    assert out.read_text().count("data:image/webp;base64,") == 6


def make_vfr_video(path: Path, gaps: list[int]) -> Path:
    """Frames ``gaps`` thirtieths of a second apart (a phone's variable rate); frame i shows grey level 8·i."""
    from fractions import Fraction

    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    t = 0
    for i, gap in enumerate([0, *gaps]):
        t += gap
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i, np.uint8), format="rgb24")
        frame.pts, frame.time_base = t, Fraction(1, 30)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def test_a_variable_rate_video_numbers_frames_as_they_come(tmp_path: Path) -> None:
    """No frame grid: frames are 0, 1, 2 … in decode order (as ultralytics counts), --start is a time,
    --vid-stride counts frames, and the annotated mp4 shows each frame at its own time."""
    gaps = [3] * 10 + [1] * 20  # 10 fps, then 30 fps
    clip = make_vfr_video(tmp_path / "vfr.mp4", gaps)
    times = np.cumsum([0, *gaps]) / 30
    items = list(read_frames(str(clip)))
    assert [it.frame for it in items] == list(range(31))
    assert [level(it.data) for it in items] == list(range(31))
    assert [it.time_s for it in items] == pytest.approx(times, abs=2e-3)
    later = list(read_frames(str(clip), VideoOptions(start=1.05, vid_stride=3)))
    first = int(np.argmax(times >= 1.05 - 1e-6))
    assert [it.frame for it in later] == list(range(first, 31, 3))
    assert [level(it.data) for it in later] == [it.frame for it in later]
    saved = list(GreyBoxes().stream([str(clip)], save_dir=tmp_path / "out"))
    with av.open(saved[0].extra["saved"]) as video:
        shown = [float(f.pts * f.time_base) for f in video.decode(video.streams.video[0])]
    assert shown == pytest.approx(times, abs=2e-3)


def test_frames_lost_mid_video_are_not_also_reported_missing_at_the_end(tmp_path: Path) -> None:
    """Two frames' packets damaged (a P-frame and a key frame): each loss is named once, and the end of a whole
    file is not reported as `missing … truncated?` for the frames lost in the middle."""
    video = write_levels(tmp_path / "gop.mp4", 40, g="10", bf="0")
    data = bytearray(video.read_bytes())
    with av.open(str(video)) as container:
        tb = container.streams.video[0].time_base
        for packet in container.demux(video=0):
            if packet.size and round(float(packet.pts * tb) * 25) in (13, 20):
                for k in range(packet.pos + 16, packet.pos + packet.size):
                    data[k] ^= 0x5A
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    items = list(read_frames(str(damaged)))
    errors = [it.error for it in items if it.error]
    assert errors and not any("missing" in e for e in errors), errors
    assert max(it.frame for it in items if it.error is None) == 39


def _lost_key_frame_video(tmp_path: Path) -> Path:
    """40 frames of moving shapes at 25 fps, a key frame every 5, the key frame 10's packet garbled: FFmpeg
    hands out frame 9 after frame 13 (B-frames refer across the lost key frame). Where x264 puts its key frames
    depends on the pictures: seed 3's video, drawn again by the generator's line margin, has no key frame 10."""
    from cnnkit.data.moving import write_sequences

    write_sequences(tmp_path, 1, seed=4, frames=40)
    video = tmp_path / "gop5.mp4"
    with av.open(str(tmp_path / "shapes-000.mp4")) as source, av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        stream.codec_context.gop_size = 5
        for frame in source.decode(video=0):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = bytearray(video.read_bytes())
    with av.open(str(video)) as container:
        tb = container.streams.video[0].time_base
        for packet in container.demux(video=0):
            if packet.size and packet.is_keyframe and round(float(packet.pts * tb) * 25) == 10:
                data[packet.pos + 8 : packet.pos + packet.size - 8] = b"\x55" * (packet.size - 16)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    return damaged


def test_a_frame_handed_out_late_after_a_lost_key_frame_does_not_shift_the_rest(tmp_path: Path) -> None:
    """That late frame was numbered after the frames it followed and every later frame carried its number + 1
    (a frame 40 in 40); it is dropped (its number is past) and the rest keep their own."""
    good = [it for it in read_frames(str(_lost_key_frame_video(tmp_path))) if it.error is None]
    assert [it.frame for it in good] == sorted({it.frame for it in good})  # rising, none twice
    assert all(it.frame == round(it.time_s * 25) for it in good) and max(it.frame for it in good) == 39


def test_the_annotated_video_keeps_time_across_lost_frames(tmp_path: Path) -> None:
    """The frames after a loss are written at their own times (they were written 1/fps apart, so the saved
    video ran ahead of the input and ended early)."""
    from typer.testing import CliRunner

    from cnnkit.cli import app

    damaged = _lost_key_frame_video(tmp_path)
    result = CliRunner().invoke(app, ["detect", str(damaged), "--save-dir", str(tmp_path / "out"), "-f", "jsonl"])
    assert result.exit_code == 1  # the lost frames are failed records
    (saved,) = (tmp_path / "out").glob("*.mp4")
    with av.open(str(saved)) as container:
        stream = container.streams.video[0]
        times = [float(f.pts * stream.time_base) for f in container.decode(video=0)]
    assert abs(times[-1] - 39 / 25) < 0.02 and len(times) < 40


def test_a_constant_rate_video_with_dropped_frames_is_numbered_on_its_grid(tmp_path: Path) -> None:
    """A 30 fps recording that dropped 4 frames averages 29.85 fps: frames are numbered on the 1/30 s grid
    every timestamp is on, the same with or without `start` (the average rate numbered some one off)."""
    path = tmp_path / "drop.mp4"
    kept = [i for i in range(604) if i not in (100, 200, 300, 400)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 30)
        for i in kept:
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    whole = {it.frame: it.time_s for it in read_frames(str(path)) if it.error is None}
    assert sorted(whole) == kept
    later = [(it.frame, it.time_s) for it in read_frames(str(path), VideoOptions(start=3.966667, max_frames=40))]
    assert later and all(whole[f] == t for f, t in later) and later[0][0] == 119


# -- videos as phones, cameras, editors and browsers write them ----------------------------------------


def test_start_in_an_open_gop_h264_reads_from_its_frame(tmp_path: Path) -> None:
    """After a seek to a key frame that is no IDR, H.264's strict mode refused every frame: any start past the
    first GOP failed the whole video ("no frame could be decoded")."""
    from cnnkit.data.moving import sequence

    pictures = [
        rgb for rgb, _ in sequence(0, 0, frames=40, size=128).frames()
    ]  # moving shapes: B-frames refer across GOPs
    video = tmp_path / "open.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        stream.options = {"x264-params": "keyint=12:min-keyint=12:open_gop=1:bframes=3"}
        for rgb in pictures:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    items = list(read_frames(str(video), VideoOptions(start=0.6)))
    assert [it.error for it in items if it.error] == []
    assert [it.frame for it in items] == list(range(15, 40))
    full = {it.frame: it.data for it in read_frames(str(video))}
    assert all(np.abs(it.data.astype(int) - full[it.frame]).mean() < 8 for it in items)


def test_end_stops_before_its_second_on_a_stream_that_starts_late(tmp_path: Path) -> None:
    """MPEG-TS timestamps start past 0: t = 1.7 - 1.5 fell just under 0.2, and `end` 0.2 kept the frame at 0.2."""
    video = tmp_path / "late.ts"
    with av.open(str(video), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(40):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i + 2, Fraction(1, 25)  # from 0.08 s, as a camera's stream starts
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with av.open(str(video)) as container:
        assert container.streams.video[0].start_time > 0
    wrong = [k for k in range(1, 40) if len(list(read_frames(str(video), VideoOptions(end=k / 25)))) != k]
    assert wrong == []


def test_a_frame_over_max_pixels_in_a_stream_that_grows_is_a_failed_record(tmp_path: Path) -> None:
    """Only the header's size was checked: a small stream that switched to 16000x12000 midway ran past the limit."""
    small, big = tmp_path / "small.ts", tmp_path / "big.ts"
    for path, side in ((small, (64, 48)), (big, (128, 96))):
        with av.open(str(path), "w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = *side, "yuv420p"
            for i in range(5):
                rgb = np.full((side[1], side[0], 3), 8 * i, np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(small.read_bytes() + big.read_bytes())
    items = list(read_frames(str(joined), max_pixels=64 * 48))
    good = [it for it in items if it.error is None]
    over = [it for it in items if it.error and "over the limit of 3,072 (max_pixels)" in it.error]
    assert len(good) == 5 and all(it.data.shape == (48, 64, 3) for it in good)
    assert len(over) == 1 and "frame 5: 128x96 = 12,288 pixels" in over[0].error and items[-1] is over[0]


def test_a_clip_with_no_average_rate_and_a_millisecond_clock_is_variable() -> None:
    """Browsers (MediaRecorder) and screen recorders write WebM without a frame duration: FFmpeg's rate is then
    the 1 kHz clock, and frames were numbered in milliseconds (0, 40, 90, …)."""
    from cnnkit.io.video import _variable

    class Stream:
        average_rate, base_rate, guessed_rate, time_base = None, Fraction(1000), None, Fraction(1, 1000)

    class Steady(Stream):
        average_rate, base_rate = Fraction(25), Fraction(25)

    assert _variable(Stream()) and not _variable(Steady())


def test_an_mp4_trimmed_by_its_edit_list_is_not_called_truncated(tmp_path: Path) -> None:
    """A trim without re-encoding keeps every sample and shortens the edit list: the header's 40 frames are
    30 on screen, and frames 30-39 were reported missing (exit 1)."""
    import struct

    video = tmp_path / "full.mp4"
    with av.open(str(video), "w") as container:  # its audio runs on past the trim: the container's duration is 1.6 s
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        for i in range(40):
            rgb = np.full((48, 64, 3), 6 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        for k in range(0, int(1.6 * 48000), 1024):
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            sound.sample_rate, sound.pts = 48000, k
            for packet in audio.encode(sound):
                container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)
    data = bytearray(video.read_bytes())
    at = data.find(b"elst")  # the first track's: the video's
    if at < 0 or data[at + 4] != 0:
        pytest.skip("the muxer wrote no version-0 edit list")
    duration, media_time = struct.unpack(">Ii", data[at + 12 : at + 20])
    data[at + 12 : at + 16] = struct.pack(">I", duration * 30 // 40)  # the first 30 frames on screen
    trimmed = tmp_path / "trimmed.mp4"
    trimmed.write_bytes(bytes(data))
    with av.open(str(trimmed)) as container:
        shown = sum(1 for _ in container.decode(video=0))
    items = list(read_frames(str(trimmed)))
    assert [it.error for it in items if it.error] == []
    assert len(items) == shown < 40


def test_frames_in_flight_let_their_pixels_go_when_nothing_reads_them_again(tmp_path: Path) -> None:
    """Two batches of frame items held their full pixels after preprocessing: 30 frames of 8000x8000 took
    7 GB where 30 PNGs of that size took 2 GB. The child's peak over 48 frames of 2000x2000 against one."""
    from tests.safety.test_hostile_inputs import _measured

    frame_mb = 2000 * 2000 * 3 / 1e6
    peaks = []
    for n in (1, 96):
        video = make_video(tmp_path / f"big{n}.mp4", frames=n, fps=25, size=(2000, 2000))
        code, peak, records, err = _measured(["classify", str(video), "--batch-size", "32"], tmp_path)
        assert code == 0 and len(records) == n, err
        peaks.append(peak / 1e6)
    extra = (peaks[1] - peaks[0]) / frame_mb
    # the reader's prefetch (8 frames), FFmpeg's frame threads (more on more cores) and the decode threads'
    # copies: 20-40; with two batches of 32 items holding their frames too, 64 more
    assert extra < 56, f"{extra:.1f} frames' worth held over a one-frame video"


def test_a_run_of_videos_that_cannot_be_opened_is_not_summed_up_as_images(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cnnkit.cli import app

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 64)
    result = CliRunner().invoke(app, ["classify", str(bad)])
    assert result.exit_code == 1
    assert "1 record(s) (0 video frame(s)), 1 failed" in result.stderr and "image(s)" not in result.stderr


def test_the_closing_line_counts_the_frames_read_not_the_failed_items(tmp_path: Path) -> None:
    """A failed item standing for lost frames was counted as one video frame read."""
    from typer.testing import CliRunner

    from cnnkit.cli import app

    video = write_levels(tmp_path / "gop.mkv", 60, fmt="matroska", g="10")
    data = bytearray(video.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(b ^ 0xFF for b in data[middle : middle + 200])
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(bytes(data))
    read = sum(it.error is None for it in read_frames(str(damaged)))
    failed = sum(it.error is not None for it in read_frames(str(damaged)))
    result = CliRunner().invoke(app, ["classify", str(damaged), "--threads", "1"])
    assert failed and f"{read + failed} record(s) ({read} video frame(s)), {failed} failed" in result.stderr


def test_damage_after_a_start_is_still_a_failed_record(tmp_path: Path) -> None:
    """Strict decoding was turned off for every read that began with a seek: a damaged frame after `start`
    reached the model patched up, as a good one."""
    video = tmp_path / "closed.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.options = {"x264-params": "keyint=25:min-keyint=25:bframes=0:scenecut=0"}
        for i in range(100):
            rgb = np.zeros((96, 128, 3), np.uint8)
            rgb[20:60, i : i + 20] = (255, 128, 0)
            rgb += np.random.default_rng(i).integers(0, 40, rgb.shape, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with av.open(str(video)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(video.read_bytes())
    pos, size = packets[60]
    for k in (pos + size // 2, pos + size // 2 + 7, pos + size // 2 + 19):  # light damage: concealed if let be
        data[k] ^= 0xFF
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    for start in (None, 1.0, 2.0):
        errors = [it.error for it in read_frames(str(damaged), VideoOptions(start=start)) if it.error]
        assert len(errors) == 1 and errors[0].startswith("frame 60: cannot decode"), (start, errors)


def test_a_clock_only_rate_gives_a_nominal_rate_not_the_clock() -> None:
    """A browser's WebM had an fps of 1000 (its clock): lost frames got times of a thousandth of a second and
    the annotated video claimed 1000 fps."""
    from types import SimpleNamespace

    from cnnkit.io.video import NOMINAL_FPS, _info

    stream = SimpleNamespace(
        codec_context=SimpleNamespace(name="vp8", width=64, height=48),
        average_rate=None,
        base_rate=Fraction(1000),
        guessed_rate=None,
        time_base=Fraction(1, 1000),
        frames=0,
        duration=None,
    )
    container = SimpleNamespace(streams=SimpleNamespace(video=[stream]), format=SimpleNamespace(name="matroska,webm"))
    info = _info(container)
    assert info.variable and info.fps == NOMINAL_FPS


# -- found by hunting: huge starts, empty windows, encoders that refuse, runs stopped early -----------------


def test_a_start_that_is_not_finite_is_refused_and_a_huge_one_is_a_failed_item(clip: Path) -> None:
    """`--start inf` and `--start 1e20` ended the whole batch in an OverflowError traceback, no record written."""
    for bad in (float("inf"), float("nan")):
        with pytest.raises(OptionError) as err:
            VideoOptions(start=bad)
        assert "start" in err.value.options
    (item,) = list(read_frames(str(clip), VideoOptions(start=1e20)))
    assert item.error is not None and item.error.startswith("no frame from start 1e+20 s on")


def test_a_window_between_two_frames_is_a_failed_item_not_silence(clip: Path) -> None:
    """10 fps: no frame from 0.51 s to 0.55 s; the video gave no record at all, and exit 0."""
    (item,) = list(read_frames(str(clip), VideoOptions(start=0.51, end=0.55)))
    assert item.error == "no frame from 0.51 s to 0.55 s (frames 10 a second)"


def test_a_video_the_encoder_refuses_is_one_failed_record_and_the_run_goes_on(clip: Path, tmp_path: Path) -> None:
    """libx264 refuses a side over 16384: the encoder's ExternalError was a traceback, the inputs after it lost."""
    from cnnkit.io.video import pick_encoder

    if pick_encoder() != "libx264":
        pytest.skip("the limit is libx264's")
    wide = tmp_path / "wide.avi"
    with av.open(str(wide), "w", format="avi") as container:
        stream = container.add_stream("rawvideo", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16400, 8, "bgr24"
        for _ in range(2):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((8, 16400, 3), np.uint8), "rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    out = tmp_path / "out"
    records = list(GreyBoxes().stream([str(wide), str(clip)], save_dir=out, batch_size=4))
    failed = [r for r in records if not r.ok]
    assert len(failed) == 1 and failed[0].path == str(wide) and "annotated video not written" in str(failed[0].error)
    assert "16400x8" in str(failed[0].error)
    later = [r for r in records if r.path == str(clip)]
    assert len(later) == 30 and all(Path(r.extra["saved"]).is_file() for r in later)
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary file left"


def test_a_run_stopped_early_keeps_the_frames_its_records_name(clip: Path, tmp_path: Path) -> None:
    """Ctrl-C, SIGTERM or `| head` deleted the annotated mp4 that the records already written named."""
    stream = GreyBoxes().stream(str(clip), save_dir=tmp_path / "out", batch_size=2)
    taken = [next(stream) for _ in range(5)]
    stream.close()
    saved = Path(taken[0].extra["saved"])
    with av.open(str(saved)) as container:
        assert sum(1 for _ in container.decode(video=0)) >= 5


def frames_in(out: Path) -> dict[str, list[int]]:
    """The frames each video's records name in a JSON Lines or Parquet output, in file order."""
    if out.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    found: dict[str, list[int]] = {}
    for r in rows:
        found.setdefault(Path(r["path"]).name, []).append(r["frame"])
    return found


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_skip_existing_skips_a_finished_video_and_redoes_one_read_otherwise(tmp_path: Path, suffix: str) -> None:
    """A video's records are keyed per frame, and the skip compared plain paths: every video was done again
    ("skipping 0"). A run with another stride kept the first run's frames beside its own."""
    from typer.testing import CliRunner

    from cnnkit.cli import app

    clips = [str(make_video(tmp_path / f"{n}.mp4", frames=6)) for n in "ab"]
    out = tmp_path / f"r{suffix}"
    run = ["detect", *clips, "-o", str(out), "--threads", "1"]
    assert CliRunner().invoke(app, run).exit_code == 0
    assert frames_in(out) == {"a.mp4": list(range(6)), "b.mp4": list(range(6))}
    before = out.read_bytes()
    again = CliRunner().invoke(app, [*run, "--skip-existing"])
    assert again.exit_code == 0 and "skipping 2 input(s)" in again.stderr and out.read_bytes() == before
    if suffix == ".jsonl":  # a run stopped in a's fourth frame: a is read again whole, b is skipped
        kept = [x for x in before.decode().splitlines(keepends=True) if json.loads(x)["path"] != clips[0]]
        out.write_text("".join(kept + before.decode().splitlines(keepends=True)[:3]))
        again = CliRunner().invoke(app, [*run, "--skip-existing"])
        assert again.exit_code == 0 and "skipping 1 input(s)" in again.stderr
        assert sorted(frames_in(out)["a.mp4"]) == list(range(6)) and frames_in(out)["b.mp4"] == list(range(6))
    strided = CliRunner().invoke(app, [*run, "--skip-existing", "--vid-stride", "2"])
    assert strided.exit_code == 0 and "skipping 0 input(s)" in strided.stderr
    assert frames_in(out) == {"a.mp4": [0, 2, 4], "b.mp4": [0, 2, 4]}
    whole = CliRunner().invoke(app, [*run, "--skip-existing"])
    assert whole.exit_code == 0 and {k: sorted(v) for k, v in frames_in(out).items()} == {
        "a.mp4": list(range(6)),
        "b.mp4": list(range(6)),
    }


def test_a_bad_window_is_refused_before_a_save_folder_is_made(clip: Path, tmp_path: Path) -> None:
    """The window was checked only as the frames were read: the save folder was made first and left empty, so
    the corrected command was refused, the folder existing."""
    from typer.testing import CliRunner

    from cnnkit.cli import app

    folder = tmp_path / "out"
    bad = CliRunner().invoke(app, ["detect", str(clip), "--start", "1", "--end", "0.5", "--save-dir", str(folder)])
    assert bad.exit_code == 2 and "end must come after start" in bad.output and not folder.exists()
    good = CliRunner().invoke(app, ["detect", str(clip), "--start", "0.5", "--save-dir", str(folder), "--threads", "1"])
    assert good.exit_code == 0, good.output
    assert len(list(folder.glob("*.mp4"))) == 1


def test_a_matroska_frame_is_found_again_at_its_millisecond_time(tmp_path: Path) -> None:
    """Matroska stamps times in milliseconds: frame 2 of a 30 fps file is at 0.067 s, and `start=0.067` began at
    frame 3 (0.067 × 30 > 2), so a report rebuilt from records lost every third frame's thumbnail."""
    from cnnkit.io.video import frame_picture

    path = tmp_path / "m30.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv444p"
        stream.options = {"crf": "0"}
        for i in range(9):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    items = list(read_frames(str(path)))
    assert [it.frame for it in items] == list(range(9)) and items[2].time_s == pytest.approx(0.067, abs=1e-9)
    for it in items:
        assert level(frame_picture(str(path), it.frame, it.time_s)) == it.frame
        assert next(read_frames(str(path), VideoOptions(start=it.time_s or None))).frame == it.frame


def test_a_resume_refused_before_it_writes_leaves_the_file_and_a_redone_video_keeps_no_old_failure(
    tmp_path: Path,
) -> None:
    """The old records of videos to read again were dropped before the model was checked: a resume refused for
    another model had already emptied the file. A whole-video failure (a file that did not open) stayed beside
    the frames of the run that read it, and a URL's frames with a query string (`a.mp4?v=1`) stayed too."""
    from typer.testing import CliRunner

    from cnnkit.cli import app

    clip = make_video(tmp_path / "a.mp4", frames=6)
    out = tmp_path / "r.jsonl"
    run = ["detect", str(clip), "-o", str(out), "--threads", "1"]
    assert CliRunner().invoke(app, run).exit_code == 0
    other = out.read_text().replace('"model": "shapes-yolov8n"', '"model": "other-model"')
    out.write_text(other)
    refused = CliRunner().invoke(app, [*run, "--skip-existing", "--vid-stride", "2"])
    assert refused.exit_code == 2 and "other-model" in refused.output and out.read_text() == other

    broken = tmp_path / "z.mp4"
    broken.write_bytes(b"junk")
    fixed = tmp_path / "fixed.jsonl"
    again = ["detect", str(broken), "-o", str(fixed), "--threads", "1"]
    assert CliRunner().invoke(app, again).exit_code == 1
    broken.write_bytes(clip.read_bytes())
    assert CliRunner().invoke(app, [*again, "--skip-existing"]).exit_code == 0
    rows = [json.loads(line) for line in fixed.read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(6)) and all(r["error"] is None for r in rows)

    with served(tmp_path) as root:
        url, query = f"{root}/a.mp4?v=1", tmp_path / "q.jsonl"
        for extra in ([], ["--skip-existing", "--vid-stride", "2"]):
            result = CliRunner().invoke(app, ["detect", url, "-o", str(query), "--threads", "1", *extra])
            assert result.exit_code == 0, result.output
    assert [json.loads(line)["frame"] for line in query.read_text().splitlines()] == [0, 2, 4]


# -- found by probing crafted videos: Matroska times that begin late or change rate, a thumbnail track ----------


def write_timed(path: Path, times: list[float], rate: int = 30) -> Path:
    """An H.264 Matroska video whose frame ``i`` is grey level ``6 i``, shown at ``times[i]`` seconds (the header
    says ``rate``)."""
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = tb
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 6 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), tb
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_a_matroska_video_whose_times_begin_late_is_whole(tmp_path: Path) -> None:
    """FFmpeg writes a Matroska track's end time as its DURATION tag: 30 frames from 10 s said 330 frames, and a
    whole file got a failed "truncated?" record (exit 1, and never skipped as done)."""
    video = write_timed(tmp_path / "late.mkv", [10 + i / 30 for i in range(30)])
    infos: dict[str, Any] = {}
    items = list(read_frames(str(video), infos=infos))
    assert [it.error for it in items] == [None] * 30 and [it.frame for it in items] == list(range(30))
    assert infos[str(video)].frames == 30 and items[-1].time_s == pytest.approx(29 / 30, abs=1e-3)


def test_a_matroska_video_that_changes_rate_under_a_constant_header_loses_no_frame(tmp_path: Path) -> None:
    """A variable-rate recording remuxed to Matroska can say 30 fps in its header: each wider gap between frames
    was named "missing ... damaged data skipped?" (a failed record each, exit 1), though the packets follow each
    other in the file. Gaps are damage only where the demuxer skipped bytes (the damaged-cluster test above)."""
    times = [i / 30 for i in range(20)] + [20 / 30 + i / 10 for i in range(1, 21)]
    items = list(read_frames(str(write_timed(tmp_path / "vfr.mkv", times))))
    assert [it.error for it in items] == [None] * 40
    assert all(abs(float(it.data.mean()) - 6 * i) < 3 for i, it in enumerate(items))  # each its own picture
    assert [it.time_s for it in items] == pytest.approx(times, abs=1e-3)


def test_the_video_track_is_read_not_a_thumbnail_track_before_it(tmp_path: Path) -> None:
    """A file holding a one-frame 32×32 picture as its first video track and the 30-frame video second gave one
    record of the picture; FFmpeg's players (and so OpenCV and ultralytics) show the video."""
    video = tmp_path / "two.mkv"
    with av.open(str(video), "w") as container:
        thumb = container.add_stream("mjpeg", rate=1)
        thumb.width = thumb.height = 32
        thumb.pix_fmt = "yuvj420p"
        main = container.add_stream("libx264", rate=30)
        main.width, main.height, main.pix_fmt = 128, 96, "yuv420p"
        still = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 90, np.uint8), format="rgb24").reformat(
            format="yuvj420p"
        )
        still.pts = 0
        for packet in [*thumb.encode(still), *thumb.encode(None)]:
            container.mux(packet)
        for i in range(30):
            for packet in main.encode(
                av.VideoFrame.from_ndarray(np.full((96, 128, 3), 8 * i, np.uint8), format="rgb24")
            ):
                container.mux(packet)
        for packet in main.encode(None):
            container.mux(packet)
    items = list(read_frames(str(video)))
    assert len(items) == 30 and {it.data.shape for it in items} == {(96, 128, 3)}


def test_start_takes_the_first_frame_stamped_at_or_after_it_off_the_grid(tmp_path):
    """A phone's 1/600 s clock stamps a 30 fps frame a tick late (frame 1 at 0.035 s): `start` 0.035 skipped it
    (the grid said frame 2), and a report could not read frames 1 and 31 again."""
    import av

    from cnnkit.io.video import frame_picture

    path = tmp_path / "late.mp4"
    with av.open(str(path), "w", options={"video_track_timescale": "600"}) as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.options = {"bf": "0"}
        stream.codec_context.time_base = Fraction(1, 600)
        for i in range(40):
            rgb = np.full((64, 64, 3), 40, np.uint8)
            rgb[10:30, i : i + 20] = 200
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = 20 * i + (1 if i in (1, 31) else 0), Fraction(1, 600)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    for start, first in ((0.034, 1), (0.035, 1), (0.036, 2), (1.035, 31)):
        item = next(iter(read_frames(str(path), VideoOptions(start=start))))
        assert item.frame == first and item.time_s >= start - 5e-4, (start, item.frame, item.time_s)
    every = {item.frame: item for item in read_frames(str(path), VideoOptions())}
    for k in (1, 31):
        assert np.array_equal(frame_picture(str(path), k, every[k].time_s), every[k].data)
