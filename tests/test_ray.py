"""``--engine ray`` on a real local Ray head (2 CPUs, started once per session): the records of a local
run, over local files and over S3, failed records included; cnnkit's predictor in users' own pipelines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.fixtures.scaleout import comparable

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_ray_gives_the_local_records_over_files_and_s3(ray_cluster, s3_images):
    import cnnkit
    import cnnkit.ray

    folder, prefix = s3_images
    local = [comparable(r.to_dict()) for r in cnnkit.classify([str(folder)], model="shapes-cnn", topk=2)]
    assert sum(r["error"] is not None for r in local) == 2
    on_files = list(cnnkit.ray.predict([str(folder)], "classify", actors=2, batch_size=4, model="shapes-cnn", topk=2))
    assert [comparable(r.to_dict()) for r in on_files] == local
    on_s3 = list(
        cnnkit.ray.predict([prefix], "classify", actors=1, batch_size=4, shard_spec="2/3", model="shapes-cnn", topk=2)
    )
    assert [comparable(r.to_dict()) for r in on_s3] == local[1::3]


def test_cli_engine_ray_writes_parquet_like_local(ray_cluster, s3_images, tmp_path):
    """The CLI with ``--engine ray``: the same exit code, end summary (counts and failed inputs) and records
    as the local run, merged in one file."""
    from typer.testing import CliRunner

    from cnnkit.cli import app
    from cnnkit.io.parquet import read_records

    folder, prefix = s3_images
    runner = CliRunner()
    base = ["classify", "-m", "shapes-cnn", "-k", "1", "-b", "4"]
    local = runner.invoke(app, [*base, str(folder), "-o", str(tmp_path / "local.parquet")], catch_exceptions=False)
    on_ray = runner.invoke(
        app,
        [*base, prefix, "-o", str(tmp_path / "ray.parquet"), "--engine", "ray", "--address", "auto", "--actors", "2"],
        catch_exceptions=False,
    )
    assert local.exit_code == on_ray.exit_code == 1
    summary = local.stderr[local.stderr.index("14 image(s), 2 failed") :]
    assert summary.count("\n  ") == 2  # the two bad files, each with its reason
    assert on_ray.stderr[on_ray.stderr.index("14 image(s)") :].replace(prefix, "") == summary.replace(f"{folder}/", "")
    assert [comparable(r) for r in read_records(tmp_path / "ray.parquet")] == [
        comparable(r) for r in read_records(tmp_path / "local.parquet")
    ]


def test_predict_udf_in_a_pipeline_of_ones_own(ray_cluster, shapes_images):
    """``cnnkit.ray.Predict`` after ``read_binary_files``: the bytes are decoded as the file would be."""
    import json

    import ray.data

    import cnnkit
    from cnnkit.ray import Predict

    ds = ray.data.read_binary_files(str(shapes_images), include_paths=True)
    out = ds.map_batches(
        Predict,
        fn_constructor_kwargs={"task": "classify", "options": {"model": "shapes-cnn", "backend": "torch"}},
        batch_size=6,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=1,
    )
    rows = sorted((json.loads(r["record"]) for r in out.iter_rows()), key=lambda r: r["path"])
    local = [r.to_dict() for r in cnnkit.classify([str(shapes_images)], model="shapes-cnn")]
    assert [comparable(r) for r in rows] == [comparable(r) for r in local]


def test_cli_parts_and_usage_errors(ray_cluster, s3_images, tmp_path):
    """``--parts``: Parquet part files written by the workers, together the local records; Ray's options
    without ``--engine ray`` are a usage error."""
    from typer.testing import CliRunner

    from cnnkit.cli import app
    from cnnkit.io.parquet import read_records

    folder, _ = s3_images
    runner = CliRunner()
    base = ["classify", "-m", "shapes-cnn", "-k", "1", "-b", "4", "-q", str(folder)]
    res = runner.invoke(
        app, [*base, "--engine", "ray", "--parts", "-o", str(tmp_path / "parts")], catch_exceptions=False
    )
    assert res.exit_code == 1
    parts = sorted((tmp_path / "parts").glob("*.parquet"))
    assert parts
    rows = sorted((comparable(r) for part in parts for r in read_records(part)), key=lambda r: r["path"])
    local = runner.invoke(app, [*base, "-o", str(tmp_path / "local.parquet")], catch_exceptions=False)
    assert local.exit_code == 1
    assert rows == sorted((comparable(r) for r in read_records(tmp_path / "local.parquet")), key=lambda r: r["path"])
    stray = runner.invoke(app, [*base, "--actors", "2"])
    assert stray.exit_code == 2 and "--actors: only with --engine ray" in stray.output


def test_a_killed_actor_is_restarted_and_the_run_completes(ray_cluster, tmp_path):
    """An actor process killed mid-run (SIGKILL, as a crash or an OOM kill would): Ray starts a new one,
    retries its batches, and the run still gives exactly the local records.

    A watcher thread kills the pool's actor as soon as it is up, before the driver has any record (one
    actor, 96 images, batch size 1), so every record is work the restarted actor redid."""
    import os
    import signal
    import threading
    import time

    from PIL import Image

    # the GCS actor table of this session's cluster (ray.util.state would need the dashboard, which
    # neither the ray extra nor the fixture starts)
    from ray._private.state import actors

    import cnnkit
    import cnnkit.ray
    from cnnkit.data.shapes import scene

    for i in range(96):
        Image.fromarray(scene(4, i, size=128).image).save(tmp_path / f"scene_{i:02d}.png")
    options = {"model": "shapes-unet", "backend": "torch"}
    local = [comparable(r.to_dict()) for r in cnnkit.segment([str(tmp_path)], **options)]

    def map_workers(state: str | None = None) -> dict[str, dict]:
        return {k: a for k, a in actors(actor_state_name=state).items() if "MapWorker" in a["ActorClassName"]}

    before = set(map_workers())  # the pools of earlier tests in this session
    killed: dict = {}
    stop = threading.Event()

    def kill_when_up() -> None:
        while not stop.is_set():
            new = [a for k, a in map_workers("ALIVE").items() if k not in before]
            if new:
                time.sleep(0.5)  # constructing, or at work on its first block
                os.kill(new[0]["Pid"], signal.SIGKILL)
                killed.update(new[0], at=time.monotonic())
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_when_up, daemon=True)
    watcher.start()
    records: list[dict] = []
    first_at = None
    try:
        for record in cnnkit.ray.predict([str(tmp_path)], "segment", actors=1, batch_size=1, workers=1, **options):
            first_at = first_at or time.monotonic()
            records.append(comparable(record.to_dict()))
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert killed and first_at is not None and killed["at"] < first_at  # killed before any record was back
    assert records == local
    after = actors(killed["ActorID"])
    assert after["NumRestarts"] >= 1 and after["Pid"] != killed["Pid"], after


@pytest.mark.parametrize("entry", ["predict_items", "write_parts"])
def test_both_entries_check_options_before_a_cluster(entry, tmp_path):
    """Records and part files start the same checked job: bad scale options or a wrong task fail before Ray
    starts (no cluster fixture here: a started one would make the check pointless)."""
    from cnnkit import ray as on_ray
    from cnnkit.errors import OptionError
    from cnnkit.io.sources import Item

    fn = getattr(on_ray, entry)
    args = [[Item(str(tmp_path / "a.png"))], "classify"] + ([tmp_path / "parts"] if entry == "write_parts" else [])
    with pytest.raises(OptionError, match="at least one actor"):
        list(fn(*args, actors=0))
    with pytest.raises(OptionError, match="expected one of"):
        list(fn(args[0], "nope", *args[2:]))
    assert not (tmp_path / "parts").exists()


@pytest.fixture(scope="module")
def short_video(tmp_path_factory) -> str:
    pytest.importorskip("av")
    from cnnkit.data.moving import write_sequences

    out = tmp_path_factory.mktemp("ray-video")
    write_sequences(out, 1, seed=3, frames=16)
    return str(out / "shapes-000.mp4")


def test_videos_on_ray_give_the_local_frame_records_and_track_counts(ray_cluster, short_video, shapes_images):
    """A video is one row, read by one actor: its frames' records (stride, track ids, running line counts)
    are the local run's, in order, between the images' records."""
    import cnnkit
    import cnnkit.ray

    image = str(sorted(shapes_images.iterdir())[0])
    options = {"count_line": "128,0,128,256", "threads": 1}
    local = [comparable(r.to_dict()) for r in cnnkit.track([image, short_video], vid_stride=2, **options)]
    assert [r.get("frame") for r in local] == [None, 0, 2, 4, 6, 8, 10, 12, 14]
    assert all("counts" in r for r in local[1:]) and any(p.get("track_id") for p in local[3]["predictions"])
    on_ray = list(cnnkit.ray.predict([image, short_video], "track", actors=1, batch_size=4, vid_stride=2, **options))
    assert [comparable(r.to_dict()) for r in on_ray] == local


def test_cli_engine_ray_reads_video_frames_as_asked(ray_cluster, short_video, tmp_path):
    import json

    from typer.testing import CliRunner

    from cnnkit.cli import app

    out = tmp_path / "frames.jsonl"
    args = ["detect", short_video, "--vid-stride", "5", "--start", "0.2", "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--engine", "ray", "--address", "auto"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["frame"] for line in out.read_text().splitlines()] == [5, 10, 15]
    assert "3 record(s) (3 video frame(s)), 0 failed" in result.stderr


def test_the_ray_udf_gives_each_row_its_records_in_chunks(short_video, shapes_images, monkeypatch):
    """``Predict`` itself (no cluster): a video row becomes its frames' rows, output in chunks of
    ``CHUNK`` records, each carrying its input row's columns; a path given twice gets its record twice."""
    import json

    import numpy as np

    from cnnkit import ray as on_ray

    monkeypatch.setattr(on_ray, "CHUNK", 4)
    image = str(sorted(shapes_images.iterdir())[0])
    udf = on_ray.Predict("detect", {"threads": 1}, video={"max_frames": 6})
    batch = {"path": np.array([image, short_video, image]), "index": np.array([7, 8, 9])}
    chunks = list(udf(batch))
    assert [len(c["record"]) for c in chunks] == [4, 4]
    rows = [(int(i), json.loads(r)) for c in chunks for i, r in zip(c["index"], c["record"], strict=True)]
    assert [(i, r["path"], r.get("frame")) for i, r in rows] == [
        (7, image, None),
        *[(8, short_video, f) for f in range(6)],
        (9, image, None),
    ]
    assert rows[-1][1] == rows[0][1]
    with_bytes = {"path": np.array([image, image]), "bytes": np.array([Path(image).read_bytes()] * 2, dtype=object)}
    read_twice = [json.loads(r) for c in udf(with_bytes) for r in c["record"]]  # bytes rows are each read
    assert [(r["path"], r["error"]) for r in read_twice] == [(image, None), (image, None)]
    # a video row from read_binary_files (bytes, no file to open): its frames, as from its path
    video_bytes = {"path": np.array([short_video]), "bytes": np.array([Path(short_video).read_bytes()], dtype=object)}
    frames = [json.loads(r) for c in udf(video_bytes) for r in c["record"]]
    assert [(r["frame"], r["error"]) for r in frames] == [(f, None) for f in range(6)]
    assert [r["predictions"] for r in frames] == [r["predictions"] for _, r in rows[1:7]]


def test_bad_model_or_address_fails_before_an_output_is_opened(tmp_path):
    """A weights file that is not there, an unknown model or a cluster address with no cluster fail with one
    line before the output file is opened, so the corrected rerun is not refused by an empty file."""
    from typer.testing import CliRunner

    from cnnkit.cli import app

    (tmp_path / "a.png").write_bytes((SAMPLES / "shape_0_triangle.png").read_bytes())
    runner = CliRunner()
    base = ["classify", str(tmp_path / "a.png"), "--engine", "ray", "-o", str(tmp_path / "out.jsonl")]
    for extra, said in (
        (["-w", str(tmp_path / "gone.safetensors")], "no such file"),
        (["-m", "nosuchmodel"], "unknown classify model"),
        (["--address", "127.0.0.1:1"], "--address 127.0.0.1:1: no Ray cluster there"),  # Ray retried for ever
        (["--address", "bogus"], "--address bogus: expected HOST:PORT"),  # was Ray's ValueError traceback
        (["--address", "host:63x"], "expected HOST:PORT"),
        (["--parts", "--report", str(tmp_path / "r.html")], "--parts does not resume"),  # wrote no report
        (["--parts", "-o", "s3://bucket/parts/"], "not to a URL"),  # failed late, AssertionError: 0
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2 if "address" in said or "parts" in " ".join(extra) else result.exit_code != 0
        assert said in result.output and "Traceback" not in result.output, result.output
        assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "r.html").exists()
    # the default model named by the environment (or cnnkit.toml) is checked as `-m` is: it was each actor's
    # traceback, and an empty output file
    result = runner.invoke(app, base, env={"CNNKIT_MODEL_CLASSIFY": "nosuchmodel"})
    assert "unknown classify model 'nosuchmodel'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_the_actors_run_the_drivers_default_model(ray_cluster, shapes_images, monkeypatch):
    """Actors on a cluster joined by address (started elsewhere, without the driver's environment or
    cnnkit.toml) ran their own default model, silently: they run the driver's, as a local run would."""
    from cnnkit import ray as on_ray

    monkeypatch.setenv("CNNKIT_MODEL_CLASSIFY", "lenet5")  # set after the cluster started: its workers lack it
    image = str(sorted(shapes_images.iterdir())[0])
    (record,) = list(on_ray.predict([image], "classify"))
    assert record.error is None and record.model == "lenet5"


def test_what_ray_says_stays_off_stdout_and_an_actors_cnnkit_error_keeps_its_line(capsys):
    """stdout is the records' channel: Ray's notices (a worker died, a task retried) go to stderr; an actor's
    own error comes back as its one line and exit code, not as ``ray: the job failed (…)``."""
    import importlib

    from cnnkit import ray as on_ray
    from cnnkit.errors import CnnkitError, UsageError

    pytest.importorskip("ray")
    worker = importlib.import_module("ray._private.worker")
    before = worker.print_to_stdstream
    try:
        on_ray._notices_to_stderr()
        on_ray._notices_to_stderr()  # once only
        worker.print_to_stdstream({"lines": ["A worker died"], "pid": "raylet", "is_err": False}, False)
    finally:
        worker.print_to_stdstream = before
    out, err = capsys.readouterr()
    assert out == "" and "A worker died" in err
    failed = RuntimeError("Traceback …\nUnserializableException: cnnkit.errors.OptionError: device 'cuda': no CUDA")
    with pytest.raises(UsageError, match="^device 'cuda': no CUDA$"), on_ray._job_failure():
        raise failed
    with pytest.raises(CnnkitError, match="ray: the job failed"), on_ray._job_failure():
        raise RuntimeError("something of Ray's")


def test_without_address_the_cluster_is_private_whatever_ray_address_says(monkeypatch):
    """cnnkit starts its own cluster then (`address="local"`), but with $RAY_ADDRESS set took it for a joined one:
    an actor larger than the machine waited for ever instead of being refused."""
    from types import SimpleNamespace

    from cnnkit import ray as on_ray
    from cnnkit.errors import OptionError
    from cnnkit.io.sources import Item

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6499")
    monkeypatch.setattr(on_ray, "_check_model", lambda *a: None)
    monkeypatch.setattr(on_ray, "init", lambda address: SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0}))
    with pytest.raises(OptionError, match="cpus_per_actor 4"):
        on_ray._pipeline([Item("a.png")], "classify", cpus_per_actor=4.0)


def test_actors_asking_more_than_the_machine_has_are_refused_on_a_private_cluster(caplog):
    """They would wait for ever in silence; a joined cluster may grow, so there it is a warning."""
    import logging
    from types import SimpleNamespace

    from cnnkit import ray as on_ray
    from cnnkit.errors import OptionError

    fake = SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0})
    with pytest.raises(OptionError, match="gpus_per_actor 1.0: more than this machine has \\(0 GPU\\)"):
        on_ray._check_resources(fake, True, 1, 1.0, 1.0)
    with pytest.raises(OptionError, match="cpus_per_actor 3"):
        on_ray._check_resources(fake, True, 1, 0.0, 3.0)
    on_ray._check_resources(fake, True, 4, 0.0, 2.0)  # enough: no error
    logging.getLogger("cnnkit").addHandler(caplog.handler)
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        on_ray._check_resources(fake, False, 1, 1.0, 1.0)
    assert "the actors wait until it has more" in caplog.text


def test_relative_paths_reach_workers_that_run_elsewhere(ray_cluster, shapes_images, tmp_path, monkeypatch):
    """The cluster's workers run in their own folder: a relative local path is read by its absolute path,
    and the record keeps the path as given."""
    import cnnkit
    from cnnkit import ray as on_ray

    monkeypatch.chdir(shapes_images.parent)
    rel = os.path.join(shapes_images.name, sorted(p.name for p in shapes_images.iterdir())[0])
    [local] = cnnkit.classify([rel], model="shapes-cnn")
    monkeypatch.chdir(tmp_path)  # the driver elsewhere: a path relative to it means nothing to a worker
    os.symlink(shapes_images, tmp_path / shapes_images.name)
    [remote] = list(on_ray.predict([rel], "classify", model="shapes-cnn"))
    assert remote.error is None and remote.path == rel and remote.predictions == local.predictions


def test_a_relative_weights_file_reaches_workers_that_run_elsewhere(ray_cluster, shapes_images, tmp_path, monkeypatch):
    """The driver found `w/x.safetensors`; every actor of a joined cluster, in its own folder, did not."""
    import shutil

    import cnnkit
    from cnnkit import ray as on_ray

    image = str(sorted(shapes_images.iterdir())[0])
    (tmp_path / "w").mkdir()
    shutil.copy(Path(cnnkit.__file__).parent / "weights" / "shapes-cnn.safetensors", tmp_path / "w" / "x.safetensors")
    monkeypatch.chdir(tmp_path)
    [local] = cnnkit.classify([image], weights="w/x.safetensors")
    [remote] = list(on_ray.predict([image], "classify", weights="w/x.safetensors"))
    assert remote.error is None and remote.predictions == local.predictions


def test_parts_count_this_runs_failures_only(ray_cluster, s3_images, tmp_path):
    from typer.testing import CliRunner

    from cnnkit.cli import app

    folder, _ = s3_images
    runner = CliRunner()
    parts = tmp_path / "parts"
    first = runner.invoke(app, ["classify", "-q", str(folder), "--engine", "ray", "--parts", "-o", str(parts)])
    assert first.exit_code == 1  # the folder holds a file that is no image
    (parts / "README.txt").write_text("notes")
    good = sorted(p for p in folder.iterdir() if p.suffix == ".png" and p.name != "bad.png")[0]
    again = runner.invoke(app, ["classify", str(good), "--engine", "ray", "--parts", "-o", str(parts), "--exist-ok"])
    assert again.exit_code == 0, again.output


def test_a_ray_run_report_names_its_model(ray_cluster, shapes_images, tmp_path):
    from typer.testing import CliRunner

    from cnnkit.cli import app

    out = tmp_path / "r.html"
    result = CliRunner().invoke(
        app, ["classify", str(shapes_images), "--engine", "ray", "-o", str(tmp_path / "r.csv"), "--report", str(out)]
    )
    assert result.exit_code == 0, result.output
    run = out.read_text()
    run = run[run.index('<section id="run">') :]
    assert "<th>model</th><td>shapes-cnn</td>" in run and "<th>engine</th><td>ray</td>" in run


def test_saving_under_ray_names_the_flag_given(tmp_path):
    """--save-txt under --engine ray is refused naming --save-txt (it named --save/--save-dir, not given)."""
    from typer.testing import CliRunner

    from cnnkit.cli import app

    image = str(SAMPLES / "scene_0.png")
    result = CliRunner().invoke(app, ["detect", image, "--save-txt", "--engine", "ray"])
    assert result.exit_code == 2 and "--save-txt: write files on this machine" in result.output
    result = CliRunner().invoke(app, ["instance", image, "--save-masks", "--engine", "ray"])  # it named --save
    assert result.exit_code == 2 and "--save-masks: write files on this machine" in result.output


def test_a_ray_resume_with_another_model_is_refused_as_a_local_one_is(ray_cluster, shapes_images, tmp_path):
    """The driver loads no model under Ray, so the resumed file's model was never compared: another model's
    records were appended to it."""
    from typer.testing import CliRunner

    from cnnkit.cli import app

    runner = CliRunner()
    out = tmp_path / "r.jsonl"
    first = sorted(p for p in shapes_images.iterdir() if p.suffix == ".png")[0]
    done = runner.invoke(app, ["classify", str(first), "-o", str(out)])
    assert done.exit_code == 0, done.output
    before = out.read_bytes()
    again = runner.invoke(
        app, ["classify", str(shapes_images), "-m", "lenet5", "-o", str(out), "--skip-existing", "--engine", "ray"]
    )
    assert again.exit_code == 2 and "holds classify records of shapes-cnn, not classify with lenet5" in again.stderr
    assert out.read_bytes() == before


def test_without_an_address_a_cluster_of_its_own_is_started(monkeypatch):
    """`address=None` let Ray join whatever cluster /tmp/ray/ray_current_cluster named (another user's, a
    crashed one: a hang), though the README says cnnkit starts Ray on this machine only."""
    from types import SimpleNamespace

    from cnnkit import ray as on_ray

    asked: list = []
    fake = SimpleNamespace(is_initialized=lambda: False, init=lambda **kw: asked.append(kw["address"]))
    monkeypatch.setattr(on_ray, "_ray", lambda: fake)
    monkeypatch.setattr(on_ray, "_notices_to_stderr", lambda: None)
    monkeypatch.setattr(on_ray, "_check_address", lambda address: None)
    on_ray.init(None)
    on_ray.init("auto")
    assert asked == ["local", "auto"]


def test_quiet_keeps_rays_warnings_off_stderr(monkeypatch):
    """`-q` is nothing on stderr but the error that stops a command; Ray's own warnings (token authentication
    on every start) came through, since Ray logged at WARNING whatever cnnkit's level."""
    import logging
    from types import SimpleNamespace

    from cnnkit import ray as on_ray

    levels: list = []
    fake = SimpleNamespace(is_initialized=lambda: False, init=lambda **kw: levels.append(kw["logging_level"]))
    monkeypatch.setattr(on_ray, "_ray", lambda: fake)
    monkeypatch.setattr(on_ray, "_notices_to_stderr", lambda: None)
    logger = logging.getLogger("cnnkit")
    before = logger.level
    try:
        logger.setLevel(logging.INFO)
        on_ray.init(None)
        logger.setLevel(logging.ERROR)  # what -q sets
        on_ray.init(None)
    finally:
        logger.setLevel(before)
    assert levels == [logging.WARNING, logging.ERROR]


def test_an_address_where_a_web_server_listens_is_one_line_not_a_hang():
    """The probe only asked whether the port took a connection: a dashboard's port or any web server passed, and
    Ray then retried "Failed to connect to GCS" for ever."""
    import http.server
    import threading

    from cnnkit import ray as on_ray
    from cnnkit.errors import OptionError

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(OptionError, match="something listens there, but not a Ray head"):
            on_ray._check_address(f"127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()


def test_auto_with_a_dead_cluster_left_behind_is_one_line_not_a_hang(monkeypatch, tmp_path):
    """`auto` joins what $RAY_ADDRESS or Ray's temp folder names; a crashed cluster leaves its address there,
    and Ray retried it for ever."""
    import socket

    from cnnkit import ray as on_ray
    from cnnkit.errors import OptionError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}\n")
    with pytest.raises(OptionError, match=rf"no Ray cluster there .*\(127.0.0.1:{port}, from .*ray_current_cluster\)"):
        on_ray._check_address("auto")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(OptionError, match=r"from \$RAY_ADDRESS"):
        on_ray._check_address("auto")
