"""Data cnnkit makes or takes from installed packages: synthetic ``shapes`` scenes and real digits."""

import logging


def repeated(names: list[str]) -> list[str]:
    """The names a list gives more than once, sorted: classes matched by name would be scored (and trained) as one."""
    from collections import Counter

    return sorted(n for n, times in Counter(names).items() if times > 1)


def warn_left_out(reasons: list[str], what: str, limit: int = 10, *, of: str = "training") -> None:
    """One warning per example left out of ``of`` (the first ``limit``), each naming its file and reason."""
    log = logging.getLogger("cnnkit")
    for reason in reasons[:limit]:
        log.warning("left out of %s: %s", of, reason)
    if len(reasons) > limit:
        log.warning("… and %d more %s left out", len(reasons) - limit, what)


def undecodable(
    paths: list[str], sizes: list[tuple[int, int] | None] | None = None, said_by: str = "its annotations"
) -> list[str | None]:
    """For each image path, why it does not decode (``"PATH: reason"``), or ``None``: a bad file is named and left
    out at the start of training, not a crash (or a silent drop) when the sampler reaches it mid-epoch. With
    ``sizes`` (width, height, as ``said_by`` gives them), an image of another size is refused too: its labels
    were drawn on another picture."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from cnnkit.errors import CnnkitError
    from cnnkit.io.decode import decode

    def why(path: str, said: tuple[int, int] | None) -> str | None:
        try:
            image = decode(path)
        except CnnkitError as exc:
            return f"{path}: {exc}"
        if said is not None and (image.width, image.height) != said:
            return f"{path}: the image is {image.width}x{image.height}, {said_by} says {said[0]}x{said[1]}"
        return None

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(why, paths, sizes if sizes is not None else [None] * len(paths)))
