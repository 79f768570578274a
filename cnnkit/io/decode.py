"""Decode one input into an RGB uint8 array, or raise :class:`DecodeError` with a one-line reason.

PIL is the decoder: it is what the benchmark chose (``benchmarks/README.md``): JPEG
``draft()`` decodes a large photo at 1/2–1/8 scale straight from the DCT when the
model needs far fewer pixels, which beats decoding in full and resizing. Plain RGB and
grey JPEGs without an EXIF rotation are decoded by libjpeg-turbo through ``simplejpeg``
when it is installed (the same DCT scaling, without PIL's per-image overhead: 4× faster
for a 640×480 photo at 224 px, which matters once the model runs on a compiled runtime);
PIL still reads the header (size guard, EXIF) and takes every other file.
Only regular files are opened, so a FIFO named ``x.jpg`` cannot hang a run.
"""

from __future__ import annotations

import functools
import io
import math
import os
import stat
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnkit.errors import DecodeError, reason_of
from cnnkit.io import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    import PIL.Image


@dataclass
class Decoded:
    """An image ready for preprocessing; ``width``/``height`` are the original (EXIF-rotated) size.

    ``max_pixels`` is the run's ``--max-pixels``: preprocessing sizes its own memory budget from it
    (:func:`check_budget`), since a small image can still ask for a large allocation downstream.
    """

    path: str
    rgb: np.ndarray
    width: int
    height: int
    max_pixels: int = DEFAULT_MAX_PIXELS
    full: np.ndarray | None = field(default=None, repr=False)
    encoded: bytes | None = field(default=None, repr=False)  # a remote input's bytes, to decode again in full

    @property
    def scale(self) -> tuple[float, float]:
        """Original pixels per decoded pixel, along x and y (1.0 unless drafted). A JPEG drafted at 1/s has
        ⌈w/s⌉ × ⌈h/s⌉ pixels, each s original ones from the top left (the last row and column partly
        outside), so the factor is s itself, not w/⌈w/s⌉ (which put things up to s − 1 px off at the far edge)."""
        h, w = self.rgb.shape[:2]
        s = round(self.width / w) if w else 1
        if s in (2, 4, 8) and -(-self.width // s) == w and -(-self.height // s) == h:
            return float(s), float(s)
        return self.width / w, self.height / h

    @property
    def covered(self) -> tuple[int, int]:
        """Height and width in original pixels that the decoded grid covers: the image's own, or for a draft
        at 1/s, s × its size, which reaches past the image's far edges by less than s pixels."""
        sx, sy = self.scale
        return max(self.height, round(self.rgb.shape[0] * sy)), max(self.width, round(self.rgb.shape[1] * sx))

    @property
    def drafted(self) -> bool:
        """Whether ``rgb`` is a reduced JPEG draft (for the model) rather than the input at its own size."""
        return self.rgb.shape[:2] != (self.height, self.width)

    def release(self) -> None:
        """Let the pixels go, keeping their shape (what sizes and scales are computed from): a read-only
        view of one pixel, so a record's geometry is unchanged and no memory is held."""
        self.rgb = np.broadcast_to(np.zeros((1, 1, *self.rgb.shape[2:]), self.rgb.dtype), self.rgb.shape)
        self.full = self.encoded = None

    def picture(self) -> np.ndarray:
        """The input at its own size, for what a user sees (pictures, overlays, crops): ``rgb`` unless
        drafted, else ``full``, which a drafted input gets here by decoding its file again in full."""
        if not self.drafted:
            return self.rgb
        if self.full is None:
            self.full = decode(self.path, self.encoded, max_pixels=self.max_pixels).rgb
        return self.full


def _pil_open() -> Any:
    """PIL's own ``Image.open``, even when a library imported into this process wrapped it
    (ultralytics does, to pip-install a HEIF plugin on unidentified files)."""
    import sys

    from PIL import Image

    fn = Image.open
    if getattr(fn, "__module__", "").startswith("ultralytics"):
        return getattr(sys.modules.get(fn.__module__), "_image_open", fn)
    return fn


HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")


def _is_heif(path: str, encoded: bytes | None) -> bool:
    """A HEIC/HEIF image by its name or, for bytes, its ``ftyp`` brand."""
    if encoded is not None:
        return encoded[4:8] == b"ftyp" and encoded[8:12] in HEIF_BRANDS
    return path.lower().endswith((".heic", ".heif"))


@functools.cache
def _heif_plugin() -> bool:
    """Registers pillow-heif's opener with Pillow once, when installed (``cnnkit[heif]``)."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _check_file(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DecodeError("no such file or folder" if path.endswith(("/", os.sep)) else "no such file") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except OSError as exc:
        raise DecodeError(f"cannot stat ({exc.strerror or exc})") from None
    except ValueError:  # a NUL byte in the name (a path read from stdin, say): no file can have it
        raise DecodeError("not a file name (it holds a NUL byte)") from None
    if stat.S_ISDIR(st.st_mode):
        raise DecodeError("is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError("not a regular file (FIFO, socket or device)")
    if st.st_size == 0:
        raise DecodeError("empty file")
    if not os.access(path, os.R_OK):
        raise DecodeError("permission denied")


FLOAT_CHUNK = 1 << 20  # pixels a float image is scaled in at a time, in float64


def _float_to_grey(arr: np.ndarray) -> np.ndarray:
    """A float image scaled to 0–255 by its finite range (one inf pixel made the rest black), in float64
    (float32 loses the ends: 3e38 - -3e38 overflows, 254.99998 truncates to 254) a chunk at a time, so it
    costs a few bytes a pixel more than the image. NaN (no data) is the darkest value, ±inf the ends."""
    flat = arr.reshape(-1)
    lo, hi = math.inf, -math.inf
    for i in range(0, flat.size, FLOAT_CHUNK):
        part = flat[i : i + FLOAT_CHUNK]
        part = part[np.isfinite(part)]
        if part.size:
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    if lo > hi:
        raise DecodeError("a floating-point image without one finite pixel")
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = np.empty(flat.size, np.uint8)
    for i in range(0, flat.size, FLOAT_CHUNK):
        part = flat[i : i + FLOAT_CHUNK].astype(np.float64)
        part[np.isnan(part)] = lo
        np.clip(part, lo, hi, out=part)
        part -= lo
        part *= scale
        np.round(part, out=part)
        out[i : i + FLOAT_CHUNK] = part
    return out.reshape(arr.shape)


def to_rgb(img: PIL.Image.Image) -> PIL.Image.Image:
    """Any PIL mode → RGB: 16-bit scaled down (32-bit and signed samples by their range, as floats are), alpha
    composited over white, CMYK/palette converted."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Integer arithmetic, in place: float64 copies cost 24 bytes a pixel (4 GB at --max-pixels).
        arr = np.asarray(img)
        peak = int(arr.max()) if arr.size else 0
        if peak > 65535 or (arr.size and int(arr.min()) < 0):  # 32-bit or signed samples: no 16-bit scale fits
            return Image.fromarray(_float_to_grey(arr), "L").convert("RGB")
        arr = np.clip(arr, 0, 65535 if peak > 255 else 255).astype(np.uint32)
        if peak > 255:
            arr *= 255
            arr //= 65535
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        return Image.fromarray(_float_to_grey(np.asarray(img, dtype=np.float32)), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def _from_memory(obj: Any) -> np.ndarray:
    """PIL image, H×W(×C) ndarray or C×H×W tensor → H×W×3 uint8."""
    from PIL import Image

    if isinstance(obj, Image.Image) and obj.mode != "F":
        return np.asarray(to_rgb(obj))
    if isinstance(obj, Image.Image):  # float pixels in memory: read as a float array is ([0, 1] or [0, 255])
        arr = np.asarray(obj)
    elif hasattr(obj, "detach") and hasattr(obj, "numpy"):
        try:
            t = obj.detach().cpu()
            arr = (
                t.float() if t.is_floating_point() and t.dtype.itemsize < 4 else t
            ).numpy()  # bfloat16 has no NumPy type
        except (RuntimeError, NotImplementedError, TypeError) as exc:  # a meta tensor, an odd dtype
            raise DecodeError(f"in-memory tensor cannot be read ({reason_of(exc, 80)})") from None
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
            arr = np.transpose(arr, (1, 2, 0))
    elif isinstance(obj, (float, complex, np.number)):
        raise DecodeError(f"a number ({obj!r}) is not an image")
    else:
        arr = np.asarray(obj)
    if arr.dtype.kind not in "biuf":
        raise DecodeError(f"in-memory array of dtype {arr.dtype} is not an image")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255  # as PIL's mode 1
    elif arr.dtype != np.uint8:
        if arr.dtype.kind == "f" and arr.size:
            lo, hi = float(arr.min()), float(arr.max())
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise DecodeError("in-memory array holds NaN or infinite values, which are not pixels")
            # a normalised tensor (mean/std: about -2.1 to 2.6) would be read as a dark picture; a resize's overshoot
            # of [0, 1] or [0, 255] pixels (bicubic: -0.13 to 1.15, -33 to 293) is clipped, as it always was
            if lo < -0.5 and hi < 20:
                raise DecodeError(
                    f"in-memory float array has values from {lo:.3g} to {hi:.3g}; pass pixels in [0, 1] or "
                    "[0, 255], not a normalised tensor"
                )
            if hi <= 1.5:
                arr = arr * 255.0
        elif arr.size and int(arr.max()) > 255:  # 16-bit (or wider) levels: scaled as PIL's I;16 is
            arr = np.clip(arr, 0, 65535).astype(np.uint32) * 255 // 65535
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or 0 in arr.shape:
        raise DecodeError(f"in-memory array of shape {tuple(arr.shape)} is not an image")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] == 4:
        arr = np.asarray(to_rgb(Image.fromarray(arr, "RGBA")))
    return np.ascontiguousarray(arr)


def _simplejpeg() -> Any:
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


# A JPEG is decoded at reduced scale (1/2 to 1/8) only while its short side stays at least this many times the
# side a model resizes it to with an antialiased filter (PIL's, torchvision's transforms): the model's input is
# then within JPEG noise of a full decode's (a 12 MP photo for a 224 px classifier: at most 3 levels of 255,
# mean 0.2; with no margin, up to 18, mean 1.3). Models whose reference pipeline resizes without antialiasing
# (YOLO's letterbox, torchvision's R-CNN transform) are never drafted: any reduced decode changes their input.
DRAFT_MARGIN = 3


def draft_side(side: int | None) -> int | None:
    """The decode hint (``min_side``) of a model that resizes its input to ``side`` with antialiasing."""
    return None if side is None else DRAFT_MARGIN * side


def draft_scale(width: int, height: int, min_side: int | None) -> int:
    """PIL's ``draft()`` rule: the largest of 8, 4, 2, 1 that divides both sides to at least ``min_side``."""
    if not min_side:
        return 1
    fits = min(width // min_side, height // min_side)
    return next(s for s in (8, 4, 2, 1) if fits >= s or s == 1)


JPEG_BYTES_PER_PIXEL = 8  # more than any quality setting's JPEG data takes
JPEG_METADATA_BYTES = 16 << 20  # EXIF, ICC profile and other segments a camera or editor adds


def _turbo(path: str, encoded: bytes | None, min_side: int | None, size: tuple[int, int]) -> np.ndarray | None:
    """A JPEG (the file, or its ``encoded`` bytes) of ``size`` decoded by libjpeg-turbo (``simplejpeg``) at PIL's
    draft scale (:func:`draft_scale`; libjpeg's other M/8 factors are not used, so the pixels are PIL's);
    ``None`` when simplejpeg is missing or refuses it (PIL then decodes it and words any error)."""
    sj = _simplejpeg()
    if sj is None:
        return None
    try:
        if encoded is not None:
            data = encoded
        else:  # a JPEG's data is a few bytes a pixel: a file far larger (data after its end) is left to PIL,
            limit = JPEG_BYTES_PER_PIXEL * size[0] * size[1] + JPEG_METADATA_BYTES  # which reads only to the end
            with open(path, "rb") as f:
                data = f.read(limit + 1)
            if len(data) > limit:
                return None
        s = draft_scale(size[0], size[1], min_side)
        rgb = sj.decode_jpeg(data, colorspace="RGB", min_height=-(-size[1] // s), min_width=-(-size[0] // s))
    except ValueError as exc:
        if "premature end of data segment" in str(exc):  # its picture data stops short: PIL fills the rest grey
            raise DecodeError(f"truncated or corrupt image ({reason_of(exc, 120)})") from None
        return None  # libjpeg's other warnings (extraneous bytes before a marker) are common in cameras' files
    except (OSError, MemoryError):
        return None
    return rgb if rgb.ndim == 3 and rgb.shape[2] == 3 else None


PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type


def _check_png_rows(img: PIL.Image.Image, path: str, encoded: bytes | None) -> None:
    """Refuse a PNG whose compressed data ends cleanly before its last row: Pillow leaves the rows it never got
    zero (black) and says nothing. Only an image whose bottom row is all zero is checked, by inflating its data
    again and counting the bytes (a full inflate of every PNG would double its decode time)."""
    import struct
    import zlib

    box = img.getbbox(alpha_only=False)
    if box is not None and box[3] == img.size[1]:
        return
    data = encoded
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    pos, idat, header = 8, [], b""
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IHDR":
            header = data[pos + 8 : pos + 8 + size]
        elif kind == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + size])
        elif kind == b"IEND":
            break
        pos += 12 + size
    if len(header) < 13 or header[9] not in PNG_CHANNELS:
        return
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header[:13])
    bits = depth * PNG_CHANNELS[colour]
    # Adam7's passes: (first column, column step, first row, row step); one pass when not interlaced
    passes = [(0, 8, 0, 8), (4, 8, 0, 8), (0, 4, 4, 8), (2, 4, 0, 4), (0, 2, 2, 4), (1, 2, 0, 2), (0, 1, 1, 2)]
    expected = 0
    for x0, dx, y0, dy in passes if interlace else [(0, 1, 0, 1)]:
        cols, rows = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        expected += rows * (1 + -(-cols * bits // 8)) if cols else 0
    inflater = zlib.decompressobj()
    got = 0
    try:
        for part in idat:
            got += len(inflater.decompress(part, max(1, expected + 1 - got)))
            if got > expected:
                break
    except zlib.error:
        return  # damaged data is Pillow's to word, and it did
    if got < expected:
        raise DecodeError(f"truncated or corrupt image (its data ends after {got:,} of {expected:,} bytes)")


def decode(
    path: str,
    data: Any = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    limit_name: str = "`max_pixels`",
) -> Decoded:
    """Decode ``path`` (or the in-memory ``data``).

    ``min_side``: the smallest side the model needs; JPEGs are then drafted to the
    largest 1/2ⁿ scale that keeps both sides at least that big. ``limit_name`` names
    ``max_pixels`` in the refusal (a command without that option has its own limit).
    A URL (``s3://``, ``https://`` …) is read through :mod:`cnnkit.io.remote`; ``data`` may also be an
    encoded file's bytes, decoded by the same rules as a file.
    """
    from cnnkit.io import remote

    if data is None and remote.is_remote(path):
        if remote.scheme(path) == "file":  # a FIFO or a device named by URL is refused as by its name, not read
            _check_file(remote.local_path(path))
        data = remote.read(path)
    encoded = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else None
    if data is not None and encoded is None:
        rgb = _from_memory(data)
        return Decoded(path, rgb, rgb.shape[1], rgb.shape[0], max_pixels)
    from PIL import Image, ImageOps, UnidentifiedImageError

    if encoded is None:
        _check_file(path)
    elif not encoded:
        raise DecodeError("empty file")
    heif = _is_heif(path, encoded)
    heif_readable = heif and _heif_plugin()
    if max_pixels > DEFAULT_MAX_PIXELS and Image.MAX_IMAGE_PIXELS and max_pixels > 2 * Image.MAX_IMAGE_PIXELS:
        # asked for more than Pillow's default allows: Pillow refuses past twice this before our own check (a
        # host program's stricter setting is kept at cnnkit's default)
        Image.MAX_IMAGE_PIXELS = -(-max_pixels // 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _pil_open()(path if encoded is None else io.BytesIO(encoded)) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise DecodeError(f"{w}x{h} = {w * h:,} pixels is over the limit of {max_pixels:,} ({limit_name})")
                if w == 0 or h == 0:
                    raise DecodeError("image has zero size")
                orientation = img.getexif().get(0x0112, 1) if hasattr(img, "getexif") else 1
                if img.format == "JPEG" and img.mode in ("RGB", "L") and orientation == 1:
                    fast = _turbo(path, encoded, min_side, (w, h))
                    if fast is not None:
                        return Decoded(path, np.ascontiguousarray(fast), int(w), int(h), max_pixels, encoded=encoded)
                s = draft_scale(w, h, min_side) if img.format == "JPEG" else 1
                while orientation != 1 and s > 1 and (w % s or h % s):
                    s //= 2  # a turn or flip moves the draft's partial last row or column to the top or left
                if s > 1:
                    img.draft("RGB", (w // s, h // s))
                img.load()
                if img.format == "PNG":
                    _check_png_rows(img, path, encoded)
                if orientation != 1:  # a TIFF is turned by Pillow itself (its size said so before the load)
                    orientation = img.getexif().get(0x0112, 1)
                img = ImageOps.exif_transpose(img) if orientation != 1 else img
                if orientation in (5, 6, 7, 8):
                    w, h = h, w
                rgb = np.asarray(to_rgb(img))
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"decompression bomb refused ({exc})") from None
    except UnidentifiedImageError:
        if heif and not heif_readable:
            raise DecodeError("a HEIC/HEIF image: reading it needs pillow-heif (pip install 'cnnkit[heif]')") from None
        raise DecodeError("not a recognised image format") from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        MemoryError,
        IndexError,
        KeyError,
        TypeError,
        ImportError,
    ) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            raise DecodeError(f"truncated or corrupt image ({text})") from None
        raise DecodeError(f"cannot decode ({text})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DecodeError(f"decoded to unexpected shape {rgb.shape}")
    return Decoded(path, np.ascontiguousarray(rgb), int(w), int(h), max_pixels, encoded=encoded)


BUDGET_FACTOR = 4  # float values per pixel that --max-pixels allows: the image's three channels and one more
BUDGET_FLOOR = 1 << 28  # never less than this (1 GiB of float32), so a small --max-pixels still runs a model


def value_budget(max_pixels: int) -> int:
    """How many values one preprocessing step (or the inputs in flight) may hold under ``--max-pixels``."""
    return max(BUDGET_FACTOR * max_pixels, BUDGET_FLOOR)


def check_budget(decoded: Decoded, values: int, what: str) -> None:
    """Refuse, as this image's failed record, a step that would hold more than :func:`value_budget`
    values; the one-line reason says what and how much, before anything is allocated."""
    budget = value_budget(decoded.max_pixels)
    if values > budget:
        raise DecodeError(
            f"{decoded.width}x{decoded.height}: {what} would hold {values:,} values, over the budget of "
            f"{budget:,} (from `max_pixels` {decoded.max_pixels:,})"
        )
