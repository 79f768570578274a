"""Ctrl-C and SIGTERM still reach Python after OpenVINO models come and go (issue 17's runtimes).

OpenVINO's CPU plugin swaps the compiling thread's alternate signal stack and puts the old one back when
a model is freed; compiling a model (verified by one OpenVINO model, run by another) and freeing it left
the thread on an unmapped stack, and the next signal (the SIGINT of Ctrl-C, the SIGTERM that stops
training) killed the process with SIGSEGV. It also crashed the single-process test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("openvino")

SCRIPT = textwrap.dedent(
    """
    import faulthandler, gc, os, signal, time
    from cnnkit.models.loader import resolve

    faulthandler.enable()  # as pytest and `python -X faulthandler` do: the thread has a signal stack
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job inherits SIGINT ignored
    model = resolve("classify", "shapes-cnn", backend="openvino", device="cpu")  # compiles: two models
    del model
    gc.collect()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    except KeyboardInterrupt:
        print("interrupted cleanly")
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the signal stack is restored on Linux")
def test_sigint_after_an_openvino_model_is_freed_is_a_keyboard_interrupt(tmp_path):
    env = {**os.environ, "CNNKIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "interrupted cleanly" in proc.stdout
