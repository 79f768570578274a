"""Video in and out: files, webcams and stream URLs become frame items; annotated frames become an mp4.

Kept apart from :mod:`cnnkit.io.sources` (which only learns that video names are inputs) so the
walker and the frame reader change independently. A video is one input in the source list and
many frames in a run: :func:`expand_videos` turns each video item into frame items lazily, as the
engine asks for them. A reader thread per video decodes a bounded number of frames ahead
(:data:`PREFETCH`), so a two-hour video holds a few frames in memory, never the video.

Records of frames keep the video as ``path`` and add ``frame`` (0-based index in the video) and
``time_s`` (its presentation time). PyAV (``av``) is imported only when a video is opened.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cnnkit.errors import CnnkitError, OptionError
from cnnkit.io import remote

if TYPE_CHECKING:
    import numpy as np

    from cnnkit.io.sources import Item

log = logging.getLogger("cnnkit")

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".asf"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
MAX_NOMINAL_FPS = 240.0  # above this a stream's "rate" is its clock, not its frames (Matroska's 1 kHz)
NOMINAL_FPS = 30.0
PREFETCH = 8  # decoded frames a reader thread may hold ahead of the engine, per video
MAX_BAD_PACKETS = 25  # consecutive undecodable packets before a stream is given up
MAX_SEEK_SKIP = 300  # packets skipped after a seek looking for a key frame before reading from the beginning
RATE_PROBE_PACKETS = 24  # packets read to find the frame step of a stream whose container measured no rate
REORDER_FRAMES = 16  # how far (in frames) decode order strays from presentation order: a damage mark's reach
MKV_BLOCK_GAP = 64  # bytes between two Matroska packets that are headers (cluster, block group), not data skipped
ENCODERS = ("libx264", "h264", "mpeg4")  # tried in this order for annotated output


def is_video_name(name: str) -> bool:
    """Whether a file name has a video extension."""
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def webcam_device(text: str) -> str | None:
    """The V4L2 device a webcam source names (``0`` when no file has that name → ``/dev/video0``, or
    ``/dev/videoN`` itself), else ``None``."""
    if text.isdigit():
        return None if os.path.lexists(text) else f"/dev/video{text}"
    if text.startswith("/dev/video") and text[len("/dev/video") :].isdigit():
        return text
    return None


def is_stream_url(text: str) -> bool:
    """A webcam (:func:`webcam_device`) or a network stream URL: opened by PyAV, never walked as a file."""
    if webcam_device(text) is not None:
        return True
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):  # an http(s) URL of an image is a remote image, not a stream
        from cnnkit.io.sources import is_image_name

        return not is_image_name(lowered.split("?", 1)[0])
    return lowered.startswith(STREAM_SCHEMES)


def is_video_source(path: str) -> bool:
    """Whether a source is read as a video: a stream URL or a video file name."""
    return is_stream_url(path) or is_video_name(path)


@dataclass(frozen=True)
class VideoOptions:
    """Which frames of each video a run reads: every ``vid_stride``-th from ``start`` to ``end``
    (seconds), at most ``max_frames`` of them."""

    vid_stride: int = 1
    start: float | None = None
    end: float | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        """Each value checked by name, as a Python caller may pass it (a numpy integer is a whole number; a
        string, a bool or 2.5 frames are not)."""
        import numbers

        for name, value in (("vid_stride", self.vid_stride), ("max_frames", self.max_frames)):
            if value is None and name == "max_frames":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise OptionError(name, "must be a whole number of at least 1", value)
            if value < 1:
                raise OptionError(name, "must be at least 1", value)
            object.__setattr__(self, name, int(value))
        for name, seconds in (("start", self.start), ("end", self.end)):
            if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, numbers.Real)):
                raise OptionError(name, "must be a number of seconds", seconds)
        if self.start is not None and not (0 <= self.start < math.inf):  # NaN and infinity included
            raise OptionError("start", "must be 0 or more seconds, and finite", self.start)
        if self.end is not None and not self.end > (self.start or 0.0):  # NaN too: it would end nothing
            raise OptionError(("start", "end"), "end must come after start", self.end)


@dataclass(frozen=True)
class VideoInfo:
    """What a reader learnt when it opened a video: its size, rate and codec."""

    width: int
    height: int
    fps: float
    codec: str
    frames: int | None  # from the container header; None when it does not say
    variable: bool = False  # a variable frame rate: frames are numbered as they come, the saved mp4 keeps times
    # ``frames`` is the container's own count of samples (mp4, mov, AVI), not one read off a duration
    exact: bool = False


def _regular(path: str) -> None:
    """A video named file that is a FIFO or a device would block FFmpeg's read (and the whole batch) until
    something writes to it: refused, as an image of that kind is."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # FFmpeg names the missing file itself
    if not stat.S_ISREG(mode):
        raise CnnkitError("not a regular file (a FIFO or a device); cnnkit reads video files and streams")


STREAM_TIMEOUT_S = 10.0  # a stream, URL or webcam that sends nothing for this long has failed


def _open(path: str, held: ExitStack, data: bytes | None = None) -> Any:
    """``av.open`` for a file, a webcam index (Linux V4L2), a URL or ``data`` (the file's bytes, as Ray Data's
    ``read_binary_files`` gives them), closed with ``held`` (a bucket object's fsspec file with it); a one-line
    :class:`CnnkitError` otherwise."""
    import io

    import av

    device = None if data is not None else webcam_device(path)
    webcam = None if device is None else f"webcam {path}" if device == path else f"webcam {path} ({device})"
    try:
        if device is not None:
            try:
                return held.enter_context(av.open(device, format="v4l2", timeout=STREAM_TIMEOUT_S))
            except ValueError:  # PyAV: no such format in this FFmpeg build
                raise CnnkitError(f"cannot open {webcam} (this FFmpeg has no V4L2 input: webcams need Linux)") from None
        if data is not None:
            return held.enter_context(av.open(io.BytesIO(data)))
        if is_stream_url(path):
            options = {"rtsp_transport": "tcp"} if path.startswith("rtsp") else {}
            return held.enter_context(av.open(path, timeout=STREAM_TIMEOUT_S, options=options))
        if remote.is_remote(path):  # s3://, gs://, file://: FFmpeg reads (and seeks) through fsspec's file
            _regular(remote.local_path(path))  # a file:// URL of a FIFO blocks as its name does
            return held.enter_context(av.open(held.enter_context(_remote_file(path))))
        _regular(path)
        return held.enter_context(av.open(path))
    except av.error.FFmpegError as exc:
        what = webcam or ("stream" if is_stream_url(path) else "video")
        raise CnnkitError(f"cannot open {what} ({_av_reason(exc)})") from None
    except UnicodeDecodeError:  # PyAV decodes the container's metadata as UTF-8: damaged, it is not text
        raise CnnkitError("cannot open video (its metadata is not UTF-8 text: a damaged header?)") from None
    except OSError as exc:
        raise CnnkitError(f"cannot open video ({exc.strerror or exc})") from None


def _remote_file(url: str) -> Any:
    """The object at ``url`` as a seekable file (fsspec); a missing object or backend is one line."""
    try:
        return remote.filesystem(url).open(url, "rb")
    except CnnkitError:
        raise
    except Exception as exc:
        raise CnnkitError(f"cannot open video ({remote.why(exc)})") from None


def _av_reason(exc: BaseException) -> str:
    text = str(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).splitlines()[0]
    if "Immediate exit requested" in text:  # PyAV's timeout interrupting FFmpeg, said in FFmpeg's words
        return f"timed out: nothing received for {STREAM_TIMEOUT_S:g} s"
    return text


def _rate(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _variable(stream: Any) -> bool:
    """Whether the frames are not evenly spaced: the average rate differs from the rate every timestamp is a
    multiple of (FFmpeg's ``r_frame_rate``) by more than 1% (phones, screen recordings, edited clips), or there
    is no average and that rate is only the container's clock."""
    average, base = stream.average_rate, stream.base_rate or stream.guessed_rate
    if not average and base and stream.time_base and float(base) * float(stream.time_base) == 1.0:
        return True  # no average, and the "rate" is the clock's tick (Matroska's 1 kHz): browser and screen recordings
    return bool(average and base and abs(float(average) / float(base) - 1.0) > 0.01)


def _video_stream(container: Any) -> Any:
    """The stream a player shows: not a cover picture, not a one-frame still, the largest (a file may carry a
    thumbnail track before its video); the first of equals."""

    def rank(stream: Any) -> tuple[bool, bool, int]:
        ctx = stream.codec_context
        cover = bool(getattr(getattr(stream, "disposition", None), "attached_pic", False))
        area = int(getattr(ctx, "width", 0) or 0) * int(getattr(ctx, "height", 0) or 0)
        return (not cover, int(getattr(stream, "frames", 0) or 0) != 1, area)

    if not container.streams.video:
        raise CnnkitError("no video stream in the file")
    return max(container.streams.video, key=rank)


def _info(container: Any) -> VideoInfo:
    """The video stream's size, rate, codec and frame count, from the container (nothing decoded)."""
    stream = _video_stream(container)
    ctx = stream.codec_context
    if ctx is None or not getattr(ctx, "name", None):
        raise CnnkitError("unsupported video codec (PyAV's FFmpeg has no decoder for it)")
    variable = _variable(stream)
    grid = stream.base_rate or stream.guessed_rate  # the rate every timestamp is a multiple of
    fps = float(grid) if grid and not variable else _rate(stream)  # a few dropped frames do not move the grid
    if variable and fps > MAX_NOMINAL_FPS:  # only a clock's tick (a browser's WebM): a nominal rate for the
        fps = NOMINAL_FPS  # times of lost frames and the saved video's header; each frame keeps its own time
    frames = int(stream.frames) or None
    exact = frames is not None and not variable
    if frames and fps and stream.duration and stream.time_base and "mp4" in container.format.name.split(","):
        # an edit list (a trim without re-encoding) presents fewer frames than the file holds: the track's own
        # duration says how many (the container's is the longest track's, audio included); a truncated file's
        # header count is not lowered, since its duration is the header's too
        presented = max(1, round(float(stream.duration * stream.time_base) * fps))
        exact = exact and presented >= frames  # a count read off a duration may be one off
        frames = min(frames, presented)
    if frames is None and not variable and fps and _skips_damage(container):
        frames = _tagged_frames(stream, fps, _start_s(stream))
    return VideoInfo(int(ctx.width or 0), int(ctx.height or 0), fps, ctx.name, frames, variable, exact)


def _rate_unmeasured(container: Any) -> bool:
    """No average rate measured, so the rate is the codec's clock tick, which may be a fraction of the frame
    step: an MPEG-4 Part 2 stream at 12.5 fps ticks 25 times a second (MPEG-TS measures no average)."""
    stream = _video_stream(container)
    return not stream.average_rate and bool(stream.base_rate or stream.guessed_rate)


def _stepped(container: Any, info: VideoInfo) -> VideoInfo:
    """``info`` with the rate its packets step at, when the first :data:`RATE_PROBE_PACKETS` decode times all
    step a whole number (2 or more) of the stated rate's ticks; else ``info`` as it is. The container is read."""
    import dataclasses

    import av

    stream = _video_stream(container)
    tb = stream.time_base or Fraction(1, 90000)
    stamps: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.dts is not None and packet.size:
                stamps.append(packet.dts)
            if len(stamps) >= RATE_PROBE_PACKETS:
                break
    except av.error.FFmpegError:
        pass  # damage is the reader's to name; the steps read so far still tell
    steps = [float((b - a) * tb) * info.fps for a, b in itertools.pairwise(stamps) if b > a]
    ticks = round(min(steps)) if len(steps) >= 2 else 1
    if ticks < 2 or any(abs(step / ticks - round(step / ticks)) > 0.01 for step in steps):
        return info
    return dataclasses.replace(info, fps=info.fps / ticks)


def _skips_damage(container: Any) -> bool:
    """Matroska and WebM: the demuxer passes over a damaged cluster to the next one without an error, so the frames it
    held are missed only by their timestamps, and the header has no frame count to miss a damaged end by."""
    return "matroska" in container.format.name.split(",")


def _flags_damage(container: Any) -> bool:
    """MPEG-TS: a lost transport packet leaves no gap in the bytes read, but the demuxer flags the frame whose
    continuity counter skipped as corrupt; a frame lost whole is missed only by its timestamp."""
    return "mpegts" in container.format.name.split(",")


def _stamps_drift(container: Any) -> bool:
    """MPEG program streams (.mpg, .vob): after a seek FFmpeg stamps the frames half a frame late, so each came
    numbered one on; ``start`` is found by reading from the first frame instead."""
    return container.format.name.split(",")[0] == "mpeg"


def _start_s(stream: Any) -> float:
    """The stream's first timestamp in seconds: frame indices count from it."""
    tb, start = stream.time_base or Fraction(1, 90000), getattr(stream, "start_time", None)
    return float(start * tb) if start is not None else 0.0


def _tagged_frames(stream: Any, fps: float, start_s: float = 0.0) -> int | None:
    """A Matroska track's frame count from its ``DURATION`` tag (``HH:MM:SS.nnnnnnnnn``), or ``None`` when it has
    none. FFmpeg's muxer writes the track's end time there, not its length, so a track whose times begin late
    (``10.0`` s) says ``00:00:11`` for one second: a tag past the start counts from the start (a length read
    short only misses a truncation, where the end read as a length would call a whole file truncated)."""
    said = next((v for k, v in (stream.metadata or {}).items() if k.upper() == "DURATION"), "")
    parts = str(said).strip().split(":")
    try:
        seconds = sum(float(p) * 60**i for i, p in enumerate(reversed(parts))) if len(parts) == 3 else 0.0
    except ValueError:
        return None
    if not (math.isfinite(seconds) and seconds > 0):
        return None
    return round((seconds - start_s if seconds > start_s else seconds) * fps)


def read_frames(
    path: str,
    options: VideoOptions = VideoOptions(),
    *,
    max_pixels: int | None = None,
    infos: dict[str, VideoInfo] | None = None,
    data: bytes | None = None,
) -> Generator[Item, None, None]:
    """Frame items of one video (read from ``data`` when given), in order: ``Item(path, rgb, frame=i,
    time_s=t)``, or failed items.

    Opening failures (no such file, no video stream, unknown codec) give one failed item for the
    file; packets that do not decode give a failed item naming the frames they cost, and reading goes
    on (FFmpeg resynchronises on the next key frame) until :data:`MAX_BAD_PACKETS` fail in a row; a
    file that ends before its header's frame count gives a failed item naming the missing frames.
    """
    from cnnkit.io.sources import Item

    with ExitStack() as held:
        try:
            container = _open(path, held, data)
        except CnnkitError as exc:
            yield Item(path, error=str(exc))
            return
        try:
            info = _info(container)
        except CnnkitError as exc:
            yield Item(path, error=str(exc))
            return
        if _rate_unmeasured(container) and not is_stream_url(path):
            info = _stepped(container, info)  # the packets read are read again from the first byte
            held.close()
            container = _open(path, held, data)
        if infos is not None:
            infos[path] = info
        if max_pixels is not None and info.width * info.height > max_pixels:
            yield Item(
                path,
                error=f"{info.width}x{info.height} = {info.width * info.height:,} pixels is over "
                f"the limit of {max_pixels:,} (max_pixels)",
            )
            return
        try:
            yield from _decoded(
                container, lambda again: _open(path, again, data), held, path, info, options, max_pixels
            )
        except _NoRanges as exc:
            held.close()
            yield from _from_copy(path, info, options, max_pixels, str(exc))


def _decoded(
    container: Any,
    reopen: Callable[[ExitStack], Any],
    held: ExitStack,
    path: str,
    info: VideoInfo,
    options: VideoOptions,
    max_pixels: int | None,
) -> Iterator[Item]:
    """:func:`_frames` of ``container`` (held open by ``held``); when a seek finds no way in (:class:`_FromStart`,
    raised before any frame), ``held`` is closed and the video is read again from its first frame in a fresh
    container (``reopen(held)``)."""
    try:
        yield from _frames(container, path, info, options, max_pixels=max_pixels)
    except _FromStart:
        held.close()
        yield from _frames(reopen(held), path, info, options, seek=False, max_pixels=max_pixels)


def _from_copy(
    path: str, info: VideoInfo, options: VideoOptions, max_pixels: int | None, reason: str
) -> Iterator[Item]:
    """The frames of an mp4 URL read from a downloaded copy, when its server ignores byte ranges; else the
    first read's failure (``reason``) is the video's."""
    import av

    from cnnkit.io.sources import Item

    with ExitStack() as files, ExitStack() as held:  # the copy outlives each container read from it
        try:
            copied = None if _serves_ranges(path) else _download(path, files)
            if copied is None:
                yield Item(path, error=f"frame 0: corrupt stream ({reason})", frame=0)
                return
            copy = held.enter_context(av.open(copied))
        except (OSError, av.error.FFmpegError) as exc:
            yield Item(path, error=f"frame 0: cannot read a copy ({_av_reason(exc)})", frame=0)
            return
        yield from _decoded(
            copy, lambda again: again.enter_context(av.open(copied)), held, path, info, options, max_pixels
        )


def frame_picture(path: str, frame: int, time_s: float | None) -> Any:
    """The pixels of frame ``frame`` (at ``time_s``) of the video ``path``, read again: a report's thumbnail of a
    frame record that came without them (from Ray's actors, or from a resumed output)."""
    why = "not found at its time"
    with closing(read_frames(path, VideoOptions(start=time_s or None))) as items:
        for n, item in enumerate(items):  # a frame or two before it may come first, by the clock's rounding
            if item.error is None and item.frame == frame:
                return item.data
            if item.error is not None and (item.frame is None or item.frame >= frame):
                why = item.error
                break
            if n >= 2 or (item.frame is not None and item.frame > frame):
                break
    raise CnnkitError(f"{path}: frame {frame} cannot be read again ({why})")


class _FromStart(Exception):
    """Seeking to ``start`` found no key frame at or before it: the video is read again from its beginning."""


class _NoRanges(Exception):
    """An mp4 over http(s) failed before its first packet: its index (``moov``) may follow its frames on a
    server that ignores byte ranges, so FFmpeg cannot go back to the frames once it has read the index."""


def _serves_ranges(url: str) -> bool:
    """Whether the server answers a byte range with 206 Partial Content (a plain ``python -m http.server``
    sends the whole file with 200)."""
    import urllib.request

    request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
    with urllib.request.urlopen(request, timeout=STREAM_TIMEOUT_S) as response:
        return bool(response.status == 206)


def _download(url: str, held: ExitStack) -> str | None:
    """The whole resource at ``url`` in a temporary file (removed with ``held``), when the server says its
    length (``None`` otherwise: a live stream has none and never ends)."""
    import shutil
    import tempfile
    import urllib.request

    with urllib.request.urlopen(url, timeout=STREAM_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        if not length or not length.isdigit():
            return None
        log.info(
            "%s: the server ignores byte ranges and the mp4's index follows its frames; reading it from a "
            "temporary copy (%.1f MB)",
            url,
            int(length) / 1e6,
        )
        tmp = held.enter_context(tempfile.NamedTemporaryFile(prefix="cnnkit-", suffix=".mp4"))  # noqa: SIM115
        shutil.copyfileobj(response, tmp, 1 << 20)
        tmp.flush()
        return str(tmp.name)


def _frames(
    container: Any, path: str, info: VideoInfo, opts: VideoOptions, *, seek: bool = True, max_pixels: int | None = None
) -> Iterator[Item]:
    """The frames of an opened video as items; see :func:`read_frames`.

    A frame's index is its presentation time on the stream's frame grid, so frames keep their numbers
    whatever the decoder drops. A packet that does not decode is reported when the next good frame shows
    which frames it cost (the decoder's error can surface packets later, and a lost reference frame takes
    its dependants with it): a failed item naming the lost frame or run of them. A run of failed packets is
    owed until gaps as long have been named, since a threaded decoder may hand out good frames between them.

    A variable-rate video has no grid: its frames are numbered as they are decoded (a failed packet counts
    one), as ultralytics numbers them, and ``start`` is found by reading from the first frame, since a seek
    cannot say how many frames it passed.
    """
    import av

    from cnnkit.io.sources import Item

    stream = _video_stream(container)
    stream.thread_type = "AUTO"  # FFmpeg's own frame/slice threads; frames still come out in order
    fps = info.fps or 25.0
    tb = stream.time_base or Fraction(1, 90000)
    t0 = _start_s(stream)
    start = opts.start or 0.0
    # the first frame at or after start, as far as the container's clock tells: a clock of milliseconds (Matroska)
    # stamps a 30 fps frame 2 at 0.067 s, and 0.067 × 30 is past 2; a coarser one (AVI: a tick a frame) is exact
    slack = max(1e-3, min(float(tb) / 2, 5e-4) * fps)
    first_index = max(0, math.ceil(start * fps - slack))  # on the grid, until a frame's own time says
    if info.variable:
        first_index = -1  # known once a frame at or after start is decoded
    # the first frame taken is the first stamped at or after start (a phone's clock puts a frame a tick off the
    # grid: the grid alone skipped the frame at exactly start, or took one just before it)
    placed = start <= 0 or info.variable
    seeking = seek and start > 0 and not info.variable and not _stamps_drift(container)
    seeking = seeking and _seek(container, stream, start + t0, tb)
    sought = seeking
    if not is_stream_url(path):  # webcams included
        # a damaged packet of a file is an error (a failed record naming the frame), not a frame patched up
        # from its neighbours; a live stream joined between key frames is left to FFmpeg's concealment
        stream.codec_context.options = {"err_detect": "explode"}
    by_bytes = _skips_damage(container)
    gaps_lost = (by_bytes or _flags_damage(container)) and not info.variable and not is_stream_url(path)
    # ... but only where the demuxer jumped over bytes (Matroska) or flagged a packet corrupt (MPEG-TS: a continuity
    # counter that skips): a gap in the times of packets that follow each other in the file is the frame rate's (a
    # variable-rate recording remuxed with a constant rate in its header), not damage
    read_to: int | None = None  # where the last packet of any stream ended in the file
    jumped = False  # damage seen since the last video packet: bytes skipped (Matroska), a step in decode times (TS)
    after_jumps: list[int] = []  # the frame index of each video packet read after damage, until frames pass it
    last_dts: int | None = None  # the decode time of the last video packet (MPEG-TS)
    unsaid: list[tuple[int, int]] = []  # gaps on the grid, not named as they came: losses if frames are short
    sent = 0  # video packets given to the decoder: a frame each, as FFmpeg's demuxers and parsers split them
    named = 0  # frames named lost as they came
    count = kept = bad = skipped = retries = late = 0
    last_index, last_t = -1, 0.0
    said_lost = (0, -1)  # the frames the last failed item named
    pending: str | None = None  # the reason of a packet that did not decode, until a frame shows what it cost
    pending_at: int | None = None  # the frame the first such packet is stamped with
    owed = 0  # packets that did not decode, less the frames named lost since

    def demux() -> Iterator[Any]:  # every stream's packets where their byte positions are watched
        return container.demux() if gaps_lost and by_bytes else container.demux(stream)

    packets = demux()
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            if not seeking:
                break
            raise _FromStart from None  # no key frame after the seek point
        except av.error.FFmpegError as exc:
            if count == bad == 0 and _ranged_mp4(path, container):
                raise _NoRanges(_av_reason(exc)) from None  # nothing yielded yet: read_frames tries a copy
            yield Item(path, error=f"frame {last_index + 1}: corrupt stream ({_av_reason(exc)})", frame=last_index + 1)
            return
        if gaps_lost and by_bytes:
            at_byte = packet.pos if packet.pos is not None and packet.pos >= 0 else None
            jumped = jumped or (at_byte is not None and read_to is not None and at_byte > read_to + MKV_BLOCK_GAP)
            read_to = at_byte + packet.size if at_byte is not None else read_to
            if packet.stream is not stream:
                continue
        if gaps_lost and not by_bytes and packet.dts is not None and packet.size:
            # MPEG-TS: a run of lost transport packets spanning whole frames flags none corrupt, but in decode order
            # a constant-rate stream's timestamps step one frame a packet: a longer step is frames lost
            jumped = last_dts is not None and float((packet.dts - last_dts) * tb) > 1.5 / fps
            last_dts = packet.dts
        if gaps_lost and (jumped or packet.is_corrupt):
            # packets run ahead of frames (the decoder holds some): the damage is placed by the packet's time
            at_t = float(packet.pts * tb) - t0 if packet.pts is not None else None
            after_jumps.append(round(at_t * fps) if at_t is not None else last_index + 1)
            jumped = False
        if seeking:  # after a seek, decoding starts at a key frame at or before the start
            skipped += 1
            if not packet.is_keyframe and skipped < MAX_SEEK_SKIP:
                continue
            seeking = False
            at = float(packet.pts * tb) - t0 if packet.pts is not None else None
            if skipped >= MAX_SEEK_SKIP or (at is not None and at > start + 0.5 / fps):
                # no key frame found, or the container's index overshot (MPEG-TS seeks by bytes): seek further
                # back, and at last read the file again from its first byte
                retries += 1
                back = start - 10.0 * 4 ** (retries - 1)
                if retries > 3 or back <= 0 or skipped >= MAX_SEEK_SKIP:
                    raise _FromStart
                seeking, skipped = _seek(container, stream, back + t0, tb), 0
                packets, read_to, last_dts = demux(), None, None
                continue
        sent += 1 if packet.size else 0
        try:
            frames = _decode(packet, stream, again=bad > 0 and packet.is_keyframe)
        except av.error.FFmpegError as exc:
            if sought and count == 0:  # entered at a key frame that is no IDR (open GOP), which strict H.264
                raise _FromStart from None  # refuses with all that follows: read from the first frame instead
            bad += 1
            owed += 1
            if pending is None and packet.pts is not None and not info.variable:
                pending_at = round((float(packet.pts * tb) - t0) * fps)
            pending = pending or _av_reason(exc)
            if bad >= MAX_BAD_PACKETS:
                break
            continue
        bad = 0
        for frame in frames:
            t = float(frame.pts * tb) - t0 if frame.pts is not None else count / fps
            if info.variable:
                index = last_index + 1 + owed
                if first_index < 0 and t >= start - 1e-6:
                    first_index = index
            elif frame.pts is None:  # a timestamp-less stream counts up
                index = max(count, last_index + 1)
            else:
                index = round(t * fps)
                if said_lost[0] <= index <= said_lost[1]:  # handed out late (after a lost reference frame): a
                    count += 1  # frame already named lost is dropped, not numbered after the ones it follows
                    late += 1
                    continue
                index = max(index, last_index + 1)  # time going back (joined recordings): counts on
            count += 1
            skipped_data = bool(after_jumps) and count > 1 and frame.pts is not None
            # damage the frames have passed is spent (a corrupt flag may sit on a packet shown before the gap)
            after_jumps = [m for m in after_jumps if m >= index - REORDER_FRAMES]
            if index > last_index + 1 and (pending is not None or skipped_data):
                what = (
                    f"cannot decode ({pending})"
                    if pending is not None
                    else f"missing (the file goes from frame {last_index} to frame {index}; damaged data skipped?)"
                )
                lost = _lost(path, last_index + 1, index - 1, what, fps, first_index, opts)
                said_lost = (last_index + 1, index - 1)  # its marks stay for reordered frames lost with it
                named += index - last_index - 1
                owed = max(owed - (index - last_index - 1), 0)
                pending = pending if owed else None
                pending_at = pending_at if owed else None
                if lost is not None:
                    yield lost
            elif index > last_index + 1 and not info.variable:  # a gap on the grid: loss only if the count says so
                unsaid.append((last_index + 1, index - 1))
            last_index, last_t = index, t
            if opts.end is not None and t >= opts.end - 1e-6:  # t is a difference of floats: 1.7 - 1.5 < 0.2
                if kept == 0 and said_lost == (0, -1):  # the window holds no frame (none lost in it): said
                    yield Item(path, error=f"no frame from {start:g} s to {opts.end:g} s (frames {fps:g} a second)")
                return
            if not placed:
                if t < start - slack / fps:
                    continue
                first_index, placed = index, True
            if first_index < 0 or not _wanted(index, first_index, opts):
                continue
            if max_pixels is not None and frame.width * frame.height > max_pixels:  # a stream may change size
                size = f"{frame.width}x{frame.height} = {frame.width * frame.height:,}"
                yield Item(  # the stream grew past the limit: its frames from here are not read (each would be)
                    path,
                    error=f"frame {index}: {size} pixels is over the limit of {max_pixels:,} (max_pixels); "
                    "the video is not read further",
                    frame=index,
                    time_s=round(t, 6),
                )
                return
            yield Item(path, data=upright(frame), frame=index, time_s=round(t, 6))
            kept += 1
            if opts.max_frames is not None and kept >= opts.max_frames:
                return
    declared = info.frames or 0
    lost = None
    short = declared if info.exact else sent if not is_stream_url(path) else 0
    if not sought and unsaid and count - late + named < short:
        # fewer frames than the file's own sample count (mp4, mov, AVI) or than the packets the decoder took (a frame
        # each), and gaps between them: those gaps are the frames lost (a B-frame's sample cut from the end of an
        # mp4 leaves the frame shown after it; an MPEG-2 decoder drops a frame whose data is damaged, unsaid)
        counted = f"its header counts {declared}" if info.exact else f"{sent} packets read, {count} frames decoded"
        for first, last in unsaid:
            went = f"goes from frame {first - 1} to frame {last + 1}" if first else f"starts at frame {last + 1}"
            what = f"missing (the file {went}; {counted})"
            gap = _lost(path, first, last, what, fps, first_index, opts)
            if gap is not None:
                yield gap
    if count and pending is not None and pending_at is not None and pending_at <= last_index >= declared - 1:
        # a packet failed, yet every frame came (an MPEG program stream's packets split frames): the frame it
        # is stamped with decoded from damaged data
        lost = _lost(path, pending_at, pending_at, f"decoded from damaged data ({pending})", fps, first_index, opts)
        if lost is not None:
            yield lost
    elif count and pending is not None:  # the last packets did not decode
        end_index = max(declared - 1, last_index + 1)
        lost = _lost(path, last_index + 1, end_index, f"cannot decode ({pending})", fps, first_index, opts)
        if lost is not None:
            yield lost
    elif count and last_index + 1 < declared - (0 if info.exact else 1):  # a duration may count one frame more
        what = f"missing (the file ends after frame {last_index}, the header says {declared} frames; truncated?)"
        lost = _lost(path, last_index + 1, declared - 1, what, fps, first_index, opts)
        if lost is not None:
            yield lost
    if count == 0:
        why = pending or "unsupported codec or an empty stream"
        yield Item(path, error=f"no frame could be decoded ({why})")
    elif kept == 0 and opts.start and lost is None:  # a start past the frames a file lost is said once
        yield Item(path, error=f"no frame from start {opts.start:g} s on (the last is at {last_t:.3g} s)")


def _decode(packet: Any, stream: Any, *, again: bool) -> list[Any]:
    """The frames of ``packet``; with ``again`` (a key frame after packets that failed), a failure is tried once
    more on a flushed decoder: FFmpeg's frame threads, once a packet failed, fail every packet after it (an
    MPEG-TS that lost one frame named that frame and then gave up, its tail unread and unsaid)."""
    import av

    try:
        return cast(list[Any], packet.decode())
    except av.error.FFmpegError:
        if not again:
            raise
    stream.codec_context.flush_buffers()
    return cast(list[Any], packet.decode())


def _ranged_mp4(path: str, container: Any) -> bool:
    """An http(s) URL of an mp4 or mov: the one case :class:`_NoRanges` is about."""
    return path.lower().startswith(("http://", "https://")) and "mp4" in container.format.name.split(",")


def _seek(container: Any, stream: Any, t: float, tb: Fraction) -> bool:
    """Seek to the key frame at or before ``t`` seconds; whether it worked (a live stream cannot)."""
    import av

    try:
        container.seek(int(t / tb), stream=stream, backward=True, any_frame=False)
    except (av.error.FFmpegError, OverflowError):  # OverflowError: a time past what a timestamp holds
        return False  # not seekable (a live stream): frames before start are decoded and dropped
    return True


def _lost(path: str, first: int, last: int, what: str, fps: float, first_index: int, opts: VideoOptions) -> Item | None:
    """A failed item for frames ``first``..``last`` that did not decode or are missing, when any was asked for."""
    from cnnkit.io.sources import Item

    asked = [i for i in range(max(first, first_index), last + 1) if _wanted(i, first_index, opts)]
    if opts.end is not None:
        asked = [i for i in asked if i / fps < opts.end]
    if not asked:
        return None
    which = f"frame {first}" if first == last else f"frames {first}–{last}"
    return Item(path, error=f"{which}: {what}", frame=first, time_s=round(first / fps, 6))


def upright(frame: Any) -> np.ndarray:
    """A decoded frame as RGB, turned as its display matrix says (a phone's portrait video is stored sideways
    with a rotation to show it by, as a photo with its EXIF orientation)."""
    import numpy as np

    rgb = frame.to_ndarray(format="rgb24")
    turns = round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4  # counter-clockwise quarter turns
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _wanted(index: int, first_index: int, opts: VideoOptions) -> bool:
    """Whether frame ``index`` is one the options ask for: from ``start``'s frame on, every ``vid_stride``-th
    (``end`` is checked apart)."""
    return index >= first_index and (index - first_index) % opts.vid_stride == 0


class _Prefetch:
    """Runs a frame generator in its own thread, at most ``size`` frames ahead; closing stops it."""

    _DONE = object()

    def __init__(self, frames: Iterator[Item], size: int = PREFETCH) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._frames = frames
        self._thread = threading.Thread(target=self._run, name="cnnkit-video", daemon=True)
        self._thread.start()

    def _put(self, value: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._frames:
                if not self._put(item):
                    break
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
        finally:
            self._frames.close()  # type: ignore[attr-defined]  # a generator: closes its container
            self._put(self._DONE)

    def __iter__(self) -> Iterator[Item]:
        try:
            while True:
                value = self._queue.get()
                if value is self._DONE:
                    return
                if isinstance(value, BaseException):
                    raise value
                yield value
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def expand_videos(
    items: Iterable[Item],
    options: VideoOptions | None = None,
    *,
    max_pixels: int | None = None,
    infos: dict[str, VideoInfo] | None = None,
) -> Iterator[Item]:
    """``items`` with each video replaced by its frames (lazily, decoded in a reader thread); images pass.

    ``infos`` receives each opened video's :class:`VideoInfo` (the annotated output's rate comes from it).
    """
    opts = options or VideoOptions()
    for item in items:
        encoded = item.data if isinstance(item.data, (bytes, bytearray)) else None  # a video's bytes are read too
        if (item.data is not None and encoded is None) or item.error is not None or not is_video_source(item.path):
            yield item
            continue
        yield from _Prefetch(
            read_frames(
                item.path, opts, max_pixels=max_pixels, infos=infos, data=None if encoded is None else bytes(encoded)
            )
        )


# -- annotated output ---------------------------------------------------------------------------


def pick_encoder() -> str:
    """The first of :data:`ENCODERS` this PyAV build can write (H.264 where it has one)."""
    import av

    for name in ENCODERS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # av raises several kinds for a missing codec
            continue
    raise CnnkitError(f"PyAV has none of the encoders {', '.join(ENCODERS)}; cannot write video")


_MS = Fraction(1, 1000)  # the time base of an mp4 written with each frame's own time


class EncoderRefused(CnnkitError):
    """The encoder will not take this video (its size, say): the video's fault, not the disk's or the run's."""


class VideoWriter:
    """One mp4 written frame by frame into a temporary file, published atomically by :meth:`close`."""

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        width: int,
        height: int,
        *,
        codec: str | None = None,
        overwrite: bool = True,
        crf: int = 23,
    ) -> None:
        import tempfile

        import av

        self.path = Path(path)
        self.overwrite = overwrite
        self.codec = codec or pick_encoder()
        self.frames = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp.mp4", dir=self.path.parent)
        os.close(fd)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as any file the user writes, not mkstemp's 0600
        self._tmp = Path(tmp)
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self._stream: Any = cast(Any, self._container.add_stream(self.codec, rate=rate))  # a VideoStream
        # 4:2:0 needs even sides: an odd-sided video keeps its size in H.264's 4:4:4 (other encoders pad a row)
        self.full_chroma = bool(width % 2 or height % 2) and self.codec == "libx264"
        self.pad = bool(width % 2 or height % 2) and not self.full_chroma
        self._stream.width, self._stream.height = (
            (width + width % 2, height + height % 2) if self.pad else (width, height)
        )
        self._stream.pix_fmt = "yuv444p" if self.full_chroma else "yuv420p"
        if self.codec in ("libx264", "h264"):
            self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.size = (width, height)
        self._first_t: float | None = None
        self._last_pts = -1

    def write(self, rgb: np.ndarray, t: float | None = None, tick: int | None = None) -> None:
        """Add one frame; ``t`` (seconds, from a variable-rate input) places it in time, ``tick`` (frames of
        ``1/fps`` from the first, so that frames lost in between leave their time) on the rate's grid, else
        frames are ``1/fps`` apart."""
        import av
        import numpy as np

        h, w = rgb.shape[:2]
        if (w, h) != self.size:
            raise CnnkitError(f"{self.path}: frame of {w}x{h} in a video of {self.size[0]}x{self.size[1]}")
        if self.pad:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if t is not None:
            if self._first_t is None:  # the first timed frame: the stream counts milliseconds from it
                self._first_t = t
                self._stream.codec_context.time_base = _MS
            self._last_pts = max(self._last_pts + 1, round((t - self._first_t) * 1000))
            frame.pts, frame.time_base = self._last_pts, _MS
        elif tick is not None:
            self._last_pts = max(self._last_pts + 1, tick)
            frame.pts, frame.time_base = self._last_pts, 1 / self._stream.codec_context.framerate
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except OSError as exc:  # PyAV's av.error.OSError: a full disk, say
            from cnnkit.io.files import write_error

            self.abort()
            raise write_error(self.path, exc) from exc
        except av.error.FFmpegError as exc:  # the encoder, opened on the first frame, refuses (x264: a side > 16384)
            self.abort()
            raise EncoderRefused(
                f"{self.path}: {self.codec} cannot encode {self.size[0]}x{self.size[1]} ({_av_reason(exc)[:120]})"
            ) from exc
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder and publish the file (never over an existing one without ``overwrite``)."""
        from cnnkit.io.files import publish

        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            publish(self._tmp, self.path, overwrite=self.overwrite)
        except OSError as exc:
            from cnnkit.io.files import write_error

            self.abort()
            raise write_error(self.path, exc) from exc
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:  # closing a half-written file after a failure
            pass
        self._tmp.unlink(missing_ok=True)


class VideoSaver:
    """Annotated frames of each video of a stream into ``<save dir>/<stem>-<hash>.mp4``, one writer at a time.

    Frames of one video come in order, and a run reads videos one after another, so a writer is
    closed (published) as soon as frames of another video come, and the last at :meth:`close`.
    """

    def __init__(self, saver: Any, options: VideoOptions, infos: dict[str, VideoInfo]) -> None:
        self.saver = saver  # a PictureSaver: its folder and its naming rule
        self.options = options
        self.infos = infos  # filled by the frame readers
        self._current: tuple[str, VideoWriter] | None = None
        self._refused: set[str] = set()  # videos whose annotated mp4 could not be written
        self._resized: set[str] = set()  # videos whose frames changed size midway (warned once)
        self._first_frame: int | None = None  # the current video's first frame written
        self.written: list[Path] = []

    def target(self, path: str) -> Path:
        return self.saver.target(path, ".mp4")

    def write(
        self, path: str, picture: np.ndarray, time_s: float | None = None, frame: int | None = None
    ) -> str | None:
        """Add one annotated frame of video ``path`` (shown at ``time_s`` when the video's rate varies, else at
        its place ``frame`` on the rate's grid, so that the frames after a lost one stay in time); returns the
        mp4's path (published at the end). A video the encoder refuses raises :class:`EncoderRefused` once, for
        the frame that found out (the run goes on with the next video), and is then ``None``."""
        if path in self._refused:
            return None
        if self._current is not None and self._current[0] != path:
            self.finish()  # the last video's file: its failure (a full disk) is the run's, not this video's
        try:
            return self._write(path, picture, time_s, frame)
        except EncoderRefused:
            self._refused.add(path)
            self.abort()
            raise

    def _write(self, path: str, picture: np.ndarray, time_s: float | None, frame: int | None) -> str:
        if self._current is None:
            self._first_frame = frame
            fps = self._fps(path) / self.options.vid_stride
            h, w = picture.shape[:2]
            writer = VideoWriter(self.target(path), fps, w, h)
            log.info(
                "writing %s (%s%s, %.3g fps, %dx%d%s)",
                writer.path,
                writer.codec,
                " 4:4:4" if writer.full_chroma else "",
                fps,
                w,
                h,
                ", padded to even sides" if writer.pad else "",
            )
            self._current = (path, writer)
        writer = self._current[1]
        h, w = picture.shape[:2]
        if (w, h) != writer.size:  # the stream changed size midway: one file has one size
            import numpy as np
            from PIL import Image

            if writer.frames and path not in self._resized:
                self._resized.add(path)
                log.warning(
                    "%s: frames of %dx%d from here on, drawn at %dx%d in %s", path, w, h, *writer.size, writer.path
                )
            picture = np.asarray(Image.fromarray(picture).resize(writer.size, Image.Resampling.BILINEAR))
        info = self.infos.get(path)
        if info is not None and info.variable:
            writer.write(picture, time_s)
        else:
            first = self._first_frame
            tick = None if frame is None or first is None else round((frame - first) / self.options.vid_stride)
            writer.write(picture, tick=tick)
        return str(writer.path)

    def _fps(self, path: str) -> float:
        info = self.infos.get(path)
        return info.fps if info is not None and info.fps > 0 else 25.0

    def finish(self) -> None:
        if self._current is not None:
            _, writer = self._current
            self._current = None
            self.written.append(writer.close())

    def abort(self) -> None:
        if self._current is not None:
            self._current[1].abort()
            self._current = None
