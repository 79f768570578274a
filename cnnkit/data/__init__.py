"""Data cnnkit makes or takes from installed packages: synthetic ``shapes`` scenes and real digits."""

import logging


def warn_left_out(reasons: list[str], what: str, limit: int = 10, *, of: str = "training") -> None:
    """One warning per example left out of ``of`` (the first ``limit``), each naming its file and reason."""
    log = logging.getLogger("cnnkit")
    for reason in reasons[:limit]:
        log.warning("left out of %s: %s", of, reason)
    if len(reasons) > limit:
        log.warning("… and %d more %s left out", len(reasons) - limit, what)


def undecodable(paths: list[str]) -> list[str | None]:
    """For each image path, why it does not decode (``"PATH: reason"``), or ``None``: a bad file is named and left
    out at the start of training, not a crash (or a silent drop) when the sampler reaches it mid-epoch."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from cnnkit.errors import CnnkitError
    from cnnkit.io.decode import decode

    def why(path: str) -> str | None:
        try:
            decode(path)
        except CnnkitError as exc:
            return f"{path}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(why, paths))
