"""Real services on loopback for the scale-out tests: an S3 server (moto) and a Ray head with 2 CPUs.

Both are started once per session by these fixtures and stopped at its end; nothing leaves the
machine (``conftest`` blocks other addresses). The S3 credentials are moto's fake ones, set in the
environment, where s3fs (and Ray workers started after them) find them.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

BUCKET = "cnnkit-test"
BAD = {"bad.png": b"this is not a picture", "empty.jpg": b""}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """``http://127.0.0.1:PORT``: a moto S3 server, with the AWS variables pointing at it."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": url}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield url
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def s3_images(s3_server: str, shapes_images: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The same files in a local folder and under ``s3://cnnkit-test/shapes/``: 12 shapes, a file that is
    no image and an empty one; returns ``(folder, prefix URL)``."""
    import boto3

    folder = tmp_path_factory.mktemp("mirror")
    for f in sorted(shapes_images.iterdir()):
        shutil.copy(f, folder / f.name)
    for name, data in BAD.items():
        (folder / name).write_bytes(data)
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=BUCKET)
    for f in sorted(folder.iterdir()):
        client.put_object(Bucket=BUCKET, Key=f"shapes/{f.name}", Body=f.read_bytes())
    return folder, f"s3://{BUCKET}/shapes/"


@pytest.fixture(scope="session")
def ray_cluster(s3_server: str) -> Iterator[object]:
    """One Ray head on 127.0.0.1 with 2 CPUs for the whole session (its workers see the S3 variables)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [
                 str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]))}})
    try:
        yield ray
    finally:
        ray.shutdown()


def comparable(record: dict, base: str = "") -> dict:
    """A record without what differs between runs (``time_ms``) and with its path relative to ``base``."""
    out = {k: v for k, v in record.items() if k != "time_ms"}
    out["path"] = os.path.basename(out["path"]) if not base else out["path"].removeprefix(base)
    return out
