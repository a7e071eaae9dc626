"""The report: tables from results.json, the published comparison, self-contained HTML, figures, notes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from unlearnable.app.poison import poison_command
from unlearnable.app.report import condition_of, dataset_name, describe_adversarial, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
AT = {"norm": "linf", "eps": 4 / 255, "steps": 10}

# name, defense, adversarial, status, last, best, wall seconds, images/s; cuda+at as an older
# results.json records it (the `adversarial` option, no `command`)
RUNS = [
    ("clean", "none", None, "complete", 91.37, 91.82, 754.0, 3987.0),
    ("cuda", "none", None, "complete", 21.64, 35.07, 760.0, 3950.0),
    ("cuda+at", "none", AT, "complete", 47.18, 48.25, 5120.0, 590.0),
    ("cuda+rsk+ff", "rsk+ff", None, "running", None, None, None, None),
]


def write_results(
    run_dir: Path,
    name: str,
    defense: str,
    adversarial: dict | None,
    status: str,
    last: float | None,
    best: float | None,
    wall: float | None,
    speed: float | None,
    train: str,
    source: dict,
    attack: str | None,
) -> None:
    """A results.json as the trainer writes it; a running run has two epochs and no `final`."""
    epochs = [
        {
            "epoch": e,
            "train_loss": 2.0 / e,
            "train_acc": 30.0 * e,
            "test_loss": 1.5,
            "test_acc": 20.0 + e,
            "lr": 0.1,
            "seconds": 3.0,
            "images_per_s": 100.0,
        }
        for e in (1, 2)
    ]
    config = {
        "model": "resnet18",
        "defense": defense,
        "recipe": {"name": "paper", "epochs": 3},
        "seed": 0,
        "train": train,
        "test": train,
    }
    if adversarial is not None:  # the former option, in a results.json written before the chain had it
        config["adversarial"] = adversarial
    results = {
        "name": name,
        "status": status,
        "config": config,
        "versions": {"torch": "2.14.1"},
        "device": "cpu (2 threads)",
        "deterministic": True,
        "seed": 0,
        "train_data": {"source": source, "attack": attack, "num_images": 24},
        "test_data": {"source": source, "num_images": 6},
        "epochs": epochs,
    }
    if status == "complete":
        results["final"] = {
            "test_acc_last": last,
            "test_acc_best": best,
            "best_epoch": 2,
            "wall_seconds": wall,
            "images_per_s": speed,
        }
    if adversarial is None:
        results["command"] = f"unlearnable train --name {name}"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(results))


@pytest.fixture
def runs(tiny_folder: Path, tmp_path: Path) -> list[Path]:
    """Four runs on a tiny CUDA-protected ImageFolder; the clean run claims to be CIFAR-10."""
    saved = tmp_path / "protected"
    poison_command(str(tiny_folder), "cuda", saved)
    folder_source = {"spec": str(tiny_folder), "kind": "imagefolder", "split": "train", "path": str(tiny_folder)}
    dirs = []
    for name, defense, adversarial, status, last, best, wall, speed in RUNS:
        clean = name == "clean"
        source = {"spec": "cifar10", "kind": "cifar10", "split": "train", "path": "/data"} if clean else folder_source
        run_dir = tmp_path / "runs" / name
        write_results(
            run_dir,
            name,
            defense,
            adversarial,
            status,
            last,
            best,
            wall,
            speed,
            train=str(tiny_folder) if clean else str(saved),
            source=source,
            attack=None if clean else "cuda",
        )
        dirs.append(run_dir)
    return dirs


def table_row(markdown: str, first_cell: str) -> str:
    """The Markdown table row that starts with `first_cell`."""
    return next(line for line in markdown.splitlines() if line.startswith(f"| {first_cell} |"))


def test_report_tables_figures_and_self_contained_html(runs, tmp_path):
    md_path, html_path = write_report(runs, tmp_path / "report", title="Tiny report")
    assert md_path == tmp_path / "report" / "report.md" and html_path.name == "report.html"
    markdown, page = md_path.read_text(), html_path.read_text()

    # Self-contained: every src/href is a data: URI.
    links = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.I)
    assert links and all(link.startswith("data:image/png;base64,") for link in links)
    assert "Tiny report" in page and "Tiny report" in markdown
    for name, *_ in RUNS:
        assert name in page

    # Measured rows carry the numbers of the results files.
    clean_row = table_row(markdown, "clean")
    for value in ("resnet18", "paper", "91.37", "91.82", "12 min 34 s", "3,987", "cpu (2 threads)"):
        assert value in clean_row
    at_row = table_row(markdown, "cuda+at")
    assert all(v in at_row for v in ("47.18", "48.25", "L∞ 4/255, 10 steps", "1 h 25 min", "590"))
    assert "21.64" in table_row(markdown, "cuda") and "35.07" in page and "91.37" in page
    # The running run is flagged, shows its latest epoch and no final numbers.
    running = table_row(markdown, "cuda+rsk+ff (incomplete: running)")
    assert "2 of 3" in running and "22.00" in running
    assert "cuda+rsk+ff (incomplete: running)" in page and "class=flagged" in page

    # CIFAR-10 has published numbers; the tiny folder has none.
    assert "### CIFAR-10" in markdown
    published = table_row(markdown, "clean | clean")
    assert "91.37" in published and "94.34" in published and "-2.97" in published
    for value in ("23.25", "44.40", "78.53"):
        assert value in markdown and value in page
    assert "No published number for ImageFolder tiny" in markdown
    assert "clean 91.37% (published 94.34)" in markdown

    # Figures: PNGs beside the Markdown, the same bytes embedded in the HTML.
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").iterdir())
    assert figures == ["curves.png", "samples.png", "spectra.png"]
    for name in figures:
        assert (tmp_path / "report" / "figures" / name).read_bytes().startswith(PNG_MAGIC)
        assert f"](figures/{name})" in markdown
    assert page.count("data:image/png;base64,") == 3
    assert "distinct spectral fingerprint per class" in markdown
    assert "unlearnable train --name cuda+rsk+ff" in markdown and "--name cuda+at" not in markdown


def test_missing_pieces_become_notes(runs, tiny_folder, tmp_path):
    shutil.rmtree(tiny_folder)  # the clean source of the saved dataset is gone
    (tmp_path / "runs" / "empty").mkdir()
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "results.json").write_text('{"name": "broken", "status": "runn')
    sparse = tmp_path / "runs" / "sparse"
    sparse.mkdir()
    (sparse / "results.json").write_text(json.dumps({"name": "sparse", "status": "running"}))
    dirs = runs + [tmp_path / "runs" / n for n in ("empty", "broken", "sparse")]
    markdown = write_report(dirs, tmp_path / "report")[0].read_text()
    assert "no results.json yet" in markdown and "broken" in markdown and "unreadable" in markdown
    assert "sparse (incomplete: running)" in markdown and "unknown dataset" in markdown
    assert "clean and difference columns are left out" in markdown
    assert (tmp_path / "report" / "figures" / "spectra.png").read_bytes().startswith(PNG_MAGIC)


def test_no_saved_dataset_and_no_runs(tmp_path):
    write_results(
        tmp_path / "fm",
        "fm-clean",
        "none",
        None,
        "complete",
        90.0,
        90.5,
        100.0,
        500.0,
        train="fashion-mnist",
        source={"kind": "fashion-mnist"},
        attack=None,
    )
    markdown, page = (p.read_text() for p in write_report([tmp_path / "fm"], tmp_path / "a"))
    assert "No published number for Fashion-MNIST" in markdown
    assert "no samples or spectra" in markdown and "90.00" in page
    markdown = write_report([], tmp_path / "b")[0].read_text()
    assert "from 0 of 0 run directories" in markdown and "no curves" in markdown


@pytest.mark.parametrize(
    "attack, defense, adversarial, expected",
    [
        (None, "none", None, "clean"),
        ("cuda", None, None, "cuda"),
        ("cuda", "none", {"norm": "linf", "eps": 0.015}, "cuda+at"),
        ("cuda", "none", {"norm": "linf", "eps": 8 / 255}, "other"),
        ("cuda", "rsk+ff", None, "cuda+rsk+ff"),
        ("cuda", "ssk+ff", None, "other"),
        ("huda", "none", None, "other"),
        (None, "rsk+ff", None, "other"),
    ],
)
def test_condition_of_older_results(attack, defense, adversarial, expected):
    assert condition_of(attack, defense, adversarial=adversarial) == expected


def test_at_linf_in_the_chain_is_the_table1_at_condition():
    assert condition_of("cuda", "at-linf", {"steps": 2}) == "cuda+at"
    assert condition_of("cuda", "at-linf", {"eps": 4 / 255, "steps": 10}) == "cuda+at"
    assert condition_of("cuda", "at-linf", {"eps": 8 / 255}) == "other"
    assert condition_of("cuda", "at-l2", {}) == "other"
    assert condition_of("cuda", "rsk+ff+at-linf", {}) == "other"
    assert condition_of(None, "at-linf", {}) == "other"


def test_the_chain_form_reads_like_the_option(tmp_path):
    """A cuda+at run recorded with the chain (today) and with the former option land in the same row."""
    from unlearnable.app.report import load_run
    from unlearnable.app.report.sections import measured_table

    source = {"kind": "imagefolder", "path": "/x/tiny"}
    write_results(tmp_path / "old", "old", "none", AT, "complete", 47.0, 48.0, 1.0, 1.0, "x", source, "cuda")
    write_results(tmp_path / "new", "new", "at-linf", None, "complete", 47.0, 48.0, 1.0, 1.0, "x", source, "cuda")
    new_results = json.loads((tmp_path / "new" / "results.json").read_text())
    new_results["config"]["defense_options"] = {"eps": 4 / 255, "steps": 10}
    (tmp_path / "new" / "results.json").write_text(json.dumps(new_results))
    old, new = load_run(tmp_path / "old"), load_run(tmp_path / "new")
    assert old.condition == new.condition == "cuda+at"
    assert old.results.command is None and new.results.command == "unlearnable train --name new"
    rows = measured_table([old, new]).rows
    assert rows[0][5] == rows[1][5] == "L∞ 4/255, 10 steps"


def test_dataset_names_and_adversarial_text():
    assert dataset_name({"kind": "cifar100"}) == "CIFAR-100"
    assert dataset_name({"kind": "imagefolder", "path": "/x/cifar10-jpeg.tar.gz"}) == "CIFAR-10 (JPEG copy)"
    assert dataset_name({"kind": "imagefolder", "path": "/x/cifar-100"}) == "CIFAR-100 (JPEG copy)"
    assert dataset_name({"kind": "imagefolder", "path": "/x/imagenet100"}) == "ImageNet-100"
    assert dataset_name({"kind": "saved", "path": "/nowhere"}) == "saved dataset nowhere"
    assert dataset_name(None) == "unknown dataset"
    assert describe_adversarial({"norm": "linf", "eps": 0.0157, "steps": 10}) == "L∞ 4/255, 10 steps"
    assert describe_adversarial({"norm": "linf", "eps": 0.015}) == "L∞ ε=0.015"
    assert describe_adversarial({"norm": "l2", "eps": 0.5, "steps": 7}) == "L2 ε=0.5, 7 steps"
    assert describe_adversarial(None) == "none"
