"""app/benchmark.py: poison variants as columns, the benchmark files regenerated from the run
directories, the page and its heat map, and `compare` skipping finished cells."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from unlearnable.app.audit import BUDGETS, Budget
from unlearnable.app.benchmark import (
    PRESETS,
    Column,
    check_page_files,
    image_quality,
    parse_column,
    parse_columns,
    protection_rows,
    table_rows,
    write_benchmark,
)
from unlearnable.app.cli import main
from unlearnable.app.cli.compare import PRESET_NAMES
from unlearnable.app.experiments import TrainingProtocol
from unlearnable.errors import UserInputError
from unlearnable.io import is_own_png
from unlearnable.training.results import RunResults

PROTOCOL = TrainingProtocol(
    model="small", recipe="quick", overrides={"epochs": 1, "batch_size": 8, "test_batch_size": 8}
)
POISONS = "cuda:kernel_size=5,cuda:mix=0.5"
ROWS = {"none": {"defense": "none", "defense_options": {}}, "gray": {"defense": "gray", "defense_options": {}}}


# --- columns -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, label, key, spec, params",
    [
        ("cuda", "cuda", "cuda", "cuda", {}),
        ("clean", "clean", "clean", "clean", {}),
        ("cuda-reflect", "cuda-reflect", "cuda-reflect", "cuda-reflect", {}),
        ("cuda:kernel_size=5", "cuda k5", "cuda_k5", "cuda:kernel_size=5", {"kernel_size": 5}),
        ("cuda:grayscale=true", "cuda gray", "cuda_gray", "cuda:grayscale=true", {"grayscale": True}),
        ("cuda:mix=0.50", "cuda mix 0.5", "cuda_mix_0.5", "cuda:mix=0.5", {"mix": 0.5}),
        ("cuda:mix=0.5+kernel_size=9", "cuda k9 mix 0.5", "cuda_k9_mix_0.5", "cuda:kernel_size=9+mix=0.5",
         {"kernel_size": 9, "mix": 0.5}),
        ("lsp:eps=0.05+patch_size=4", "lsp eps 0.05 patch 4", "lsp_eps_0.05_patch_4", "lsp:eps=0.05+patch_size=4",
         {"eps": 0.05, "patch_size": 4}),
    ],
)  # fmt: skip
def test_a_column_is_an_attack_with_parameters(text, label, key, spec, params):
    column = parse_column(text)
    assert (column.label, column.key, column.spec, column.params) == (label, key, spec, params)
    assert parse_column(column.spec) == column


def test_the_benchmark_preset_lists_the_published_columns_clean_first():
    columns = parse_columns(PRESETS["benchmark"])
    assert [c.label for c in columns] == [
        "clean", "cuda", "cuda-reflect", "cuda k5", "cuda k9", "cuda pb 0.5", "cuda gray", "vuda", "huda", "cuda mix 0.5",
        "ops", "lsp", "ar", "noise", "grating",
    ]  # fmt: skip
    assert PRESET_NAMES == tuple(PRESETS)
    assert parse_columns("ops,clean,cuda")[0] == Column(None) and len(parse_columns("ops,cuda")) == 3


@pytest.mark.parametrize(
    "text, needle",
    [
        ("blur", "unknown attack 'blur'"),
        ("cuda:kernel_size=4", "kernel_size must be an odd integer in [1, 31] (got 4)"),
        ("cuda:kernel_size=five", "kernel_size must be an odd integer"),
        ("cuda:blur_parameter=2", "blur_parameter must be a number in (0, 1]"),
        ("cuda:grayscale=yes", "grayscale must be true or false"),
        ("cuda:mix=0", "mix must be a number in (0, 1]"),
        ("cuda:seed=-1", "seed must be"),
        ("ops:kernel_size=3", "ops does not take 'kernel_size'"),
        ("cuda:kernel_shape=vertical", "cuda does not take 'kernel_shape'"),
        ("cuda:mix=0.5+mix=0.4", "mix is given twice"),
        ("cuda:", "no parameters after ':'"),
        ("cuda:kernel_size", "is not KEY=VALUE"),
        ("cuda:kernel_size=5,mix=0.5", "unknown attack 'mix=0.5'"),
        ("clean:mix=0.5", "the clean column takes no parameters"),
        ("cuda,cuda", "lists 'cuda' twice"),
        ("cuda:mix=0.5,cuda:mix=0.50", "lists 'cuda mix 0.5' twice"),
        ("cuda,,ops", "empty column"),
    ],
)
def test_bad_columns_are_one_line_errors(text, needle):
    with pytest.raises(UserInputError) as e:
        parse_columns(text)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_the_best_defense_of_each_poison_is_bold_and_missing_cells_blank():
    columns = [Column(None), Column("cuda"), Column("ops")]
    rows = ["none", "rsk+ff", "gray"]
    accuracy = [[80.0, 20.0, 30.0], [75.5, 60.0, None], [81.0, 40.0, 35.0]]
    assert table_rows(accuracy, columns, rows) == [
        ["none", "80.00", "+0.00", "20.00", "30.00"],
        ["rsk+ff", "75.50", "+4.50", "**60.00**", ""],
        ["gray", "81.00", "−1.00", "40.00", "**35.00**"],
    ]


def test_each_protection_is_judged_by_the_audits_rule():
    columns = [Column(None), Column("cuda"), Column("ops"), Column("noise"), Column("lsp")]
    rows = ["none", "rsk+ff", "gray"]
    accuracy = [[80.0, 20.0, 30.0, 75.0, 40.0], [75.5, 60.0, None, 70.0, 45.0], [81.0, 40.0, 35.0, 81.0, None]]
    quality = {"cuda": (18.061, 0.7612)}
    assert protection_rows(accuracy, columns, rows, quality) == [
        ["cuda", "20.00", "rsk+ff 60.00", "67%", "rsk+ff 60.00", "18.06", "0.761", "broken"],
        ["ops", "30.00", "gray 35.00", "10%", "–", "", "", "holds"],
        ["noise", "75.00", "gray 81.00", "120%", "gray 81.00", "", "", "no protection"],
        ["lsp", "40.00", "rsk+ff 45.00", "12%", "–", "", "", "holds"],
    ]
    accuracy[0][0] = None
    assert protection_rows(accuracy, columns, rows, quality) == []


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory, image_folder, one_thread) -> tuple[Path, list[str]]:
    """A compare run of 3 columns × 2 rows on a tiny folder: (its output folder, the command's arguments)."""
    root = tmp_path_factory.mktemp("bench")
    image_folder(root / "tiny" / "train", ["cat", "dog", "ship"], 8, seed=1)
    image_folder(root / "tiny" / "test", ["cat", "dog", "ship"], 2, seed=2)
    out = root / "cmp"
    argv = ["compare", "--data", str(root / "tiny"), "--poisons", POISONS, "--defenses", "none,gray", "--out", str(out)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(BUDGETS, "quick", Budget(PROTOCOL, {}))
        assert main(argv) == 0
    return out, argv


def results_of(out: Path) -> dict[tuple[str, str], RunResults]:
    found = {}
    for path in sorted((out / "runs").glob("*/*/results.json")):
        results = RunResults.read(path)
        assert results is not None
        found[path.parent.parent.name, path.parent.name] = results
    return found


def test_compare_writes_the_table_with_readable_column_names(finished):
    out, _ = finished
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0] == "| defense | clean | cuda k5 | cuda mix 0.5 |"
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["clean", "cuda_k5", "cuda_mix_0.5"]


def test_json_and_csv_hold_the_runs_results(finished):
    out, argv = finished
    record = json.loads((out / "benchmark.json").read_text())
    runs = results_of(out)
    assert len(record["cells"]) == len(runs) == 6
    assert record["command"] == "unlearnable " + " ".join(argv)
    assert [c["name"] for c in record["columns"]] == ["clean", "cuda k5", "cuda mix 0.5"]
    keys = {"clean": "clean", "cuda k5": "cuda_k5", "cuda mix 0.5": "cuda_mix_0.5"}
    with open(out / "benchmark.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 6
    for cell, line in zip(record["cells"], lines, strict=True):
        results = runs[keys[cell["column"]["name"]], cell["row"]["name"]]
        assert cell["test_acc_last"] == results.final["test_acc_last"]
        assert cell["test_acc_best"] == results.final["test_acc_best"]
        assert cell["wall_seconds"] == results.final["wall_seconds"]
        assert (cell["seed"], cell["versions"], cell["host"], cell["command"]) == (
            results.seed, results.versions, results.host, results.command,
        )  # fmt: skip
        assert cell["row"]["defense"] == results.config["defense"] == cell["row"]["name"]
        assert cell["protocol"]["epochs"] == results.config["recipe"]["epochs"] == 1
        assert cell["protocol"]["image_size"] == [16, 16]
        assert cell["protocol"]["train_images"] == results.train_data["num_images"] == 24
        assert float(line["test_acc_last"]) == cell["test_acc_last"]
        assert float(line["wall_seconds"]) == cell["wall_seconds"]
        assert (line["column"], line["row"], line["model"], line["image_size"]) == (
            cell["column"]["name"], cell["row"]["name"], "small", "16x16",
        )  # fmt: skip
        assert json.loads(line["params"]) == cell["column"]["params"]
        assert json.loads(line["versions"]) == results.versions
    assert record["cells"][2]["column"] == {
        "name": "cuda k5", "spec": "cuda:kernel_size=5", "attack": "cuda", "params": {"kernel_size": 5},
    }  # fmt: skip


def test_the_page_has_the_table_the_figure_and_the_command(finished):
    out, argv = finished
    md = (out / "benchmark.md").read_text()
    html = (out / "benchmark.html").read_text()
    assert is_own_png(out / "benchmark.png")
    assert "| defense | clean | cost on clean | cuda k5 | cuda mix 0.5 |" in md
    assert "](benchmark.png)" in md and "How to read it" in md
    assert "unlearnable " + " ".join(argv) in md
    assert "data:image/png;base64," in html and "<table>" in html and 'src="http' not in html
    assert "6 of 6 cells finished" in md
    # the per-protection table, its image quality measured on the saved sets
    quality = image_quality(out, parse_columns(POISONS))
    assert set(quality) == {"cuda_k5", "cuda_mix_0.5"} and 0 < quality["cuda_k5"][1] < 1
    assert quality["cuda_k5"][0] < quality["cuda_mix_0.5"][0] < float("inf")
    assert "## Per protection" in md and "| cuda k5 | " in md and f"| {quality['cuda_k5'][0]:.2f} |" in md


def test_a_rerun_trains_nothing_and_missing_cells_stay_blank(finished, tmp_path, monkeypatch):
    import unlearnable.training.trainer as trainer

    out = tmp_path / "cmp"
    shutil.copytree(finished[0], out)
    _, argv = finished
    argv = [*argv[:-1], str(out)]
    monkeypatch.setitem(BUDGETS, "quick", Budget(PROTOCOL, {}))
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/results.json")}

    def refuse(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", refuse)
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/results.json")} == mtimes

    # a cell that has not finished: blank in the table and the figure, absent from the files, even
    # when training stops there
    shutil.rmtree(out / "runs" / "cuda_mix_0.5" / "gray")
    (out / "benchmark.png").unlink()
    assert main(argv) == 130
    record = json.loads((out / "benchmark.json").read_text())
    assert len(record["cells"]) == 5
    assert ("cuda mix 0.5", "gray") not in {(c["column"]["name"], c["row"]["name"]) for c in record["cells"]}
    assert len((out / "benchmark.csv").read_text().splitlines()) == 1 + 5
    md = (out / "benchmark.md").read_text()
    gray = next(line for line in md.splitlines() if line.startswith("| gray |"))
    assert gray.endswith("|  |") and "5 of 6 cells finished" in md
    assert is_own_png(out / "benchmark.png")


def test_write_benchmark_on_an_empty_grid_writes_blank_cells(tmp_path):
    paths = write_benchmark(tmp_path, [Column(None), Column("cuda")], ROWS, PROTOCOL, command="unlearnable compare")
    assert [p.name for p in paths] == [f"benchmark.{e}" for e in ("json", "csv", "png", "md", "html")]
    assert json.loads((tmp_path / "benchmark.json").read_text())["cells"] == []
    assert "| none |  |  |  |" in (tmp_path / "benchmark.md").read_text()


def test_benchmark_files_of_someone_else_are_never_replaced(finished, tmp_path, capsys):
    """A benchmark.md (or .png) in OUT that this tool did not write stops compare before any work."""
    _, argv = finished
    for name, content in (("benchmark.md", b"my notes"), ("benchmark.png", b"\x89PNG not ours"), ("table.md", b"mine")):
        out = tmp_path / name
        out.mkdir()
        (out / name).write_bytes(content)
        assert main([*argv[:-1], str(out)]) == 2
        assert "this tool did not write" in capsys.readouterr().err
        assert [p.name for p in out.iterdir()] == [name] and (out / name).read_bytes() == content
    out = tmp_path / "ours"
    shutil.copytree(finished[0], out)
    check_page_files(out)  # the files an earlier compare wrote are replaced freely
