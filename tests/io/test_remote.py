"""Remote sources (s3://, http://, file://) give the records local files give: same inputs, order,
shards, failed records and resume; reads happen in the decode threads, a bounded number ahead."""

from __future__ import annotations

import http.server
import json
import threading
from functools import partial

import pytest

from cnnkit.errors import CnnkitError
from cnnkit.io.sources import expand_sources, shard
from tests.fixtures.scaleout import BUCKET, comparable

pytestmark = pytest.mark.remote


@pytest.fixture(scope="module")
def predictor():
    import cnnkit

    return cnnkit.load("classify", model="shapes-cnn", topk=2)


def test_s3_prefix_gives_the_local_records(s3_images, predictor):
    folder, prefix = s3_images
    local = [comparable(r.to_dict()) for r in predictor.stream([str(folder)], batch_size=4)]
    remote = list(predictor.stream([prefix], batch_size=4))
    assert [r.path for r in remote][:2] == [prefix + "bad.png", prefix + "empty.jpg"]
    assert [comparable(r.to_dict()) for r in remote] == local
    failed = {comparable(r.to_dict())["path"]: r.error for r in remote if r.error}
    assert failed == {"bad.png": "not a recognised image format", "empty.jpg": "empty file"}


def test_s3_glob_shard_and_missing_object(s3_images, predictor):
    folder, prefix = s3_images
    for spec in ("1/3", "2/3", "3/3"):
        local = shard(expand_sources([str(folder / "img_*.png")]), spec)
        remote = shard(expand_sources([prefix + "img_*.png"]), spec)
        assert [i.path.rsplit("/", 1)[1] for i in remote] == [i.path.rsplit("/", 1)[1] for i in local]
    [missing] = predictor([prefix + "nope.png"])
    assert missing.error == "no such object"
    [unlisted] = expand_sources([f"s3://{BUCKET}/nothing/*.png"])
    assert unlisted.error == "pattern matches no image files"


def test_remote_reads_stay_bounded(s3_images, predictor, monkeypatch):
    """At most three batches have been read when the first record comes out, never more reads at once than
    decode threads: a long remote listing is streamed, not fetched ahead."""
    from cnnkit.io import remote

    _, prefix = s3_images
    real, lock = remote.read, threading.Lock()
    count = {"reads": 0, "now": 0, "most": 0}

    def counted(url: str, limit: int = remote.MAX_READ_BYTES) -> bytes:
        with lock:
            count["reads"] += 1
            count["now"] += 1
            count["most"] = max(count["most"], count["now"])
        try:
            return real(url, limit)
        finally:
            with lock:
                count["now"] -= 1

    monkeypatch.setattr(remote, "read", counted)
    urls = [f"{prefix}missing_{i:02d}.png" for i in range(40)]
    stream = predictor.stream(urls, batch_size=2, workers=2)
    first = next(stream)
    assert first.error == "no such object"
    assert count["reads"] <= 3 * 2
    rest = list(stream)
    assert len(rest) == 39 and count["reads"] == 40 and count["most"] <= 2


def test_cli_s3_parquet_and_jsonl_resume(s3_images, tmp_path):
    """The CLI over a bucket: exit 1 for the bad files, records as for the local folder; a resumed run
    redoes only what failed, in Parquet as in JSON Lines."""
    from typer.testing import CliRunner

    from cnnkit.cli import app
    from cnnkit.io.parquet import read_records

    folder, prefix = s3_images
    runner = CliRunner()
    base = ["classify", "-m", "shapes-cnn", "-k", "1", "-b", "4", "-q"]
    res = runner.invoke(app, [*base, str(folder), "-o", str(tmp_path / "local.jsonl")], catch_exceptions=False)
    assert res.exit_code == 1
    local = [comparable(json.loads(line)) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    for out in ("r.jsonl", "r.parquet"):
        first = runner.invoke(app, [*base, prefix + "img_0*.png", "-o", str(tmp_path / out)], catch_exceptions=False)
        assert first.exit_code == 0
        again = runner.invoke(
            app, [*base, prefix, "-o", str(tmp_path / out), "--skip-existing"], catch_exceptions=False
        )
        assert again.exit_code == 1
        if out.endswith(".jsonl"):
            rows = [json.loads(line) for line in (tmp_path / out).read_text().splitlines()]
        else:
            rows = list(read_records(tmp_path / out))
        assert len(rows) == len(local) == 14
        assert sorted(map(json.dumps, (comparable(r) for r in rows))) == sorted(map(json.dumps, local))
        assert all(r["path"].rsplit("/", 1)[1].startswith("img_0") for r in rows[:10])  # the first run's, first


def test_http_and_file_urls(shapes_images, predictor):
    """A web server on loopback (one URL per image; a 404 is a failed record) and file:// URLs."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(shapes_images))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        names = sorted(p.name for p in shapes_images.iterdir())[:3]
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        web = list(predictor.stream([base + n for n in names] + [base + "gone.png"]))
        signed = list(predictor.stream([base + names[0] + "?X-Amz-Signature=ab*c&v=1"]))  # a query is no glob
        files = list(predictor.stream([f"file://{shapes_images}/"]))
    finally:
        server.shutdown()
    local = [comparable(r.to_dict()) for r in predictor.stream([str(shapes_images / n) for n in names])]
    assert [comparable(r.to_dict()) for r in web[:3]] == local
    assert web[3].error == "no such object"
    assert comparable(signed[0].to_dict()) | {"path": local[0]["path"]} == local[0]
    assert [comparable(r.to_dict()) for r in files[:3]] == local and len(files) == 12


def test_missing_backend_names_the_extra(monkeypatch):
    import importlib
    import sys

    from cnnkit.io import remote

    registry = importlib.import_module("fsspec.registry")._registry  # classes fsspec already imported
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    for proto in ("gs", "gcs"):
        monkeypatch.delitem(registry, proto, raising=False)
    with pytest.raises(CnnkitError, match=r"gs:// sources need gcsfs: pip install 'cnnkit\[gcs\]'"):
        remote.filesystem("gs://bucket/x.png")


def test_val_over_a_bucket_scores_as_the_local_folder(s3_server, s3_images, tmp_path):
    """``classify val s3://…/``: the labelled folder is copied for the run and scored as locally."""
    import boto3
    from PIL import Image
    from typer.testing import CliRunner

    from cnnkit.cli import app
    from cnnkit.data.shapes import CLASSES, classification_sample

    data = tmp_path / "valset"
    client = boto3.client("s3", endpoint_url=s3_server)
    for i in range(8):
        img, cid = classification_sample(5, i, size=64)
        (data / CLASSES[cid]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(data / CLASSES[cid] / f"v{i}.png")
        client.put_object(
            Bucket=BUCKET, Key=f"valset/{CLASSES[cid]}/v{i}.png", Body=(data / CLASSES[cid] / f"v{i}.png").read_bytes()
        )
    runner = CliRunner()
    reports = {}
    for name, where in (("local", str(data)), ("s3", f"s3://{BUCKET}/valset/")):
        res = runner.invoke(
            app,
            [
                "classify",
                "val",
                where,
                "-m",
                "shapes-cnn",
                "-q",
                "-f",
                "json",
                "-o",
                str(tmp_path / f"{name}.json"),
                "--save-dir",
                str(tmp_path / f"run-{name}"),
            ],
            catch_exceptions=False,
        )
        assert res.exit_code == 0, res.output
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert reports["s3"]["images"] == reports["local"]["images"] == 8
    for key in ("top1", "top5", "confusion", "per_class"):
        assert reports["s3"][key] == reports["local"][key]


def test_videos_in_a_bucket_are_read_as_local_ones(s3_server, s3_images, tmp_path):
    """An mp4 under an S3 prefix is listed with the images and read through fsspec (FFmpeg seeks in it): the
    same frame records as the local file; a missing one is a failed record saying so."""
    pytest.importorskip("av")
    import boto3

    import cnnkit
    from tests.io.test_video import make_video

    video = make_video(tmp_path / "clip.mp4", frames=6)
    boto3.client("s3", endpoint_url=s3_server).put_object(Bucket=BUCKET, Key="videos/clip.mp4", Body=video.read_bytes())
    local = [comparable(r.to_dict()) for r in cnnkit.detect(str(video), vid_stride=2, threads=1)]
    remote = cnnkit.detect(f"s3://{BUCKET}/videos/", vid_stride=2, threads=1)
    assert [r.path for r in remote] == [f"s3://{BUCKET}/videos/clip.mp4"] * 3
    assert [comparable(r.to_dict()) for r in remote] == local
    for_file = cnnkit.detect(f"file://{video}", max_frames=2, threads=1)
    assert [(r.frame, r.ok) for r in for_file] == [(0, True), (1, True)]
    [missing] = cnnkit.detect(f"s3://{BUCKET}/videos/nope.mp4", threads=1)
    assert missing.error == "cannot open video (no such object)"


def test_keys_with_glob_characters_named_exactly(s3_server, s3_images, predictor):
    """A key holding ``[`` or ``?`` named exactly is that object, as a local file of that name is."""
    import boto3

    folder, prefix = s3_images
    name = sorted(p.name for p in folder.iterdir() if p.suffix == ".png" and p.name != "bad.png")[0]
    boto3.client("s3", endpoint_url=s3_server).put_object(
        Bucket=BUCKET, Key="odd/br[1]?.png", Body=(folder / name).read_bytes()
    )
    [record] = predictor.stream([f"s3://{BUCKET}/odd/br[1]?.png"])
    [local] = predictor.stream([str(folder / name)])
    assert record.error is None and record.predictions == local.predictions


def test_hidden_objects_are_left_out_of_listings_as_local_ones_are(s3_server, tmp_path):
    """A prefix or a glob listed macOS's `._x.png` (a failed record, exit 1) and `.thumbnails/`, which a local
    folder or glob leaves out; a pattern that asks for dotted names still finds them, as glob does."""
    import boto3

    from cnnkit.io.remote import expand

    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="hidden")
    for key in ("p/IMG_1.png", "p/._IMG_1.png", "p/.thumbnails/t.png", "p/sub/x.png"):
        client.put_object(Bucket="hidden", Key=key, Body=b"x")
    local = tmp_path / "p"
    (local / ".thumbnails").mkdir(parents=True)
    (local / "sub").mkdir()
    for name in ("IMG_1.png", "._IMG_1.png", ".thumbnails/t.png", "sub/x.png"):
        (local / name).write_bytes(b"x")
    cases = [("/", False, ["IMG_1.png"]), ("/", True, ["IMG_1.png", "sub/x.png"])]
    cases += [("/*.png", False, ["IMG_1.png"]), ("/**/*.png", True, ["IMG_1.png", "sub/x.png"])]
    cases += [("/.*.png", False, ["._IMG_1.png"]), ("/.thumbnails/*.png", False, [".thumbnails/t.png"])]
    for root in ("s3://hidden/p", f"file://{local}"):
        for arg, recursive, want in cases:
            hits, _ = expand(root + arg, recursive)
            assert sorted(hit.rsplit("/p/", 1)[1] for hit, _ in hits) == want, (root, arg, recursive)


def test_outputs_are_local_and_file_urls_are_inputs(tmp_path, monkeypatch):
    """``-o``/``--report``/``--save-dir`` refuse a URL (no folder named ``s3:``), and an input given as a
    ``file://`` URL is protected from ``-o`` and ``--report`` as its plain path is."""
    from PIL import Image
    from typer.testing import CliRunner

    from cnnkit.cli import app

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (32, 32), "white").save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    runner = CliRunner()
    for args in (["-o", "s3://b/x.jsonl"], ["--report", "s3://b/r.html"], ["--save-dir", "s3://b/out"]):
        result = runner.invoke(app, ["classify", "a.png", *args])
        assert result.exit_code == 2 and "written locally, not to a URL" in result.output, args
    result = runner.invoke(app, ["data", "shapes", "gs://b/data", "--n", "2"])
    assert result.exit_code == 2 and "written locally" in result.output
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "gs:").exists()
    for args in (["-o", "a.png"], ["--report", "a.png"]):
        result = runner.invoke(app, ["classify", f"file://{tmp_path}/", *args, "--exist-ok"])
        assert result.exit_code != 0 and "is also an input" in result.output, args
    assert (tmp_path / "a.png").read_bytes() == before


def test_a_server_that_does_not_answer_is_not_a_missing_object():
    import socket

    from cnnkit.errors import DecodeError
    from cnnkit.io import remote

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DecodeError, match="cannot connect"):
        remote.read(f"http://127.0.0.1:{port}/x.png")


def test_a_server_that_accepts_and_never_answers_times_out(monkeypatch):
    """aiohttp's default waited 300 s per request (and the long way round after it), so an image URL on a silent
    server held the run for about 15 minutes; the read gives up as a stream does, after nothing for a while."""
    import socket
    import time

    from cnnkit.errors import DecodeError
    from cnnkit.io import remote, video

    monkeypatch.setattr(video, "STREAM_TIMEOUT_S", 1.0)
    held: list[socket.socket] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        threading.Thread(target=lambda: held.extend(server.accept()[0] for _ in range(4)), daemon=True).start()
        t0 = time.monotonic()
        with pytest.raises(DecodeError, match=r"timed out: nothing received for 1 s"):
            remote.read(f"http://127.0.0.1:{server.getsockname()[1]}/x.png")
        assert time.monotonic() - t0 < 60
    for conn in held:
        conn.close()


@pytest.mark.parametrize("server", ["silent", "closed"])
def test_an_s3_endpoint_that_never_answers_or_is_down_is_one_bounded_line(monkeypatch, server):
    """botocore waited 60 s a read and s3fs tried 5 times over botocore's own retries: a stalled endpoint held
    each object about 7 minutes (nothing said), a dead one about 8 s, worded "read failed (EndpointConnectionError
    …)". Reads give up as an http(s) read does."""
    import socket
    import time

    from cnnkit.errors import DecodeError
    from cnnkit.io import remote, video

    pytest.importorskip("s3fs")
    monkeypatch.setattr(video, "STREAM_TIMEOUT_S", 1.0)
    for key, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    held: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        if server == "silent":
            listener.listen(16)
            threading.Thread(target=lambda: held.extend(listener.accept()[0] for _ in range(16)), daemon=True).start()
        else:
            listener.close()  # a port nothing listens on
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        t0 = time.monotonic()
        want = r"timed out: nothing received for 1 s" if server == "silent" else r"cannot connect \("
        with pytest.raises(DecodeError, match=want):
            remote.read(f"s3://{BUCKET}/x-{server}.png")
        assert time.monotonic() - t0 < 30
    for conn in held:
        conn.close()


def test_scheme_case_and_s3a_name_one_object(s3_images, predictor):
    folder, prefix = s3_images
    name = sorted(p.name for p in folder.iterdir() if p.suffix == ".png" and p.name != "bad.png")[0]
    key = prefix + name
    items = expand_sources([key.replace("s3://", "S3://"), key.replace("s3://", "s3a://"), key])
    assert len(items) == 1 and items[0].path == key
    [record] = predictor.stream([key.replace("s3://", "S3://")])
    assert record.error is None


def test_logs_never_show_a_urls_password_or_signature(tmp_path):
    """The failure lines and the summary hide a URL's password and a presigned URL's signing parameters, as
    ultralytics' ``clean_url`` does; the record keeps the URL as given (it is the input's identity)."""
    import json
    import socket

    from typer.testing import CliRunner

    from cnnkit.cli import app
    from cnnkit.errors import printable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    urls = [
        f"http://me:s3cretpw@127.0.0.1:{port}/x.png",
        f"http://127.0.0.1:{port}/y.png?X-Amz-Credential=AKIDSECRET&X-Amz-Signature=feedbeefsig&X-Amz-Expires=60",
    ]
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(app, ["classify", *urls, "-f", "jsonl", "-o", str(out)])
    assert result.exit_code == 1
    for secret in ("s3cretpw", "AKIDSECRET", "feedbeefsig"):
        assert secret not in result.output
    assert f"http://me:***@127.0.0.1:{port}/x.png" in result.output and "X-Amz-Expires=60" in result.output
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == urls
    assert printable("s3://bucket/a b#c?.png") == "s3://bucket/a b#c?.png"  # nothing else is touched
    assert printable("http://h/p?page=2&q=a") == "http://h/p?page=2&q=a"
