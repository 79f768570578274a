"""Insert the task reference pages ``docs/readme/*.md`` into README.md between its markers.

    python scripts/build_readme.py           # rewrite README.md
    python scripts/build_readme.py --check   # exit 1 when README.md is out of date (a test runs this)

Each page's first heading becomes a ``###`` section of the README's reference; the
page's own ``###`` headings become ``####`` so they sit under it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnkit.tasks import TASK_NAMES

ROOT = Path(__file__).resolve().parent.parent
# every task with a reference page (classify is the README's own walk-through), then the shared commands
PAGES = [t for t in TASK_NAMES if (ROOT / "docs" / "readme" / f"{t}.md").exists()] + ["finetune", "visual", "report"]
BEGIN = "<!-- BEGIN task docs (from docs/readme/*.md) -->"
END = "<!-- END task docs -->"


def page(name: str) -> str:
    lines = (ROOT / "docs" / "readme" / f"{name}.md").read_text(encoding="utf-8").strip().splitlines()
    title = "### " + lines[0].lstrip("#").strip()
    body = ["#" + line if line.startswith("### ") else line for line in lines[1:]]
    return "\n".join([title, *body])


def build(readme: str) -> str:
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + BEGIN + "\n\n" + "\n\n".join(page(p) for p in PAGES) + "\n\n" + END + tail


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    path = ROOT / "README.md"
    old = path.read_text(encoding="utf-8")
    new = build(old)
    if args.check:
        if new != old:
            print("README.md is out of date with docs/readme/*.md: run python scripts/build_readme.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
