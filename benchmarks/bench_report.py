"""Size and speed of ``report.html`` for a 1,000-image run: measured, not a pass/fail check.

1,000 JPEG photos of 640×480 (scikit-image photos, cropped), one detect record each with 1–4
boxes (the records are made here, so only the report is timed, not a model). Measures the time to
build and write the page, its size (and the size per image, to extrapolate to 10,000), for both
thumbnail layouts, and the time headless Chromium takes to parse the page and render the first
gallery page (navigation start → the script's ``ready`` mark). Writes ``results/report.md``.

    PYTHONPATH=. python benchmarks/bench_report.py [--n 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._images import photo_folder

LABELS = ("person", "car", "dog", "cup", "rocket")


def records(folder: Path, n: int) -> list[dict]:
    rng = np.random.default_rng(1)
    out = []
    for path in sorted(folder.glob("*.jpg"))[:n]:
        preds = []
        for _ in range(int(rng.integers(1, 5))):
            x1, y1 = float(rng.integers(0, 500)), float(rng.integers(0, 360))
            cid = int(rng.integers(0, len(LABELS)))
            preds.append(
                {
                    "label": LABELS[cid],
                    "class_id": cid,
                    "score": round(float(rng.uniform(0.25, 1)), 4),
                    "box": [x1, y1, x1 + float(rng.integers(30, 140)), y1 + float(rng.integers(30, 120))],
                }
            )
        out.append(
            {
                "path": str(path),
                "task": "detect",
                "model": "bench",
                "width": 640,
                "height": 480,
                "predictions": preds,
                "time_ms": 5.0,
                "error": None,
                "schema_version": 2,
            }
        )
    return out


def build(recs: list[dict], out: Path, assets: str) -> tuple[float, int]:
    from cnnkit.report.html import Report

    t0 = time.perf_counter()
    report = Report(out, assets=assets, exist_ok=True)  # type: ignore[arg-type]
    for r in recs:
        report.add(r)
    report.write()
    seconds = time.perf_counter() - t0
    size = out.stat().st_size + sum(p.stat().st_size for p in out.with_name(f"{out.stem}_files").glob("*"))
    return seconds, size


def first_page_ms(page: Path, runs: int = 3) -> list[float]:
    """Navigation start → gallery's first page rendered (``document.body.dataset.ready``), per fresh load."""
    from selenium.webdriver.support.ui import WebDriverWait
    from tests.browser import chromium, missing

    if missing():
        print(f"no browser: {missing()}")
        return []
    driver = chromium()
    times = []
    try:
        for _ in range(runs):
            driver.get("about:blank")
            driver.get(page.as_uri())
            WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
            times.append(
                driver.execute_script(
                    "performance.mark('ready-seen'); const n = performance.getEntriesByType('navigation')[0];"
                    "return n.domContentLoadedEventEnd;"
                )
            )
    finally:
        driver.quit()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--photos", default=str(Path(tempfile.gettempdir()) / "cnnkit-bench-photos"))
    args = parser.parse_args()
    folder = photo_folder(Path(args.photos), args.n)
    recs = records(folder, args.n)
    lines = [
        f"# report.html for {args.n} images (640×480 JPEGs, 1–4 boxes each)",
        "",
        "| thumbnails | build + write | size | per image | 10,000 images (extrapolated) | first page in Chromium (ms, 3 loads) |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for assets in ("embed", "folder"):
            out = Path(tmp) / assets / "report.html"
            seconds, size = build(recs, out, assets)
            ms = first_page_ms(out)
            lines.append(
                f"| {assets} | {seconds:.1f} s ({args.n / seconds:.0f} img/s) | {size / 1e6:.2f} MB | "
                f"{size / args.n / 1e3:.1f} KB | {size / args.n * 10_000 / 1e6:.0f} MB | "
                f"{', '.join(f'{t:.0f}' for t in ms) or 'no browser'} |"
            )
            print(lines[-1], flush=True)
    result = Path(__file__).with_name("results") / "report.md"
    result.write_text("\n".join(lines) + "\n")
    print(f"written {result}")


if __name__ == "__main__":
    main()
