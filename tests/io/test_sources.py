"""Sources: files, folders, globs, stdin; order, dedupe, shards; no hangs on FIFOs."""

from __future__ import annotations

import io
import os

import pytest

from cnnkit.errors import UsageError
from cnnkit.io.sources import expand_sources, parse_shard, shard


@pytest.fixture()
def tree(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["b.jpg", "a.PNG", "c.txt", "d.webp", "sub/e.tif", "sub/f.gif"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.jpg").mkdir()
    return tmp_path


def paths(items):
    return [os.path.relpath(i.path) if os.path.isabs(i.path) else i.path for i in items]


def test_folder_sorted_and_filtered(tree):
    names = [os.path.basename(i.path) for i in expand_sources([str(tree)])]
    assert names == ["a.PNG", "b.jpg", "d.webp"]


def test_recursive(tree):
    names = [os.path.relpath(i.path, tree) for i in expand_sources([str(tree)], recursive=True)]
    assert names == ["a.PNG", "b.jpg", "d.webp", os.path.join("sub", "e.tif"), os.path.join("sub", "f.gif")]


def test_glob_and_explicit_file_and_dedupe(tree):
    items = expand_sources([str(tree / "*.jpg"), str(tree / "c.txt"), str(tree / "b.jpg")])
    assert [os.path.basename(i.path) for i in items] == ["b.jpg", "c.txt"]


def test_stdin_list(tree):
    stdin = io.StringIO(f"{tree / 'b.jpg'}\n\n{tree / 'sub'}\n")
    items = expand_sources(["-"], stdin=stdin)
    assert [os.path.basename(i.path) for i in items] == ["b.jpg", "e.tif", "f.gif"]


def test_missing_file_is_kept_to_fail_later(tmp_path):
    items = expand_sources([str(tmp_path / "missing.jpg")])
    assert len(items) == 1


def test_in_memory_objects():
    import numpy as np

    arr = np.zeros((4, 4, 3), np.uint8)
    items = expand_sources([arr, arr])
    assert len(items) == 2 and items[0].data is arr and items[0].path == "<image 0>"


def test_shards_partition_the_list(tree):
    items = expand_sources([str(tree)], recursive=True)
    parts = [shard(items, f"{k}/3") for k in (1, 2, 3)]
    assert sorted(i.path for p in parts for i in p) == sorted(i.path for i in items)
    assert all(not set(a) & set(b) for a in parts for b in parts if a is not b)
    assert shard(items, None) == items


def test_a_source_that_lists_nothing_fails_in_every_shard(tree, tmp_path):
    """A folder that does not exist (or is empty, or a glob matching nothing) stood for the inputs of every shard;
    only shard 1 said so, and the other jobs of an array ended in success with their slices missing."""
    (tmp_path / "empty").mkdir()
    sources = [str(tree), str(tmp_path / "nowhere") + os.sep, str(tmp_path / "empty"), str(tmp_path / "*.none")]
    items = expand_sources(sources)
    parts = [shard(items, f"{k}/3") for k in (1, 2, 3)]
    for part in parts:
        failed = [i.path for i in part if i.error]
        assert failed == sources[1:], failed
    good = [i.path for part in parts for i in part if not i.error]
    assert sorted(good) == sorted(i.path for i in items if not i.error) and len(good) == len(set(good))
    assert [len([i for i in p if not i.error]) for p in parts] == [1, 1, 1]
    lazy = [list(shard(iter(items), f"{k}/3")) for k in (1, 2, 3)]
    assert lazy == parts


@pytest.mark.parametrize("spec", ["0/3", "4/3", "x", "1/0", "1-2", "1/99999999999999999999999", "1/1000001"])
def test_bad_shard(spec):
    with pytest.raises(UsageError):
        parse_shard(spec)


def test_fifo_does_not_hang(tmp_path):
    from cnnkit.errors import DecodeError
    from cnnkit.io.decode import decode

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(DecodeError, match="not a regular file"):
        decode(str(fifo))
    assert [i.path for i in expand_sources([str(tmp_path)])] == [str(fifo)]


def test_named_sources_that_give_nothing_become_failed_items(tmp_path):
    (tmp_path / "empty").mkdir()
    items = expand_sources([str(tmp_path / "empty"), str(tmp_path / "*.nothing*")])
    assert [i.error for i in items] == [
        "folder has no image files (use `recursive=True` for sub-folders)",
        "pattern matches no image files",
    ]


def test_a_walk_does_not_read_cnnkits_outputs(tree, monkeypatch):
    """``./runs`` and the run's save folder are outputs: a recursive walk or ``**`` skips them, naming them reads."""
    (tree / "runs" / "detect" / "exp").mkdir(parents=True)
    (tree / "runs" / "detect" / "exp" / "b-1234.jpg").write_bytes(b"x")
    (tree / "sub" / "out").mkdir()
    (tree / "sub" / "out" / "e-5678.jpg").write_bytes(b"x")
    monkeypatch.chdir(tree)
    inputs = ["a.PNG", "b.jpg", "d.webp", os.path.join("sub", "e.tif"), os.path.join("sub", "f.gif")]
    walked = [os.path.relpath(i.path) for i in expand_sources(["."], recursive=True, outputs=["sub/out"])]
    assert walked == inputs
    globbed = [
        os.path.relpath(i.path) for i in expand_sources(["**/*.jpg"], recursive=True, outputs=[tree / "sub/out"])
    ]
    assert globbed == ["b.jpg"]
    assert os.path.join(".", "sub", "out", "e-5678.jpg") in paths(expand_sources(["."], recursive=True))  # not saved to
    assert paths(expand_sources(["runs"], recursive=True)) == [os.path.join("runs", "detect", "exp", "b-1234.jpg")]


def test_detect_twice_with_save_reads_the_same_inputs(tmp_path, monkeypatch):
    from PIL import Image
    from typer.testing import CliRunner

    from cnnkit.cli import app

    Image.new("RGB", (64, 48), "white").save(tmp_path / "one.png")
    monkeypatch.chdir(tmp_path)
    for run in ("exp", "exp2"):
        result = CliRunner().invoke(app, ["classify", ".", "-r", "--save", "-f", "jsonl"])
        assert result.exit_code == 0, result.output
        assert len([r for r in result.stdout.splitlines() if r.startswith("{")]) == 1
        assert (tmp_path / "runs" / "classify" / run).is_dir()


def test_folders_leave_out_hidden_entries_as_globs_do(tmp_path):
    """macOS's ``._x.jpg`` beside each photo, ``.thumbnails/``, ``.Trash-1000/``: not inputs of a folder; named, read."""
    for name in ("x.jpg", "._x.jpg", ".thumbnails/x.jpg", ".Trash-1000/files/y.jpg", "sub/z.jpg", "sub/.w.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    rel = lambda items: sorted(os.path.relpath(it.path, tmp_path) for it in items)  # noqa: E731
    assert rel(expand_sources([str(tmp_path)])) == ["x.jpg"]
    assert rel(expand_sources([str(tmp_path)], recursive=True)) == ["sub/z.jpg", "x.jpg"]
    assert rel(expand_sources([str(tmp_path / "**" / "*.jpg")], recursive=True)) == ["sub/z.jpg", "x.jpg"]
    assert rel(expand_sources([str(tmp_path / "._x.jpg"), str(tmp_path / ".thumbnails")])) == [
        "._x.jpg",
        ".thumbnails/x.jpg",
    ]


def test_a_name_that_leads_to_no_file_does_not_hide_the_file_it_resolves_to(tree):
    """`a.png/` (a file as a folder) and a broken link took the key of the file their path resolves to: the later
    good spelling was dropped and never read; two broken links to one missing target were one input."""
    (tree / "l1.jpg").symlink_to("gone.jpg")
    (tree / "l2.jpg").symlink_to("gone.jpg")
    items = expand_sources([str(tree / "b.jpg") + "/", str(tree / "b.jpg"), str(tree / "l1.jpg"), str(tree / "l2.jpg")])
    assert [os.path.basename(i.path.rstrip("/")) for i in items] == ["b.jpg", "b.jpg", "l1.jpg", "l2.jpg"]
    assert [os.path.basename(i.path) for i in expand_sources([str(tree / "b.jpg"), str(tree / "b.jpg")])] == ["b.jpg"]


def test_stdin_with_no_paths_and_an_empty_name_are_failed_items():
    """`find … | cnnkit classify -` that found nothing exited 0 with an empty output (an empty folder exits 1), and
    `cnnkit classify "$DIR"` with DIR unset said ": no such file"."""
    assert [(i.path, i.error) for i in expand_sources(["-"], stdin=io.StringIO("\n  \n"))] == [
        ("-", "stdin gave no paths")
    ]
    assert [i.error for i in expand_sources([""])] == ["an empty name is no file or folder"]


def test_a_symlink_loop_in_a_folder_keeps_its_place_in_name_order(tmp_path):
    """A folder's loop entries came after its files; the folder and a glob of it must list the same order."""
    for name in ("a.png", "z.png"):
        (tmp_path / name).write_bytes(b"x")
    os.symlink("m.png", tmp_path / "m.png")  # a link to itself
    folder = [(os.path.basename(i.path), i.error is not None) for i in expand_sources([str(tmp_path)])]
    globbed = [(os.path.basename(i.path), i.error is not None) for i in expand_sources([str(tmp_path / "*.png")])]
    assert folder == globbed == [("a.png", False), ("m.png", True), ("z.png", False)]
