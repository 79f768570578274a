"""The report in a real browser (headless Chromium): the gallery renders, filters, pages, and logs no error.

Skipped, with the reason, where no Chromium is installed (``.ci/run`` installs Debian's). The
screenshot is kept as a test artefact in ``$CNNKIT_ARTIFACTS`` (default: the test's temp folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.browser import chromium, missing

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"no headless browser: {missing()}")

LABELS = ("circle", "square", "star")


def _records(folder: Path, n: int) -> list[dict]:
    """``n`` detect records over small generated pictures; every 10th failed, every 7th without boxes."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        path = folder / f"img_{i:03d}.png"
        if i % 10 == 9:
            records.append(
                {
                    "path": str(path),
                    "task": "detect",
                    "model": "m",
                    "width": None,
                    "height": None,
                    "predictions": [],
                    "time_ms": None,
                    "error": "truncated or corrupt image (test)",
                    "schema_version": 2,
                }
            )
            continue
        Image.fromarray(rng.integers(60, 200, (48, 64, 3), dtype=np.uint8)).save(path)
        preds = (
            []
            if i % 7 == 3
            else [
                {
                    "label": LABELS[(i + k) % 3],
                    "class_id": (i + k) % 3,
                    "score": round(0.3 + 0.69 * ((i * 37 + k) % 100) / 100, 3),
                    "box": [4.0 + k * 8, 6.0, 30.0 + k * 8, 40.0],
                }
                for k in range(1 + i % 3)
            ]
        )
        records.append(
            {
                "path": str(path),
                "task": "detect",
                "model": "m",
                "width": 64,
                "height": 48,
                "predictions": preds,
                "time_ms": 1.5,
                "error": None,
                "schema_version": 2,
            }
        )
    return records


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from cnnkit.report.html import Report

    folder = tmp_path_factory.mktemp("browser")
    records = _records(folder, 130)
    report = Report(folder / "report.html", info={"model": "m", "device": "cpu"})
    for r in records:
        report.add(r)
    report.write()
    driver = chromium()
    try:
        driver.get((folder / "report.html").as_uri())
        yield driver, records, folder
    finally:
        driver.quit()


def _cards(driver) -> list:
    return driver.find_elements("css selector", "#grid .card")


def test_gallery_renders_filters_and_pages_without_console_errors(page):
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver, records, folder = page
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
    assert len(_cards(driver)) == 60
    assert driver.find_element("id", "page").text == "page 1 of 3"
    loaded = driver.execute_script(
        "return Array.from(document.querySelectorAll('#grid img')).slice(0, 8).every(i => i.complete && i.naturalWidth > 0)"
    )
    assert loaded, "thumbnails did not decode"

    Select(driver.find_element("id", "f-class")).select_by_value("star")
    with_star = [r for r in records if any(p["label"] == "star" for p in r["predictions"])]
    assert driver.find_element("id", "count").text == f"{len(with_star)} of {len(records)} image(s)"
    assert all("star" in c.text for c in _cards(driver))

    Select(driver.find_element("id", "f-class")).select_by_value("")
    Select(driver.find_element("id", "f-state")).select_by_value("failed")
    failed = _cards(driver)
    assert len(failed) == sum(r["error"] is not None for r in records) == 13
    assert all("failed" in c.get_attribute("class") for c in failed)

    Select(driver.find_element("id", "f-state")).select_by_value("")
    driver.find_element("id", "f-min").clear()
    driver.find_element("id", "f-min").send_keys("0.9")
    driver.execute_script("document.getElementById('f-min').dispatchEvent(new Event('change'))")
    high = [r for r in records if r["predictions"] and max(p["score"] for p in r["predictions"]) >= 0.9]
    assert len(_cards(driver)) == min(60, len(high))

    driver.find_element("id", "f-min").clear()
    driver.find_element("id", "f-min").send_keys("0")
    driver.execute_script("document.getElementById('f-min').dispatchEvent(new Event('change'))")
    Select(driver.find_element("id", "f-sort")).select_by_value("s")
    first = _cards(driver)[0].text
    lowest = min((r for r in records if r["predictions"]), key=lambda r: max(p["score"] for p in r["predictions"]))
    assert Path(lowest["path"]).name in first
    driver.find_element("id", "next").click()
    assert driver.find_element("id", "page").text == "page 2 of 3"

    _cards(driver)[0].click()
    assert driver.find_element("id", "detail").is_displayed()
    driver.execute_script("document.getElementById('detail').close()")
    driver.execute_script("window.scrollTo(0, 0)")
    Select(driver.find_element("id", "f-sort")).select_by_value("i")

    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    shot = Path(os.environ.get("CNNKIT_ARTIFACTS") or folder) / "report-gallery.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_report_page_is_self_contained(page):
    driver, _, _ = page
    # no file was fetched besides the page (data: URIs are not fetched), and no element points elsewhere
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert [u for u in fetched if not u.startswith("data:")] == []
    sources = driver.execute_script(
        "return Array.from(document.querySelectorAll('img, script[src], link, iframe')).map(e => e.src || e.href)"
    )
    assert sources and all(s.startswith("data:") for s in sources), sources[:3]


def test_a_video_frame_card_names_its_frame_and_each_box_its_track(tmp_path):
    """A frame's card says which frame of the clip it is, and its tags ``#id label score``; the name search finds
    a frame by its number."""
    from selenium.webdriver.support.ui import WebDriverWait

    from cnnkit.report.html import Report

    report = Report(tmp_path / "report.html")
    for i in range(3):
        box = {"label": "circle", "class_id": 0, "score": 0.91, "box": [1.0, 1.0, 9.0, 9.0], "track_id": 3}
        report.add(
            {
                "path": str(tmp_path / "clip.mp4"),
                "frame": 40 + i,
                "time_s": (40 + i) / 25,
                "task": "track",
                "model": "m",
                "width": 64,
                "height": 48,
                "predictions": [box],
                "time_ms": 1.0,
                "error": None,
                "schema_version": 3,
                "counts": {"in": 0, "out": 0},
            }
        )
    report.write()
    driver = chromium()
    try:
        driver.get((tmp_path / "report.html").as_uri())
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        cards = _cards(driver)
        assert len(cards) == 3
        assert "clip.mp4 · frame 42 · 1.68 s" in cards[2].text and "#3 circle 0.91" in cards[2].text
        driver.find_element("id", "f-text").send_keys("frame 41")
        names = [c.find_element("css selector", "figcaption div").text for c in _cards(driver)]
        assert names == ["clip.mp4 · frame 41 · 1.64 s"]
        assert driver.find_element("id", "tracks").is_displayed()
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()
