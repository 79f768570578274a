"""Where the predictor protocol used to live; kept so ``from cnnkit.tasks.base import …`` goes on working.

The protocol is :mod:`cnnkit.engine`'s (it drives it, so it owns it: no import cycle), and the
save folder is :mod:`cnnkit.io.pictures`'.
"""

from cnnkit.engine import Predictor, StreamState
from cnnkit.io.pictures import PictureSaver, safe_name

__all__ = ["PictureSaver", "Predictor", "StreamState", "safe_name"]
