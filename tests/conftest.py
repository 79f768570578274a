"""Shared fixtures: every test runs offline, with caches in temp folders.

``offline`` sockets fail for any non-loopback address, so a test that would reach
the network fails instead of silently downloading.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# fixtures shared across folders live in tests/fixtures/, registered here for every test
pytest_plugins = [
    "tests.fixtures.browser",
    "tests.fixtures.detect",
    "tests.fixtures.finetune",
    "tests.fixtures.instance",
    "tests.fixtures.scaleout",
    "tests.fixtures.segment",
    "tests.fixtures.visual",
]

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"


class NetworkBlocked(OSError):
    pass


def _is_local(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    return isinstance(host, str) and (
        host.startswith("127.") or host in ("localhost", "::1", "") or host.startswith("/")
    )


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """Temp caches for torch hub and ultralytics, and no network."""
    root = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(root / "yolo"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("YOLO_OFFLINE", "true")
    monkeypatch.setenv("YOLO_AUTOINSTALL", "false")
    monkeypatch.delenv("CNNKIT_DEVICE", raising=False)
    # predictors default to a compiled CPU runtime (cnnkit.runtimes), compiled once per set of weights: the
    # suite's many tiny trained models would each pay that. Tests of the compiled path (test_runtimes.py)
    # ask for `auto` explicitly; compiled files go to a temporary cnnkit cache.
    monkeypatch.setenv("CNNKIT_BACKEND", "torch")
    monkeypatch.setenv("CNNKIT_CACHE", str(root / "cnnkit"))
    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        if self.family == socket.AF_UNIX or _is_local(address):
            return real_connect(self, address)
        raise NetworkBlocked(f"test tried to reach the network: {address!r}")

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host is None or _is_local((host,)):
            return real_getaddrinfo(host, *args, **kwargs)
        raise NetworkBlocked(f"test tried to resolve {host!r}")

    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield


@pytest.fixture(scope="session")
def shapes_images(tmp_path_factory) -> Path:
    """A folder of 12 single-object shapes images (seed 777), named by class."""
    from cnnkit.data.shapes import CLASSES, classification_sample

    folder = tmp_path_factory.mktemp("shapes_cls")
    for i in range(12):
        img, cid = classification_sample(777, i, size=64)
        Image.fromarray(img).save(folder / f"img_{i:02d}_{CLASSES[cid]}.png")
    return folder


@pytest.fixture()
def rgb_image(tmp_path) -> Path:
    path = tmp_path / "rgb.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start a Ray cluster run last: the rest of the session never shares the process with its threads."""
    items.sort(key=lambda item: item.get_closest_marker("ray") is not None)
