"""Atomic writes and run folders."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from cnnkit.errors import CnnkitError
from cnnkit.io.files import atomic_path, atomic_write_text, explicit_dir, increment_dir


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_atomic_write_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "m.txt", "x")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_no_overwrite_without_permission(tmp_path):
    atomic_write_text(tmp_path / "b.txt", "1")
    with pytest.raises(CnnkitError, match="already exists"):
        atomic_write_text(tmp_path / "b.txt", "2", overwrite=False)


def test_increment_and_explicit_dirs(tmp_path):
    base = tmp_path / "runs" / "exp"
    assert [increment_dir(base).name for _ in range(3)] == ["exp", "exp2", "exp3"]
    assert increment_dir(base, exist_ok=True) == base
    explicit_dir(tmp_path / "named")
    with pytest.raises(CnnkitError, match="already exists"):
        explicit_dir(tmp_path / "named")
    assert explicit_dir(tmp_path / "named", exist_ok=True).is_dir()


def test_read_only_folder_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        target = tmp_path / "file-not-folder"
        target.write_text("")
        with pytest.raises(CnnkitError, match="cannot"):
            atomic_write_text(target / "x.txt", "1")
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(CnnkitError, match="cannot write"):
        atomic_write_text(ro / "x.txt", "1")


def _claim(base, queue):
    queue.put(str(increment_dir(base)))


def test_concurrent_processes_get_their_own_run_folder(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(tmp_path / "exp", queue)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    got = sorted(queue.get(timeout=5) for _ in procs)
    assert len(set(got)) == 4


def test_a_name_near_the_length_limit_is_written(tmp_path):
    """The temp file beside it (".NAME.XXXXXXXX.tmp") went past the 255-byte name limit, so an output named with
    242–255 bytes failed only once the whole run was done, and every record was lost."""
    final = tmp_path / ("a" * 250 + ".csv")
    atomic_write_text(final, "x\n")
    assert final.read_text() == "x\n" and [p.name for p in tmp_path.iterdir()] == [final.name]
