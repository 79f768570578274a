"""One option grammar: each option has one name and one help text in every command, `-f` is a record
format only, renamed options still work through hidden aliases that warn once, env vars come
through Typer with today's precedence (flag > env > cnnkit.toml > built-in)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.records import Record

runner = CliRunner()


def _commands() -> Iterator[tuple[str, Any]]:
    """Every leaf command of the app as ``("classify predict", command)``."""

    def walk(command: Any, path: list[str]) -> Iterator[tuple[str, Any]]:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), command

    return walk(get_command(app), [])


def _visible_options() -> Iterator[tuple[str, Any]]:
    for path, command in _commands():
        for param in command.params:  # typer vendors its own click: duck typing, no isinstance
            if getattr(param, "param_type_name", "") == "option" and not getattr(param, "hidden", False):
                yield path, param


def test_every_option_has_one_name_and_one_help_in_every_command():
    by_flag: dict[str, set[tuple[tuple[str, ...], str | None, Any]]] = defaultdict(set)
    for _, param in _visible_options():
        envvar = tuple(param.envvar) if isinstance(param.envvar, list) else param.envvar
        spelling = (tuple(param.opts), param.help, envvar)
        for flag in [*param.opts, *param.secondary_opts]:
            by_flag[flag].add(spelling)
    assert by_flag["--output"] and by_flag["--format"] and by_flag["--workers"]
    differing = {flag: spellings for flag, spellings in by_flag.items() if len(spellings) > 1}
    assert not differing, differing
    assert {opts for opts, _, _ in by_flag["-k"]} == {("--topk", "-k")}
    assert {opts for opts, _, _ in by_flag["-o"]} == {("--output", "-o")}
    assert "--out" not in by_flag and "--val-fraction" not in by_flag


def test_format_is_a_record_format_and_nothing_else():
    from cnnkit.io.writers import FORMATS

    helps = {param.help for _, param in _visible_options() if "-f" in param.opts}
    assert len(helps) == 1
    for _, param in _visible_options():
        if "-f" in param.opts or "--format" in param.opts:
            assert param.opts == ["--format", "-f"]
    for word in ("onnx", "torchscript", "imagefolder", "yolo", "masks"):
        assert word not in next(iter(helps))
    assert {"auto", "table", "json", "jsonl", "csv", "coco"} <= set(FORMATS)
    for args in (["classify", "x.png", "-f", "onnx"], ["classify", "val", "x", "-f", "yolo"], ["models", "-f", "onnx"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)


def test_shared_options_reach_their_commands():
    options = defaultdict(set)
    for path, param in _visible_options():
        options[path].update(param.opts)
    for task in ("classify", "detect", "segment", "instance"):
        assert {"--workers", "--batch-size", "--device", "--format", "--output", "--save-dir"} <= options[
            f"{task} predict"
        ]
        assert {"--workers", "--batch-size", "--format", "--output"} <= options[f"{task} val"]
    for task in ("detect", "segment", "instance"):
        assert "--classes" in options[f"{task} predict"]
    for task in ("classify", "detect", "segment", "instance"):
        assert "--split" in options[f"{task} val"]
    assert {"--to", "--output"} <= options["export"] and "--format" not in options["export"]
    assert "--layout" in options["data shapes"] and "--val-split" in options["data digits"]
    assert {"--save-dir", "--val-split", "--workers"} <= options["finetune"]


def _renamed_warnings(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if "is renamed" in line]


def test_data_aliases_work_and_warn_once(tmp_path):
    out = tmp_path / "old"
    result = runner.invoke(
        app, ["data", "shapes", str(out), "-f", "imagefolder", "--n", "4", "--imgsz", "32", "--val-fraction", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(_renamed_warnings(result)) == [
        "warning: --format is renamed --layout",
        "warning: --val-fraction is renamed --val-split",
    ]
    assert json.loads(result.stdout)["val"] == 2
    new = runner.invoke(
        app,
        [
            "data",
            "shapes",
            str(tmp_path / "new"),
            "--layout",
            "imagefolder",
            "--n",
            "4",
            "--imgsz",
            "32",
            "--val-split",
            "0.5",
        ],
    )
    assert new.exit_code == 0 and not _renamed_warnings(new)
    assert (json.loads(new.stdout)["train"], json.loads(new.stdout)["val"]) == (2, 2)
    digits = runner.invoke(app, ["data", "digits", str(tmp_path / "digits"), "--val-fraction", "0.5"])
    assert digits.exit_code == 0 and _renamed_warnings(digits) == ["warning: --val-fraction is renamed --val-split"]
    both = runner.invoke(app, ["data", "digits", str(tmp_path / "d2"), "--val-fraction", "0.5", "--val-split", "0.4"])
    assert both.exit_code == 2 and "give one of them" in both.stderr


def test_conv_aliases_work_and_warn_once(tmp_path):
    matrix = tmp_path / "m.txt"
    matrix.write_text("1 2 3\n4 5 6\n7 8 9\n")
    old = runner.invoke(app, ["conv", str(matrix), "-k", "identity", "--out", str(tmp_path / "old.txt"), "-f", "json"])
    assert old.exit_code == 0, old.output
    assert sorted(_renamed_warnings(old)) == ["warning: --out is renamed --output", "warning: -k is renamed --kernel"]
    new = runner.invoke(
        app, ["conv", str(matrix), "--kernel", "identity", "-o", str(tmp_path / "new.txt"), "-f", "json"]
    )
    assert new.exit_code == 0 and not _renamed_warnings(new)
    assert (tmp_path / "old.txt").read_text() == (tmp_path / "new.txt").read_text()
    assert json.loads(old.stdout)["output"] == json.loads(new.stdout)["output"]


def test_export_aliases_work_and_warn_once(tmp_path):
    pytest.importorskip("torch")
    old = runner.invoke(app, ["export", "shapes-cnn", "--format", "torchscript", "--out", str(tmp_path / "m.ts")])
    assert old.exit_code == 0, old.output
    assert sorted(_renamed_warnings(old)) == ["warning: --format is renamed --to", "warning: --out is renamed --output"]
    assert json.loads(old.stdout)["format"] == "torchscript" and (tmp_path / "m.ts").exists()


def test_filters_alias_works_and_warns_once(tmp_path):
    result = runner.invoke(app, ["filters", "shapes-cnn", "--out", str(tmp_path / "f.png"), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert _renamed_warnings(result) == ["warning: --out is renamed --output"]
    assert (tmp_path / "f.png").exists()
    two = runner.invoke(app, ["filters", "shapes-cnn", "-l", "a", "-l", "b"])
    assert two.exit_code == 2


@pytest.mark.parametrize("flag", ["--out", "--save-dir"])
def test_finetune_run_folder_old_and_new_name(flag, tmp_path, monkeypatch):
    import cnnkit.api

    seen: dict[str, Any] = {}

    def fake_finetune(data: str, **options: Any) -> dict[str, Any]:
        seen.update(options, data=data)
        return {"out": options["out"]}

    monkeypatch.setattr(cnnkit.api, "finetune", fake_finetune)
    result = runner.invoke(app, ["finetune", "DATA", flag, str(tmp_path / "run"), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert seen["out"] == str(tmp_path / "run") and seen["workers"] == 0
    assert _renamed_warnings(result) == (["warning: --out is renamed --save-dir"] if flag == "--out" else [])


class _FakePredictor:
    """Stands in for a task predictor: records what the command asked of it."""

    name = "fake"
    labels: tuple[str, ...] = ("a", "b")

    def __init__(self, seen: dict[str, Any]) -> None:
        self.seen = seen

    def stream(self, items: list[Any], **run: Any) -> Iterator[Record]:
        self.seen.update(run)
        for it in items:
            yield Record(
                path=str(it.path),
                task="segment",
                model="fake",
                width=1,
                height=1,
                predictions=[{"label": "a", "class_id": 0}, {"label": "b", "class_id": 1}],
            )


@pytest.fixture()
def fake_load(monkeypatch, tmp_path):
    import cnnkit.api

    seen: dict[str, Any] = {}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for key in ("CNNKIT_BATCH_SIZE", "CNNKIT_WORKERS", "CNNKIT_FORMAT"):
        monkeypatch.delenv(key, raising=False)

    def load(task: str, **options: Any) -> _FakePredictor:
        seen.update(options, task=task)
        return _FakePredictor(seen)

    monkeypatch.setattr(cnnkit.api, "load", load)
    return seen


def test_env_vars_come_through_typer_with_todays_precedence(fake_load, shapes_images, monkeypatch, tmp_path):
    image = str(next(iter(sorted(shapes_images.glob("*.png")))))
    args = ["segment", image, "-m", "x", "-f", "jsonl"]
    assert runner.invoke(app, args).exit_code == 0
    assert (fake_load["batch_size"], fake_load["workers"]) == (8, 2)  # built-in
    (tmp_path / "cnnkit.toml").write_text("batch_size = 3\nworkers = 1\n")
    assert runner.invoke(app, args).exit_code == 0
    assert (fake_load["batch_size"], fake_load["workers"]) == (3, 1)  # config
    monkeypatch.setenv("CNNKIT_BATCH_SIZE", "5")
    monkeypatch.setenv("CNNKIT_WORKERS", "4")
    monkeypatch.setenv("CNNKIT_DEVICE", "cpu")
    assert runner.invoke(app, args).exit_code == 0
    assert (fake_load["batch_size"], fake_load["workers"], fake_load["device"]) == (5, 4, "cpu")  # env
    assert runner.invoke(app, [*args, "-b", "6", "--workers", "0"]).exit_code == 0
    assert (fake_load["batch_size"], fake_load["workers"]) == (6, 0)  # flag
    monkeypatch.setenv("CNNKIT_WORKERS", "lots")
    assert runner.invoke(app, args).exit_code == 2


def test_format_from_the_environment_does_not_break_views(monkeypatch):
    monkeypatch.setenv("CNNKIT_FORMAT", "jsonl")
    result = runner.invoke(app, ["models", "--task", "classify"])
    assert result.exit_code == 0 and json.loads(result.stdout)
    assert runner.invoke(app, ["models", "-f", "jsonl"]).exit_code == 2  # a flag is still checked


def test_classes_reach_the_segment_and_instance_predictors(fake_load, shapes_images):
    """The predictor filters (so records, pictures and masks agree); the CLI only splits the list."""
    image = str(next(iter(sorted(shapes_images.glob("*.png")))))
    result = runner.invoke(app, ["segment", image, "-m", "x", "-f", "jsonl", "--classes", "b"])
    assert result.exit_code == 0, result.output
    assert fake_load["task"] == "segment" and fake_load["classes"] == ["b"]
    result = runner.invoke(app, ["instance", image, "-m", "x", "-f", "jsonl", "--classes", "0,b"])
    assert result.exit_code == 0, result.output
    assert fake_load["task"] == "instance" and fake_load["classes"] == ["0", "b"]
    result = runner.invoke(app, ["classify", image, "-m", "x", "-f", "jsonl", "--imgsz", "48"])
    assert result.exit_code == 0, result.output
    assert fake_load["task"] == "classify" and fake_load["imgsz"] == 48


def test_composed_commands_keep_typed_signatures():
    import inspect

    from cnnkit.tasks.classify.cli import predict

    params = inspect.signature(predict).parameters
    assert list(params)[:2] == ["ctx", "sources"] and params["batch_size"].default == 16
    assert "topk" in params and "shared" not in params


def test_classify_val_split_names_a_folder(tmp_path):
    (tmp_path / "train").mkdir()
    result = runner.invoke(app, ["classify", "val", str(tmp_path), "--split", "test"])
    assert result.exit_code == 2 and "has no test/ folder" in result.stderr


def test_classify_val_scores_the_split_asked_for(tmp_path):
    data = tmp_path / "shapes"
    made = runner.invoke(app, ["data", "shapes", str(data), "--layout", "imagefolder", "--n", "6", "--imgsz", "64"])
    assert made.exit_code == 0, made.output
    result = runner.invoke(
        app,
        [
            "classify",
            "val",
            str(data),
            "--split",
            "train",
            "-f",
            "json",
            "--save-dir",
            str(tmp_path / "v"),
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["data"] == str(data / "train") and report["images"] == 5
    default = runner.invoke(app, ["classify", "val", str(data), "-f", "json", "--save-dir", str(tmp_path / "w")])
    assert json.loads(default.stdout)["data"] == str(data / "val")


def test_an_old_spelling_counts_as_given_where_a_command_checks_what_was_set(tmp_path):
    """`data shapes --video` refuses `--layout` and `--val-split` (still-scene options), but took their old
    spellings and ignored them: the alias filled the value, not the record of its being given."""
    for old, new in ((["--format", "coco"], "--layout"), (["--val-fraction", "0.5"], "--val-split")):
        result = runner.invoke(app, ["data", "shapes", str(tmp_path / old[0][2:]), "--video", "--n", "1", *old])
        assert result.exit_code == 2 and f"{new}: is for still scenes" in result.stderr, result.output
        assert not (tmp_path / old[0][2:]).exists()
