"""README recipes and examples run as written: shell recipes in docs/recipes, Python blocks, completion."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

RECIPES = REPO / "docs" / "recipes"
README = (REPO / "README.md").read_text()
needs_jq = pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")


@pytest.fixture()
def shell(tmp_path, shapes_images):
    """Run a recipe with bash in tmp_path; ``cnnkit`` is this interpreter's cnnkit."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "cnnkit"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cnnkit "$@"\n')
    shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "IMAGES": str(shapes_images),
        "PYTHONPATH": str(REPO),
    }

    def run(name: str) -> subprocess.CompletedProcess:
        script = (RECIPES / name).read_text()
        assert script.strip() in README, f"README must show docs/recipes/{name} verbatim"
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    return run


@needs_jq
def test_low_confidence_recipe(shell, tmp_path):
    proc = shell("low_confidence.sh")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in (tmp_path / "low_confidence.jsonl").read_text().splitlines()]
    assert all(r["score"] < 0.9 for r in rows)


@needs_jq
def test_shard_recipe(shell, tmp_path, shapes_images):
    proc = shell("shards.sh")
    assert proc.returncode == 0, proc.stderr
    paths = [json.loads(x)["path"] for x in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert paths == sorted(str(p) for p in shapes_images.glob("*.png"))


def test_resume_recipe(shell, tmp_path, shapes_images):
    partial = sorted(shapes_images.glob("*.png"))[:5]
    first = subprocess.run(
        [sys.executable, "-m", "cnnkit", "classify", *map(str, partial), "-o", "results.jsonl"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert first.returncode == 0, first.stderr
    proc = shell("resume.sh")
    assert proc.returncode == 0, proc.stderr
    paths = [json.loads(x)["path"] for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(paths) == sorted(str(p) for p in shapes_images.glob("*.png"))
    assert "skipping 5 input(s)" in proc.stderr


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """Every ```python block of the README runs, from the repository root, except those that say on their
    first line what they need that a test machine lacks (``# needs: a Ray cluster ...``)."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if not b.startswith("# needs:")]
    assert len(blocks) >= 3
    monkeypatch.chdir(REPO)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})


def test_api_docstring_examples():
    import doctest

    import cnnkit.api

    os.chdir(REPO)
    result = doctest.testmod(cnnkit.api, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_shell_completion_lists_commands():
    env = {
        **os.environ,
        "_CNNKIT_COMPLETE": "complete_bash",
        "COMP_WORDS": "cnnkit cla",
        "COMP_CWORD": "1",
        "PYTHONPATH": str(REPO),
    }
    code = "from cnnkit.cli import app; app(prog_name='cnnkit')"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "classify" in proc.stdout, proc.stdout + proc.stderr


@needs_jq
def test_count_detections_recipe(tmp_path, monkeypatch):
    from PIL import Image

    import cnnkit
    from cnnkit.data.shapes import scene

    folder = tmp_path / "scenes"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(scene(321, i).image).save(folder / f"s{i}.png")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cnnkit").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cnnkit "$@"\n')
    (bin_dir / "cnnkit").chmod(0o755)
    script = (RECIPES / "count_detections.sh").read_text()
    assert script.strip() in README
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "IMAGES": str(folder),
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "counts.csv").read_text().splitlines()
    assert lines[0] == "label,count"
    counted = {label: int(n) for label, n in (line.split(",") for line in lines[1:])}
    expected: dict[str, int] = {}
    for rec in cnnkit.detect(str(folder)):
        for p in rec.predictions:
            expected[p["label"]] = expected.get(p["label"], 0) + 1
    assert counted == expected and sum(counted.values()) > 0


def test_readme_reference_matches_its_pages():
    """The task sections of README.md are built from docs/readme/*.md; an edit to one side only fails."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_readme.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
