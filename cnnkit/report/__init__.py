"""Reports people look at: one self-contained HTML page per run (:mod:`cnnkit.report.html`), class-activation
maps (:mod:`cnnkit.report.explain`) and val evidence (:mod:`cnnkit.report.evidence`).

Nothing heavy is imported here; Jinja2, Pillow, numpy and torch are imported by the functions that use them.
"""
