"""What a weights file is and which runtimes there are: names only, so the CLI can check a setting
(``CNNKIT_BACKEND``) without importing numpy or torch."""

from __future__ import annotations

# what a file is, by suffix: the only place suffixes are read
FILE_KINDS = {
    ".safetensors": "checkpoint",
    ".onnx": "onnx",
    ".torchscript": "torchscript",
    ".pt": "pickle",
    ".pth": "pickle",
}
# backend → the file kind it runs
BACKEND_FILES = {"onnxruntime": "onnx", "openvino": "onnx", "torchscript": "torchscript"}
# ``auto``: a compiled CPU runtime where one is faster (cnnkit.runtimes), else torch
BACKENDS = ("auto", "torch", *BACKEND_FILES)
