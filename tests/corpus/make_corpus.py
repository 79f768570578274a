"""Build a corpus of bad and awkward inputs (generated here, nothing downloaded).

    python -m tests.corpus.make_corpus OUT

Returns (and prints as JSON) ``{file name: "ok" | "fail"}``: "ok" files must give a
prediction, "fail" files a failed record with a one-line reason. Names are bytes-safe
``os.fsdecode`` strings (one is not valid UTF-8).
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _rgb(h: int = 48, w: int = 64, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def build(out: str | os.PathLike) -> dict[str, str]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    rng = np.random.default_rng(42)
    jpeg, png = _encoded(_rgb(), "JPEG"), _encoded(_rgb(), "PNG")

    def put(name: str, data: bytes, outcome: str) -> None:
        (out / name).write_bytes(data)
        expected[name] = outcome

    def save(name: str, img: Image.Image, outcome: str = "ok", **kw) -> None:
        img.save(out / name, **kw)
        expected[name] = outcome

    put("empty.jpg", b"", "fail")
    put("truncated.jpg", jpeg[: len(jpeg) // 3], "fail")
    put("truncated.png", png[: len(png) // 2], "fail")
    put("random_bytes.jpg", rng.bytes(4096), "fail")
    put("random_bytes.png", rng.bytes(777), "fail")
    put("jpeg_header_then_garbage.jpg", b"\xff\xd8\xff\xe0" + rng.bytes(2000), "fail")
    put("text_file.jpg", b"just some notes, not an image\n", "fail")
    put("svg_named.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>', "fail")
    put("truncated.gif", _encoded(_rgb(), "GIF")[:40], "fail")
    put("bomb_20000x20000.png", _png_header(20000, 20000), "fail")
    put("png_named.jpg", png, "ok")
    put("jpeg_named.png", jpeg, "ok")
    put("bmp_named.webp", _encoded(_rgb(), "BMP"), "ok")
    (out / "folder_named.jpg").mkdir(exist_ok=True)
    expected["folder_named.jpg"] = "fail"
    link = out / "broken_symlink.jpg"
    if not link.is_symlink():
        link.symlink_to(out / "does_not_exist.jpg")
    expected["broken_symlink.jpg"] = "fail"
    fifo = out / "fifo.jpg"
    if not fifo.exists():
        os.mkfifo(fifo)
    expected["fifo.jpg"] = "fail"
    put("unreadable.jpg", jpeg, "ok" if os.geteuid() == 0 else "fail")
    os.chmod(out / "unreadable.jpg", 0)
    save("cmyk.jpg", _rgb().convert("CMYK"))
    save("deep_16bit.png", Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20))
    save("one_pixel.png", Image.new("RGB", (1, 1), (200, 10, 10)))
    save("thin_1x3000.png", Image.new("RGB", (1, 3000), (10, 200, 10)))
    frames = [Image.new("P", (32, 32), i * 40) for i in range(4)]
    frames[0].save(out / "animated.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    expected["animated.gif"] = "ok"
    pages = [_rgb(seed=i) for i in range(3)]
    pages[0].save(out / "multipage.tiff", save_all=True, append_images=pages[1:])
    expected["multipage.tiff"] = "ok"
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif_rotated.jpg", _rgb(40, 80), exif=exif)
    save("grayscale.png", _rgb().convert("L"))
    save("rgba.png", _rgb().convert("RGBA"))
    save("palette.png", _rgb().convert("P"))
    save("gray_alpha.png", _rgb().convert("LA"))
    save("float32.tiff", Image.fromarray(rng.random((20, 30), dtype=np.float32)))
    save("with space.png", _rgb())
    save("日本語の名前.png", _rgb())
    bad_name = os.fsdecode(b"caf\xe9-latin1.png")
    _rgb().save(out / bad_name, format="PNG")
    expected[bad_name] = "ok"
    save("bilevel.bmp", _rgb().convert("1"))
    return expected


if __name__ == "__main__":
    print(json.dumps(build(sys.argv[1]), ensure_ascii=True, indent=1))
