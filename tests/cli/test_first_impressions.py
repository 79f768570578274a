"""What a new user meets first (issue 15): unknown names get a suggestion, nothing is downloaded by a typo."""

from __future__ import annotations

import itertools

import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.models.registry import get_spec, suggest
from tests.conftest import SAMPLES
from tests.fixtures.finetune import write_digits

runner = CliRunner()


@pytest.mark.parametrize(
    ("name", "task", "expected"),
    [
        ("yolo8n.pt", "detect", "yolov8n.pt"),
        ("resnet5", "classify", "resnet50"),
        ("shapes_unet", "segment", "shapes-unet"),
        ("Shapes-CNN", "classify", "shapes-cnn"),
    ],
)
def test_a_close_misspelling_is_suggested(name, task, expected):
    assert suggest(name, task) == expected
    with pytest.raises(Exception, match=f"did you mean {expected}"):
        get_spec(name, task)


def test_a_far_name_gets_no_suggestion_but_the_list():
    with pytest.raises(Exception) as info:
        get_spec("zzzzzz", "segment")
    assert "did you mean" not in str(info.value) and "shapes-unet" in str(info.value)


def test_a_mistyped_ultralytics_name_is_not_sent_to_a_download():
    result = runner.invoke(app, ["detect", str(SAMPLES / "scene_0.png"), "--model", "yolo8n.pt"])
    assert result.exit_code == 2
    assert "did you mean yolov8n.pt?" in result.stderr
    assert "download" not in result.stderr.lower() and "Traceback" not in result.stderr


def test_the_bundled_default_introduces_itself_once_in_one_line(tmp_path):
    result = runner.invoke(app, ["classify", str(SAMPLES / "shape_1_circle.png"), "-f", "jsonl"])
    assert result.exit_code == 0, result.stderr
    intro = [line for line in result.stderr.splitlines() if "for photos try --model" in line]
    assert len(intro) == 1 and intro[0].startswith("shapes-cnn knows") and "resnet50" in intro[0]


def test_the_introduction_is_hidden_by_quiet_and_by_a_named_model():
    quiet = runner.invoke(app, ["-q", "classify", str(SAMPLES / "shape_1_circle.png"), "-f", "jsonl"])
    named = runner.invoke(app, ["classify", str(SAMPLES / "shape_1_circle.png"), "-f", "jsonl", "-m", "shapes-cnn"])
    assert quiet.exit_code == 0 and named.exit_code == 0
    assert "for photos try" not in quiet.stderr and "for photos try" not in named.stderr


def test_log_lines_to_a_file_are_never_wrapped_or_padded(tmp_path):
    import subprocess
    import sys

    long_dir = tmp_path / ("a-folder-with-a-name-long-enough-to-wrap-any-eighty-column-console" * 2)
    long_dir.mkdir()
    (long_dir / "broken.png").write_bytes(b"not a png")
    with open(tmp_path / "err.log", "w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "cnnkit", "classify", str(long_dir), "-f", "jsonl"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**__import__("os").environ, "COLUMNS": "80"},
        )
    assert proc.returncode == 1
    lines = (tmp_path / "err.log").read_text().splitlines()
    failed = [line for line in lines if "broken.png" in line]
    assert failed and all(str(long_dir) in line for line in failed)
    assert all(line == line.rstrip() for line in lines)
    assert any(line.startswith("shapes-cnn knows") for line in lines)


def test_on_a_terminal_the_progress_bar_is_gone_before_the_table(tmp_path):
    """Run under a pseudo-terminal: no table line may carry the remains of the progress display."""
    import os
    import pty
    import subprocess
    import sys

    main, sub = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "classify", str(SAMPLES), "-b", "2"],
        stdin=sub,
        stdout=sub,
        stderr=sub,
        env=env,
        close_fds=True,
    )
    os.close(sub)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(main)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, text
    table_lines = [line for line in text.splitlines() if "┏" in line or "┃" in line]
    assert table_lines, text
    assert not any("predicting" in line or "━" in line.split("┏")[0] for line in table_lines), text


@pytest.mark.parametrize(
    ("fmt", "output", "tty", "expected"),
    [
        ("auto", None, True, "table"),
        ("auto", None, False, "json"),
        ("auto", "-", False, "json"),
        ("auto", "m.json", True, "json"),
        ("auto", "m.txt", False, "table"),
        ("auto", "m.out", True, "json"),
        ("table", "m.json", False, "table"),
        ("json", None, True, "json"),
    ],
)
def test_val_reports_follow_the_auto_rule_of_predict(fmt, output, tty, expected, monkeypatch):
    import sys

    from cnnkit.cli.common import report_format

    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty, raising=False)
    assert report_format(fmt, output) == expected


def test_val_reports_refuse_record_formats():
    from cnnkit.cli.common import report_format
    from cnnkit.errors import UsageError

    with pytest.raises(UsageError, match="auto, table or json"):
        report_format("csv", None)


def test_classify_val_writes_json_into_a_json_file_and_a_pipe(tmp_path):
    import json

    tiny_digits = write_digits(tmp_path / "digits", per_class=2, names=("0", "1", "2"))
    out = tmp_path / "m.json"
    result = runner.invoke(
        app, ["classify", "val", str(tiny_digits), "-m", "lenet5", "-o", str(out), "--save-dir", str(tmp_path / "v")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["model"] == "lenet5"
    piped = runner.invoke(app, ["classify", "val", str(tiny_digits), "-m", "lenet5", "--save-dir", str(tmp_path / "w")])
    assert json.loads(piped.stdout)["images"] > 0
    table = tmp_path / "m.txt"
    runner.invoke(
        app, ["classify", "val", str(tiny_digits), "-m", "lenet5", "-o", str(table), "--save-dir", str(tmp_path / "x")]
    )
    assert "per class" in table.read_text() and not table.read_text().lstrip().startswith("{")


def _leaf_commands():
    import typer.main

    root = typer.main.get_command(app)

    def walk(command, path):
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, command

    return list(walk(root, []))


def test_no_help_text_mentions_an_option_its_command_lacks_or_loses_text_to_markup():
    import re

    problems = []
    for path, command in _leaf_commands():
        opts = {o for p in command.params for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
        for param in command.params:
            text = re.sub(r"`[^`]*`", "", getattr(param, "help", None) or "")  # `cnnkit x --y` names another command
            problems += [
                f"{' '.join(path)} {param.name}: {m}"
                for m in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)
                if m not in opts
            ]
            problems += [f"{' '.join(path)} {param.name}: markup {m}" for m in re.findall(r"(?<!\\)\[[^\]]*\]", text)]
    assert not problems, problems


@pytest.mark.parametrize("task", ["classify", "detect", "segment", "instance"])
def test_task_help_shows_the_predict_options_and_names_val(task):
    result = runner.invoke(app, [task, "--help"], env={"COLUMNS": "140"})
    assert result.exit_code == 0
    assert "--batch-size" in result.stdout and "--format" in result.stdout
    assert f"cnnkit {task} val DATA" in result.stdout
    assert "<bool>" not in result.stdout


def test_flags_show_no_type_placeholder_anywhere():
    for path, _ in _leaf_commands():
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "140"})
        assert result.exit_code == 0, path
        assert "<bool>" not in result.stdout, path
    assert "<bool>" not in runner.invoke(app, ["--help"], env={"COLUMNS": "140"}).stdout


def test_help_paragraphs_are_not_broken_where_the_source_wrapped():
    """Typer's rich help keeps a docstring's newlines: a paragraph wrapped at 120 columns in the source came out
    as lines cut mid-sentence at 80."""
    for path, _ in _leaf_commands():
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
        assert result.exit_code == 0, path
        intro = [line.rstrip() for line in result.stdout.split("Usage:", 1)[1].split("╭", 1)[0].splitlines()[1:]]
        for line, after in itertools.pairwise(intro):  # rich fills each line; only a paragraph's last line is short
            assert len(line) >= 70 or not line or not after, (path, line)


def test_global_flags_work_after_the_command():
    quiet = runner.invoke(app, ["classify", str(SAMPLES / "bus.jpg"), "-f", "jsonl", "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    from cnnkit.cli.common import hoist_global_flags

    assert hoist_global_flags(["classify", "x", "-q"]) == ["-q", "classify", "x"]
    assert hoist_global_flags(["-v", "detect", "a", "--verbose", "--", "-q"]) == [
        "--verbose",
        "-v",
        "detect",
        "a",
        "--",
        "-q",
    ]
    assert hoist_global_flags(["models"]) == ["models"]


def test_ultralytics_says_nothing_on_cnnkits_stderr(tmp_path):
    """A first detect (fresh settings folder) and `cnnkit models` (builds YOLO nets) print only cnnkit's lines."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "yolo"), "CNNKIT_CACHE": str(tmp_path / "cache")}
    detect = subprocess.run(
        [sys.executable, "-m", "cnnkit", "detect", str(SAMPLES / "scene_0.png"), "-f", "jsonl"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert detect.returncode == 0, detect.stderr
    assert "Ultralytics" not in detect.stderr and "✅" not in detect.stderr
    assert all(line.startswith(("shapes-yolov8n knows", "1 image(s)")) for line in detect.stderr.splitlines())
    models = subprocess.run(
        [sys.executable, "-m", "cnnkit", "models", "--task", "detect"], capture_output=True, text=True, env=env
    )
    assert models.returncode == 0 and "Overriding" not in models.stderr and models.stderr.strip() == ""


@pytest.mark.parametrize("width", [80, 100, 140])
def test_models_and_info_fit_the_terminal_and_cut_nothing(width):
    from cnnkit.models.registry import list_models

    result = runner.invoke(app, ["models", "-f", "table"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert all(len(line) <= width for line in lines) and "…" not in result.stdout
    assert "ready" in lines[0] and "download once on first use" in " ".join(result.stdout.split())
    lines = lines[: next(i for i, line in enumerate(lines) if line.startswith("ready:"))]
    names = {line.split()[0] for line in lines[2:] if line.strip()}
    assert {s.name for s in list_models()} <= names
    assert {line.split()[1] for line in lines[2:] if line.split() and line.split()[0] in names} <= {"yes", "no"}
    info = runner.invoke(app, ["info", "-f", "table"], env={"COLUMNS": str(width)})
    assert info.exit_code == 0 and all(len(line) <= width for line in info.stdout.splitlines())


@pytest.mark.parametrize("width", [80, 140])
def test_summary_never_cuts_a_layer_name_or_the_total(width):
    import json

    data = json.loads(runner.invoke(app, ["summary", "shapes-yolov8n", "-f", "json"]).stdout)
    result = runner.invoke(app, ["summary", "shapes-yolov8n", "-f", "table"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0 and "…" not in result.stdout
    table_lines = result.stdout.splitlines()[:-1]  # the last line is the prose summary
    assert all(len(line) <= width for line in table_lines)
    first_words = {line.split()[0] for line in table_lines if line.strip()}
    assert {layer["name"] for layer in data["layers"]} <= first_words
    assert f"{data['params']:,}" in result.stdout


# -- found by a new user's first hour (hunt 18) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "task", "own"), [("shapes-yolov8n", "classify", "detect"), ("resnet18", "detect", "classify")]
)
def test_a_model_of_another_task_is_named_as_such(name, task, own):
    """It was "unknown", with another model suggested (classify -m shapes-yolov8n: did you mean shapes-cnn?)."""
    with pytest.raises(Exception, match=f"'{name}' is a {own} model, not {task}") as err:
        get_spec(name, task)
    assert "did you mean" not in str(err.value)


def test_a_missing_file_named_with_dot_slash_is_a_missing_file(tmp_path, monkeypatch):
    """`-m ./yolov8n.pt` was an unknown registry name (exit 2) where `-m dir/x.pt` is a missing file (exit 1)."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["detect", str(SAMPLES / "scene_0.png"), "-m", "./yolov8n.pt"])
    assert result.exit_code == 1 and "./yolov8n.pt: no such file" in result.stderr


def test_dir_and_help_of_the_package_show_the_api():
    import cnnkit

    shown = dir(cnnkit)
    assert {"classify", "detect", "segment", "instance", "track", "finetune", "load"} <= set(shown)
    assert "annotations" not in shown


def test_an_exported_file_as_the_model_runs_as_its_weights(tmp_path):
    """`-m model.onnx` was an unknown model, though --help says --model takes a local model file."""
    onnx = tmp_path / "cnn.onnx"
    assert runner.invoke(app, ["export", "shapes-cnn", "--out", str(onnx)]).exit_code == 0
    args = ["classify", str(SAMPLES / "shape_0_triangle.png"), "-m", str(onnx), "--backend", "auto", "-f", "jsonl"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert '"label": "triangle"' in result.stdout


def test_an_output_that_is_an_input_is_said_first(tmp_path):
    """The existing-file refusal came first and advised --exist-ok, for a file that was the input image."""
    image = tmp_path / "t.png"
    image.write_bytes((SAMPLES / "shape_0_triangle.png").read_bytes())
    result = runner.invoke(app, ["classify", str(image), "-o", str(image)])
    assert result.exit_code != 0 and "is also an input" in result.stderr and "--exist-ok" not in result.stderr


def test_convert_to_an_unknown_format_names_the_argument(tmp_path):
    records = tmp_path / "r.jsonl"
    records.write_text("")
    result = runner.invoke(app, ["convert", str(records), "yolo"])
    assert result.exit_code == 1 and "FORMAT 'yolo': expected one of" in result.stderr


def test_a_loaded_predictor_refuses_model_options_per_call_and_takes_shard_and_stream():
    """`clf(p, topk=3)` was a bare TypeError from Predictor.stream(); `shard=` was spelled `shard_spec` there."""
    import cnnkit
    from cnnkit.errors import OptionError

    clf = cnnkit.load("classify", topk=2)
    image = str(SAMPLES / "shape_0_triangle.png")
    with pytest.raises(OptionError, match="topk: not an option of a run"):
        clf(image, topk=3)
    assert len(clf([image, image], shard="1/2")) == 1
    streamed = clf(image, stream=True)
    assert not isinstance(streamed, list) and [r.path for r in streamed] == [image]


def test_val_of_an_exported_yolo_names_the_runtime_that_scored_it():
    """`detect val -w best.onnx` said "exported YOLO (onnxruntime or torchscript)" while OpenVINO ran it."""
    from types import SimpleNamespace

    from cnnkit.eval.report import runtime_facts

    for module, runtime in (
        ("OpenVinoModule", "openvino"),
        ("OnnxModule", "onnxruntime"),
        ("ScriptModule", "torchscript"),
    ):
        backend = type("YoloBackend", (), {"checkpoint": None, "runtime_info": {}, "net": type(module, (), {})()})()
        assert runtime_facts(SimpleNamespace(backend=backend))["backend"] == runtime


def test_models_lists_an_ultralytics_checkpoint_at_the_size_of_its_file():
    """yolov8n.pt was listed at 12.63 MB (fp32) where the file ultralytics publishes is fp16, about 6.3 MB."""
    from cnnkit.models.describe import describe
    from cnnkit.models.registry import get_spec

    info = describe(get_spec("yolov8n.pt", "detect"))
    assert info["size_mb"] == round(info["parameters"] * 2 / 1e6, 2) and 5.5 < info["size_mb"] < 7.0
