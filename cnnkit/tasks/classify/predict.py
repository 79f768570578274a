"""Image classification: top-k labels per image."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnkit.device import Runtime
from cnnkit.engine import Predictor, StreamState
from cnnkit.io.decode import Decoded, draft_side
from cnnkit.models.loader import Loaded
from cnnkit.results import Classes, ClassScore

if TYPE_CHECKING:
    import torch


class Classifier(Predictor):
    """The classify task's predictor: top-``k`` classes per image."""

    task = "classify"

    def __init__(self, loaded: Loaded, runtime: Runtime, topk: int = 5) -> None:
        if loaded.preprocess is None:
            from cnnkit.errors import UsageError

            raise UsageError(f"{loaded.name}: no preprocessing is known")  # as the segmenter says it
        self.loaded = loaded
        self.name = loaded.name
        self.labels = loaded.labels
        self.pre = loaded.preprocess
        self.runtime = runtime.for_module(loaded.runtime)
        self.topk = max(1, min(topk, len(self.labels)))
        self.min_side = draft_side(self.pre.resize)
        self.model = self.runtime.prepare(loaded.module)

    @classmethod
    def load(
        cls,
        model: str | None = None,
        weights: str | None = None,
        *,
        device: str | None = None,
        half: bool = False,
        threads: int | None = None,
        topk: int = 5,
        backend: str | None = None,
        imgsz: int | None = None,
    ) -> Classifier:
        """``imgsz``: the model's input side (default its own); the resolver rescales the preprocessing to
        it (:func:`~cnnkit.models.loader.at_input_size`), so a model trained at one size can run at another."""
        from cnnkit.models.loader import resolve
        from cnnkit.runtimes import default_backend

        runtime = Runtime.create(device, half=half, threads=threads)
        backend = default_backend(backend, weights)
        loaded = resolve("classify", model, weights, backend=backend, device=runtime.device, imgsz=imgsz)
        return cls(loaded, runtime, topk)

    @property
    def reads_pixels(self) -> bool:
        """Only :meth:`preprocess` reads the picture."""
        return False

    @property
    def input_side(self) -> int:
        """The crop side (from ``imgsz`` or the checkpoint's metadata, which may say up to 8192)."""
        return int(self.pre.crop)

    def preprocess(self, decoded: Decoded) -> torch.Tensor:
        """The image cropped, resized and normalised as the model was trained (its :class:`Preprocess`), on the
        original's geometry when it was drafted."""
        return self.pre(decoded.rgb, (decoded.width, decoded.height), decoded.scale)

    def predict_batch(self, inputs: list[Any], decoded: list[Decoded], state: StreamState) -> list[Classes]:
        import torch

        with torch.inference_mode():
            logits = self.model(self.runtime.batch(torch.stack(inputs)))
            scores, idx = logits.float().softmax(dim=1).topk(self.topk, dim=1)
        scores, idx = scores.cpu().tolist(), idx.cpu().tolist()
        return [
            Classes([ClassScore(self.labels[i], int(i), round(float(s), 6)) for s, i in zip(srow, irow)])
            for srow, irow in zip(scores, idx)
        ]


PREDICTOR = Classifier
