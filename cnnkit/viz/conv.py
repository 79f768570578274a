"""One convolution and one pooling, the chapter's way: a kernel slides, dot products make a feature map.

Inputs are images (made grey, or kept per channel) or small matrices written as text
(``[1, 3, 2, 4]`` rows, commas or spaces) or ``.npy``, so the chapter's worked examples
run as they are printed. As in every CNN library, "convolution" is cross-correlation:
the kernel is not flipped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import PIL.Image

from cnnkit.config import MAX_KERNEL, MAX_PADDING
from cnnkit.errors import CnnkitError, DecodeError, OptionError, UsageError

KERNELS: dict[str, list[list[float]]] = {
    "edge": [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]],
    "sobel-x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel-y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "blur": [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "identity": [[1]],
}
MATRIX_SUFFIXES = (".txt", ".csv", ".tsv", ".npy")
MAX_PIXELS = 1 << 24  # conv holds several float64 copies of its input: 16 MP of grey is about 1 GB
MAX_TEXT_BYTES = 16 << 20  # a text matrix is parsed into Python floats (~10x its size)


def output_size(n: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """⌊(n + 2p − d·(k−1) − 1) / s⌋ + 1: the size a convolution or pooling window gives."""
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def read_matrix(path: str | Path) -> np.ndarray:
    """A 2-D matrix from ``.npy`` or text: one row per line, numbers split by commas or spaces."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            m = _load_npy(path)
            if m.dtype.kind not in "biuf":  # text or complex numbers: float() would fail, or drop a part
                raise ValueError(f"its values are {m.dtype}, not real numbers")
        else:
            if path.stat().st_size > MAX_TEXT_BYTES:
                raise ValueError(f"over {MAX_TEXT_BYTES >> 20} MB of text; save it as .npy")
            rows = []
            for n, line in enumerate(path.read_text().splitlines(), start=1):
                parts = re.split(r"[,;]", line.split("#")[0].strip().rstrip(",;"))  # one part where no commas
                words = [[w for w in re.split(r"[\s\[\]]+", part) if w] for part in parts]
                if not any(words):
                    continue
                if not all(words):  # `1,,2`: a missing value, not a shorter row
                    raise ValueError(f"line {n} has an empty cell")
                rows.append([float(w) for cell in words for w in cell])
            if len({len(r) for r in rows}) > 1:
                raise ValueError("rows of different lengths")
            m = np.array(rows, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise CnnkitError(f"{path}: not a matrix ({exc})") from exc
    if m.ndim != 2 or m.size == 0:
        raise CnnkitError(f"{path}: expected a non-empty 2-D matrix, got shape {list(m.shape)}")
    m = m.astype(np.float64)
    if not np.isfinite(m).all():  # NaN or inf would spread through the output and make invalid JSON
        raise CnnkitError(f"{path}: not a matrix (it holds NaN or infinity)")
    return m


def _load_npy(path: Path) -> np.ndarray:
    """``np.load`` after reading the header: a 100-byte file must not declare an array of gigabytes."""
    with open(path, "rb") as f:
        fmt = np.lib.format
        version = fmt.read_magic(f)
        shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
    size = math.prod(shape)
    if size > MAX_PIXELS or dtype.hasobject:
        what = "objects" if dtype.hasobject else f"{size:,} values (at most {MAX_PIXELS:,})"
        raise ValueError(f"its header declares shape {list(shape)} of {what}")
    return np.load(path, allow_pickle=False)


def read_image(path: str) -> np.ndarray:
    """An image file as RGB uint8, refused past :data:`MAX_PIXELS` (conv's limit, not --max-pixels)."""
    from cnnkit.io.decode import decode

    try:
        return decode(path, max_pixels=MAX_PIXELS, limit_name="conv's limit").rgb
    except DecodeError as exc:
        raise CnnkitError(f"{path}: {exc}") from None


def resolve_kernel(spec: str) -> tuple[str, np.ndarray]:
    """A named kernel (edge, sobel-x, sobel-y, blur, sharpen, identity) or a matrix file."""
    if spec in KERNELS:
        return spec, np.array(KERNELS[spec], dtype=np.float64)
    if not Path(spec).is_file():
        raise OptionError("kernel", f"not one of {', '.join(KERNELS)} and not a file", spec)
    try:
        k = read_matrix(spec)
    except CnnkitError as exc:  # a bad kernel file is a bad option value (exit 2)
        raise OptionError("kernel", str(exc).removeprefix(f"{spec}: "), spec) from None
    if max(k.shape) > MAX_KERNEL:
        raise OptionError("kernel", f"{k.shape[0]}×{k.shape[1]} is larger than {MAX_KERNEL}×{MAX_KERNEL}", spec)
    return Path(spec).stem, k


@dataclass
class ConvResult:
    """A convolution of an image with one kernel: the settings and the output map."""

    input_size: tuple[int, int]
    kernel_name: str
    kernel: np.ndarray
    stride: int
    padding: int
    conv: np.ndarray  # H×W or H×W×C
    pool: int | None = None
    pooled: np.ndarray | None = None
    steps: list[str] = field(default_factory=list)

    @property
    def output(self) -> np.ndarray:
        return self.pooled if self.pooled is not None else self.conv

    def to_dict(self, with_values: bool) -> dict[str, Any]:
        d: dict[str, Any] = {
            "input_size": list(self.input_size),
            "kernel": self.kernel_name,
            "kernel_size": list(self.kernel.shape),
            "kernel_values": _plain(self.kernel),
            "stride": self.stride,
            "padding": self.padding,
            "conv_size": list(self.conv.shape[:2]),
            "pool": self.pool,
            "output_size": list(self.output.shape[:2]),
            "formula": self.steps,
        }
        if with_values:
            d["output"] = _plain(self.output)
        return d


def _plain(a: np.ndarray) -> list:
    """Nested lists with integers where the values are whole (prints like the chapter)."""
    values = a.astype(np.float64)
    big = np.abs(values) >= 1e12  # rounding multiplies by 1e4: 1e305 became infinity (invalid JSON)
    rounded = np.where(big, values, np.round(np.where(big, 0.0, values), 4))
    if not np.isfinite(rounded).all():
        raise CnnkitError("the output overflows (values past 1.8e308): scale the matrix or kernel down")
    return (
        [[int(v) if float(v).is_integer() and abs(v) < 1e15 else float(v) for v in row] for row in rounded.tolist()]
        if a.ndim == 2
        else [_plain(a[..., c]) for c in range(a.shape[-1])]
    )


def convolve(
    x: np.ndarray,
    kernel: np.ndarray,
    *,
    stride: int = 1,
    padding: int = 0,
    pool: int | None = None,
    kernel_name: str = "kernel",
) -> ConvResult:
    """Slide ``kernel`` over ``x`` (H×W, or H×W×C channel by channel) with torch's conv2d, then max-pool."""
    import torch
    import torch.nn.functional as F

    if stride < 1 or not 0 <= padding <= MAX_PADDING:
        raise UsageError(f"stride must be ≥ 1 and padding from 0 to {MAX_PADDING} (got {stride}, {padding})")
    h, w = x.shape[:2]
    if (h + 2 * padding) * (w + 2 * padding) > MAX_PIXELS:
        raise UsageError(f"a {h}×{w} input padded by {padding} is over conv's limit of {MAX_PIXELS:,} pixels")
    kh, kw = kernel.shape
    oh, ow = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    if oh < 1 or ow < 1:
        raise UsageError(f"a {kh}×{kw} kernel does not fit a {h}×{w} input with padding {padding}")
    steps = [
        f"conv: ⌊({h} + 2·{padding} − {kh}) / {stride}⌋ + 1 = {oh}"
        + ("" if (h, kh) == (w, kw) else f", ⌊({w} + 2·{padding} − {kw}) / {stride}⌋ + 1 = {ow}")
        + f" → {oh}×{ow}",
    ]
    chans = 1 if x.ndim == 2 else x.shape[2]
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).reshape(h, w, chans).permute(2, 0, 1)[None]
    weight = torch.from_numpy(kernel.astype(np.float64))[None, None].repeat(chans, 1, 1, 1)
    out = F.conv2d(t, weight, stride=stride, padding=padding, groups=chans)
    conv = out[0].permute(1, 2, 0).numpy()
    result = ConvResult((h, w), kernel_name, kernel, stride, padding, conv[..., 0] if x.ndim == 2 else conv)
    if pool and pool > 1:
        ph, pw = output_size(oh, pool, pool), output_size(ow, pool, pool)
        if ph < 1 or pw < 1:
            raise OptionError("pool", f"the {oh}×{ow} feature map is smaller than the pooling window", pool)
        pooled = F.max_pool2d(out, pool)[0].permute(1, 2, 0).numpy()
        result.pool, result.pooled = pool, pooled[..., 0] if x.ndim == 2 else pooled
        steps.append(
            f"max pool {pool}×{pool}, stride {pool}: ⌊{oh} / {pool}⌋ = {ph}, ⌊{ow} / {pool}⌋ = {pw} → {ph}×{pw}"
        )
    result.steps = steps
    return result


def image_input(rgb: np.ndarray, keep_colour: bool) -> np.ndarray:
    """uint8 RGB → floats in [0, 1]: grey (ITU-R 601 luma) or the three channels."""
    x = rgb.astype(np.float64) / 255.0
    return x if keep_colour else x @ np.array([0.299, 0.587, 0.114])


def to_picture(a: np.ndarray, kernel: np.ndarray) -> PIL.Image.Image:
    """A feature map as a PIL image: |response| scaled to its 99.5th percentile for zero-sum
    kernels (edge detectors answer with signs; a few strong edges must not darken the rest),
    values clipped to [0, 1] for the others."""
    from PIL import Image

    if math.isclose(float(kernel.sum()), 0.0, abs_tol=1e-9):
        a = np.abs(a)
        top = float(np.percentile(a, 99.5)) or float(a.max())
        a = a / top if top > 0 else a
    pixels = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB")


def save_result(result: ConvResult, out: Path, *, overwrite: bool, numbered: bool = False) -> Path:
    """PNG/JPEG picture, ``.npy`` array, or ``.txt``/``.csv`` matrix, written atomically; a default
    name (``numbered``) that is taken moves on to ``NAME-2.png`` …, so a rerun never fails."""
    from cnnkit.io.files import atomic_path, first_free

    suffix = out.suffix.lower()
    if suffix not in (".npy", ".txt", ".csv", ".tsv", ".png", ".jpg", ".jpeg"):
        raise UsageError(f"{out}: expected .png, .jpg, .npy, .txt or .csv")
    if suffix in (".txt", ".csv", ".tsv") and result.output.ndim != 2:
        raise UsageError(f"{out}: a matrix file holds one channel; drop `rgb` or save .npy/.png")

    def write(target: Path, ow: bool) -> None:
        with atomic_path(target, overwrite=ow) as tmp:
            if suffix == ".npy":
                with open(tmp, "wb") as f:
                    np.save(f, result.output)
            elif suffix in (".txt", ".csv", ".tsv"):
                np.savetxt(tmp, result.output, fmt="%.6g", delimiter="," if suffix == ".csv" else " ")
            else:
                to_picture(result.output, result.kernel).save(tmp, format="PNG" if suffix == ".png" else "JPEG")

    return first_free(out, write, overwrite=overwrite, numbered=numbered)
