"""The library never knows the CLI: no ``--flag`` in the strings of library modules.

Library errors name options by keyword (:class:`cnnkit.errors.OptionError`, or `keyword` in backticks
inside a message) and the CLI renders its own flags. Docstrings may mention flags; a complete command
a user types (a backtick-quoted `cnnkit …` example) may too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "cnnkit"
FLAG = re.compile(r"(?:^|(?<=[\s(\[`'\"]))--(?:[a-z]|$)")  # --flag, or a "--" an f-string completes
COMMAND = re.compile(r"`cnnkit [^`]*`")  # a whole command example


def _library_modules() -> list[Path]:
    return sorted(
        p
        for p in ROOT.rglob("*.py")
        if p.relative_to(ROOT).parts[0] != "cli" and not (p.parts[-3] == "tasks" and p.name == "cli.py")
    )


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def flag_mentions(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of each non-docstring string constant (f-string parts included) that spells a flag."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip
            and FLAG.search(COMMAND.sub("", node.value))
        ):
            found.append((node.lineno, node.value))
    return found


def test_library_strings_name_no_flags():
    offenders = [
        f"{path.relative_to(ROOT.parent)}:{line}: {text!r}"
        for path in _library_modules()
        for line, text in flag_mentions(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_scan_sees_flags():
    """The check above would pass on a scan that finds nothing: make sure it finds what it must."""
    modules = {p.relative_to(ROOT).as_posix() for p in _library_modules()}
    assert "engine.py" in modules and "tasks/detect/predict.py" in modules and "cli/common.py" not in modules
    assert "tasks/detect/cli.py" not in modules
    assert [t for _, t in flag_mentions('raise UsageError(f"--classes {x}: bad")')] == ["--classes "]
    assert flag_mentions("log.warning('--resume with %d', n)")
    assert flag_mentions("f\"--{name.replace('_', '-')} must be at least 1\"")
    assert not flag_mentions('raise E("no yaml (make one with `cnnkit data shapes OUT --layout yolo`)")')
    assert not flag_mentions('def f():\n    """Uses ``--imgsz``."""\n')
    assert not flag_mentions('x = "a -- b, 1--2, `imgsz`"') and not flag_mentions('style = ".--"')
