"""Data cnnkit makes or takes from installed packages: synthetic ``shapes`` scenes and real digits."""

import logging


def warn_left_out(reasons: list[str], what: str, limit: int = 10, *, of: str = "training") -> None:
    """One warning per example left out of ``of`` (the first ``limit``), each naming its file and reason."""
    log = logging.getLogger("cnnkit")
    for reason in reasons[:limit]:
        log.warning("left out of %s: %s", of, reason)
    if len(reasons) > limit:
        log.warning("… and %d more %s left out", len(reasons) - limit, what)
