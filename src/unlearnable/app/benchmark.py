"""The defense × poison benchmark: every defense of a battery trained on every poison variant and on
the clean data, kept as a table, machine-readable files and a page.

Columns are poison variants, written ``NAME`` or ``NAME:KEY=VALUE+KEY=VALUE`` (commas separate the
columns, so ``+`` joins a variant's parameters): ``cuda:kernel_size=5``, ``cuda:grayscale=true``,
``cuda:kernel_size=9+mix=0.5``. ``clean`` is the clean training set (always trained, always the
first column). Every name, key and value is checked before any data is read or written: the name
against the attack registry, the key against the attack's signature, the value against its
declared constraint (`VARIANT_OPTIONS`).

Each finished cell is a run directory OUT/runs/<column>/<row> (its results.json, read through
`RunResults`). After every cell that trains, and at the end, the outputs are regenerated from those
directories, so an interrupted command leaves a complete record of what has finished and a rerun
(which skips finished cells) completes it:

    OUT/benchmark.json   the protocol, the columns and rows, and one entry per finished cell
    OUT/benchmark.csv    one line per finished cell, the same fields flattened
    OUT/benchmark.md     the page: the table, the heat map, how to read it, the command
    OUT/benchmark.html   the same page, self-contained (the figure embedded)
    OUT/benchmark.png    the heat map (rows defenses, columns poisons, colour = test accuracy)

Cells that have not finished are blank in the table and the figure, and absent from the files.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearnable import params as P
from unlearnable.app.experiments import TrainingProtocol, is_complete, prepare_data, train_once
from unlearnable.app.report.render import Block, Code, Figure, Heading, Paragraph, Table, number, to_html, to_markdown
from unlearnable.errors import UserInputError
from unlearnable.io import atomic_write_bytes, is_own_json, is_own_png, write_json
from unlearnable.training.results import RESULTS, RunResults

logger = logging.getLogger(__name__)

CLEAN = "clean"
"""The column of the clean training set."""

PRESETS: dict[str, str] = {
    "benchmark": "clean,cuda,cuda-reflect,cuda:kernel_size=5,cuda:kernel_size=9,cuda:blur_parameter=0.5,"
    "cuda:grayscale=true,vuda,huda,cuda:mix=0.5,ops,lsp,ar,noise,grating",
}
"""Named column lists for `--preset`; "benchmark" is the published table."""

VARIANT_OPTIONS: dict[str, P.Constraint] = {
    "kernel_size": P.KERNEL_SIZE,
    "blur_parameter": P.Interval(float, 0, 1, closed="right"),
    "grayscale": P.BOOLEAN,
    "eps": P.POSITIVE,
    "norm": P.POSITIVE,
    "patch_size": P.POSITIVE_INT,
    "mix": P.FRACTION,
    "seed": P.SEED,
}
"""The attack parameters a column may set, with their constraints, in the order labels list them.
Each goes only to the attacks whose function takes it."""

_LABELS: dict[str, Callable[[Any], str]] = {
    "kernel_size": lambda v: f"k{v}",
    "blur_parameter": lambda v: f"pb {v:g}",
    "grayscale": lambda v: "gray" if v else "color",
    "eps": lambda v: f"eps {v:g}",
    "norm": lambda v: f"norm {v:g}",
    "patch_size": lambda v: f"patch {v}",
    "mix": lambda v: f"mix {v:g}",
    "seed": lambda v: f"seed {v}",
}

BEST = "**"
"""How the table marks the best defense of a poison column (Markdown bold)."""

QUALITY_STEP = 10
"""Image quality is measured on every 10th training image ..."""
QUALITY_IMAGES = 1000
"""... and on images further apart where that would be more than this many."""


@dataclass(frozen=True)
class Column:
    """One column of the table: the clean data (attack None) or an attack with parameters."""

    attack: str | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The readable name: "clean", "cuda", "cuda k5", "cuda gray", "cuda mix 0.5"."""
        if self.attack is None:
            return CLEAN
        return " ".join([self.attack, *(_LABELS[key](value) for key, value in self.params.items())])

    @property
    def key(self) -> str:
        """The directory name under OUT/data and OUT/runs: the label with "_" for spaces."""
        return self.label.replace(" ", "_")

    @property
    def spec(self) -> str:
        """The canonical text: "cuda", "cuda:kernel_size=5+mix=0.5"."""
        if not self.params:
            return self.label
        return f"{self.attack}:" + "+".join(f"{k}={_text(v)}" for k, v in self.params.items())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.label, "spec": self.spec, "attack": self.attack, "params": dict(self.params)}


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else format(value, "g")


def _parse_value(column: str, key: str, text: str) -> Any:
    """`text` as the type of `key`'s constraint, checked against it."""
    constraint = VARIANT_OPTIONS[key]
    value: Any = text
    if isinstance(constraint, P.Booleans):
        if text.lower() not in ("true", "false"):
            raise UserInputError(f"--poisons {column}: {key} must be true or false (got {text!r})")
        value = text.lower() == "true"
    elif isinstance(constraint, P.Interval):
        try:
            value = constraint.kind(text)
        except ValueError:
            raise UserInputError(f"--poisons {column}: {key} must be {constraint.describe()} (got {text!r})") from None
    try:
        constraint.check(key, value)
    except UserInputError as e:
        raise UserInputError(f"--poisons {column}: {e}") from None
    return value


def parse_column(text: str) -> Column:
    """One column: "clean", "NAME" or "NAME:KEY=VALUE+KEY=VALUE"; UserInputError naming what is wrong."""
    from unlearnable.attacks import ATTACKS

    name, colon, rest = text.strip().partition(":")
    if not name:
        raise UserInputError(f"--poisons has an empty column in {text!r}; write NAME or NAME:KEY=VALUE+KEY=VALUE")
    if name == CLEAN:
        if colon:
            raise UserInputError(f"--poisons {text}: the clean column takes no parameters")
        return Column(None)
    ATTACKS.check(name)
    if colon and not rest:
        raise UserInputError(f"--poisons {text}: no parameters after ':'; write {name}:KEY=VALUE+KEY=VALUE")
    takes = [k for k in VARIANT_OPTIONS if k in inspect.signature(ATTACKS.get(name)).parameters]
    given: dict[str, Any] = {}
    for item in rest.split("+") if rest else []:
        key, equals, value = item.partition("=")
        if not equals or not key or not value:
            raise UserInputError(f"--poisons {text}: {item!r} is not KEY=VALUE (parameters are joined with '+')")
        if key not in takes:
            raise UserInputError(f"--poisons {text}: {name} does not take {key!r}; it takes {', '.join(takes)}")
        if key in given:
            raise UserInputError(f"--poisons {text}: {key} is given twice")
        given[key] = _parse_value(text, key, value)
    return Column(name, {k: given[k] for k in VARIANT_OPTIONS if k in given})


def parse_columns(text: str) -> list[Column]:
    """The columns of a comma-separated list, the clean column first (added when not listed)."""
    columns = [parse_column(part) for part in text.split(",")]
    seen: dict[str, str] = {}
    for column, part in zip(columns, text.split(","), strict=True):
        if column.key in seen:
            raise UserInputError(f"--poisons lists {column.label!r} twice ({seen[column.key]} and {part})")
        seen[column.key] = part
    return [Column(None)] + [c for c in columns if c.attack is not None]


def check_fits(columns: Iterable[Column], image_hw: tuple[int, int]) -> None:
    """Refuse a kernel or patch larger than the images (before any data is written)."""
    side = min(image_hw)
    for column in columns:
        for key in ("kernel_size", "patch_size"):
            if column.params.get(key, 0) > side:
                raise UserInputError(
                    f"--poisons {column.spec}: {key} {column.params[key]} is larger than the "
                    f"{image_hw[0]}×{image_hw[1]} images; use at most {side}"
                )


def plan_rows(battery: dict[str, dict[str, Any]], defenses: str | None) -> dict[str, dict[str, Any]]:
    """The rows: the battery, or the chains of `defenses` (comma-separated; a battery name keeps its
    options); each is checked (`training_defense`) before any work."""
    from unlearnable.defenses import training_defense

    rows = (
        dict(battery)
        if defenses is None
        else {name: battery.get(name, {"defense": name}) for name in defenses.split(",")}
    )
    for settings in rows.values():
        training_defense(settings["defense"], **settings.get("defense_options", {}))
    return rows


def data_summary(spec: str, data_root: str | None, per_class: int | None) -> tuple[int, tuple[int, int]]:
    """How many training images a protocol taking `per_class` per class gets from `spec`, and their size."""
    import numpy as np

    from unlearnable.data import load_dataset

    train = load_dataset(spec, "train", data_root)
    counts = np.bincount(train.labels.numpy(), minlength=train.num_classes)
    images = int(np.minimum(counts, per_class).sum()) if per_class else len(train)
    return images, (int(train.images.shape[2]), int(train.images.shape[3]))


# --- running -----------------------------------------------------------------------------------


def run_benchmark(
    source: str,
    out: str | Path,
    protocol: TrainingProtocol,
    columns: list[Column],
    rows: dict[str, dict[str, Any]],
    data_root: str | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    command: str | None = None,
    title: str | None = None,
) -> dict[tuple[str, str], Path]:
    """Train every (column, row) cell that has not finished, column by column. benchmark.json and
    .csv are rewritten after each cell that trained (`write_records`), and every benchmark file at the
    end, also when training stops early (`write_benchmark`).

    Returns:
        {(column key, row): run dir}.
    """
    out = Path(out)
    poisons: dict[str, tuple[str, dict[str, Any]]] = {}
    for column in columns:
        if column.attack is not None:
            poisons[column.key] = (column.attack, dict(column.params))
    data = prepare_data(source, out, protocol, data_root, poisons)
    runs: dict[tuple[str, str], Path] = {}
    try:
        for column in columns:
            for row, settings in rows.items():
                run_dir = out / "runs" / column.key / row
                finished = is_complete(run_dir)
                runs[column.key, row] = train_once(
                    run_dir,
                    data[column.key],
                    protocol,
                    settings,
                    seed,
                    device,
                    progress,
                    name=f"{column.key}/{row}",
                    command=command,
                )
                if not finished:
                    write_records(out, columns, rows, protocol, command)
    finally:
        write_benchmark(out, columns, rows, protocol, command, title)
    return runs


# --- the record --------------------------------------------------------------------------------


def protocol_dict(protocol: TrainingProtocol) -> dict[str, Any]:
    """What the runs were asked to train: model, recipe (with overrides), images per class."""
    from unlearnable.training.recipes import resolve_recipe

    recipe = resolve_recipe(protocol.recipe, **protocol.overrides)
    return {
        "model": protocol.model,
        "recipe": protocol.recipe,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "train_per_class": protocol.train_per_class,
        "test_per_class": protocol.test_per_class,
    }


def cell_record(column: Column, row: str, results: RunResults) -> dict[str, Any]:
    """One finished cell as benchmark.json lists it; every value comes from the run's results.json."""
    config, recipe = results.config, results.config.get("recipe") or {}
    shape = results.train_data.get("shape") or []
    return {
        "column": column.to_dict(),
        "row": {
            "name": row,
            "defense": config.get("defense"),
            "defense_options": config.get("defense_options") or {},
        },
        "protocol": {
            "model": config.get("model"),
            "recipe": recipe.get("name"),
            "epochs": recipe.get("epochs"),
            "batch_size": recipe.get("batch_size"),
            "train_images": results.train_data.get("num_images"),
            "test_images": results.test_data.get("num_images"),
            "num_classes": results.train_data.get("num_classes"),
            "image_size": list(shape[1:]) if len(shape) == 3 else None,
        },
        "seed": results.seed,
        "test_acc_last": results.final.get("test_acc_last"),
        "test_acc_best": results.final.get("test_acc_best"),
        "wall_seconds": results.final.get("wall_seconds"),
        "device": results.device,
        "versions": results.versions,
        "host": results.host,
        "command": results.command,
    }


def collect(out: str | Path, columns: list[Column], rows: Iterable[str]) -> list[dict[str, Any]]:
    """The records of the finished cells of the grid, in table order (column by column)."""
    cells = []
    for column in columns:
        for row in rows:
            run_dir = Path(out) / "runs" / column.key / row
            if not is_complete(run_dir):
                continue
            results = RunResults.read(run_dir / RESULTS)
            assert results is not None  # is_complete read it
            cells.append(cell_record(column, row, results))
    return cells


CSV_FIELDS = (
    "column", "attack", "params", "row", "defense", "defense_options", "model", "recipe", "epochs", "batch_size",
    "train_per_class", "test_per_class", "train_images", "test_images", "image_size", "seed", "test_acc_last",
    "test_acc_best", "wall_seconds", "device", "versions", "host", "command",
)  # fmt: skip
"""The columns of benchmark.csv; dicts (params, options, versions, host) are JSON text."""


def csv_text(cells: list[dict[str, Any]], protocol: dict[str, Any]) -> str:
    """benchmark.csv: one line per finished cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for cell in cells:
        size = cell["protocol"]["image_size"]
        writer.writerow(
            {
                "column": cell["column"]["name"],
                "attack": cell["column"]["attack"] or "",
                "params": json.dumps(cell["column"]["params"], sort_keys=True),
                "row": cell["row"]["name"],
                "defense": cell["row"]["defense"],
                "defense_options": json.dumps(cell["row"]["defense_options"], sort_keys=True),
                **{k: cell["protocol"][k] for k in ("model", "recipe", "epochs", "batch_size")},
                "train_per_class": protocol["train_per_class"] or "",
                "test_per_class": protocol["test_per_class"] or "",
                "train_images": cell["protocol"]["train_images"],
                "test_images": cell["protocol"]["test_images"],
                "image_size": "x".join(map(str, size)) if size else "",
                **{k: cell[k] for k in ("seed", "test_acc_last", "test_acc_best", "wall_seconds", "device")},
                "versions": json.dumps(cell["versions"], sort_keys=True),
                "host": json.dumps(cell["host"], sort_keys=True),
                "command": cell["command"] or "",
            }
        )
    return buffer.getvalue()


PAGE_FILES = ("benchmark.json", "benchmark.csv", "benchmark.md", "benchmark.html", "benchmark.png")
"""What `write_records` and `write_benchmark` write into OUT."""


def check_page_files(out: str | Path) -> None:
    """Refuse an OUT whose benchmark files (or table.md) this tool did not write (before any work).

    They are ours when benchmark.json holds the "benchmark" key and benchmark.png (if present)
    carries the tool's PNG text; a file of the same name left by anything else is never replaced.
    """
    out = Path(out)
    present = [name for name in (*PAGE_FILES, "table.md") if (out / name).exists()]
    if not present:
        return
    ours = is_own_json(out / "benchmark.json", "benchmark") and (
        not (out / "benchmark.png").exists() or is_own_png(out / "benchmark.png")
    )
    if not ours:
        raise UserInputError(
            f"--out {out} holds {', '.join(present)} that this tool did not write; "
            "choose another --out, or move those files away"
        )


def write_records(
    out: Path,
    columns: list[Column],
    rows: dict[str, dict[str, Any]],
    protocol: TrainingProtocol,
    command: str | None = None,
) -> list[dict[str, Any]]:
    """Regenerate benchmark.json and benchmark.csv in `out` from the run directories; returns the cells."""
    cells = collect(out, columns, rows)
    plan = protocol_dict(protocol)
    write_json(
        out / "benchmark.json",
        {
            "benchmark": "defense × poison",
            "command": command,
            "protocol": plan,
            "columns": [c.to_dict() for c in columns],
            "rows": [{"name": name, **settings} for name, settings in rows.items()],
            "cells": cells,
        },
    )
    atomic_write_bytes(out / "benchmark.csv", csv_text(cells, plan).encode())
    return cells


def write_benchmark(
    out: str | Path,
    columns: list[Column],
    rows: dict[str, dict[str, Any]],
    protocol: TrainingProtocol,
    command: str | None = None,
    title: str | None = None,
) -> list[Path]:
    """Regenerate benchmark.json, .csv, .png, .md and .html in `out` from the run directories; returns their paths."""
    out = Path(out)
    cells = write_records(out, columns, rows, protocol, command)
    plan = protocol_dict(protocol)
    accuracy = accuracy_grid(cells, columns, list(rows))
    png = heatmap_png(accuracy, [c.label for c in columns], list(rows))
    atomic_write_bytes(out / "benchmark.png", png)
    summary = protection_rows(accuracy, columns, list(rows), image_quality(out, columns))
    blocks = page_blocks(accuracy, columns, list(rows), cells, plan, command, png, title, summary)
    heading = title or "Defenses × poisons"
    atomic_write_bytes(out / "benchmark.md", to_markdown(blocks).encode())
    atomic_write_bytes(out / "benchmark.html", to_html(blocks, heading).encode())
    return [out / f"benchmark.{ext}" for ext in ("json", "csv", "png", "md", "html")]


# --- the page ----------------------------------------------------------------------------------


def accuracy_grid(cells: list[dict[str, Any]], columns: list[Column], rows: list[str]) -> list[list[float | None]]:
    """Last-epoch test accuracy by [row][column]; None where the cell has not finished."""
    found = {(c["column"]["name"], c["row"]["name"]): c["test_acc_last"] for c in cells}
    return [[found.get((column.label, row)) for column in columns] for row in rows]


def best_rows(accuracy: list[list[float | None]], rows: list[str], column: int) -> set[int]:
    """The defended rows (not "none") with the highest accuracy in `column` (ties all count)."""
    values = {r: accuracy[r][column] for r, name in enumerate(rows) if name != "none"}
    finished = {r: v for r, v in values.items() if v is not None}
    if not finished:
        return set()
    top = max(finished.values())
    return {r for r, v in finished.items() if v == top}


def table_rows(accuracy: list[list[float | None]], columns: list[Column], rows: list[str]) -> list[list[str]]:
    """The page's table: defense, clean, cost on clean, then each poison; the best defense in bold."""
    best = {c: best_rows(accuracy, rows, c) for c in range(1, len(columns))}
    reference = accuracy[rows.index("none")][0] if "none" in rows else None
    lines = []
    for r, row in enumerate(rows):
        clean = accuracy[r][0]
        cost = reference - clean if reference is not None and clean is not None else None
        cells = [row, _cell(clean), "" if cost is None else f"{cost:+.2f}".replace("-", "−")]
        for c in range(1, len(columns)):
            text = _cell(accuracy[r][c])
            cells.append(f"{BEST}{text}{BEST}" if text and r in best[c] else text)
        lines.append(cells)
    return lines


def image_quality(out: Path, columns: list[Column]) -> dict[str, tuple[float, float]]:
    """{column key: (PSNR in dB, mean SSIM)} of each protected training set under OUT/data against the
    clean one, on every ``QUALITY_STEP``-th image (further apart past ``QUALITY_IMAGES`` images);
    columns without both saved sets, or of another shape, are left out."""
    from unlearnable.analysis.metrics import batch_ssim, psnr
    from unlearnable.data import is_saved_dataset, load_saved

    root = out / "data"
    if not is_saved_dataset(root / CLEAN):
        return {}
    clean = load_saved(root / CLEAN).images
    step = max(QUALITY_STEP, -(-len(clean) // QUALITY_IMAGES))
    reference = clean[::step]
    found = {}
    for column in columns[1:]:
        if not is_saved_dataset(root / column.key):
            continue
        images = load_saved(root / column.key).images
        if images.shape != clean.shape:
            continue
        images = images[::step]
        ssim = float(batch_ssim(images.double() / 255, reference.double() / 255).mean())
        found[column.key] = (psnr(images, reference), ssim)
    return found


def protection_rows(
    accuracy: list[list[float | None]],
    columns: list[Column],
    rows: list[str],
    quality: dict[str, tuple[float, float]],
) -> list[list[str]]:
    """One line per poison column whose clean and undefended cells have finished, by the audit's rule
    (`audit.protection_status`): protection, undefended, best defense, the share of the loss it wins
    back, every defense winning back at least half, PSNR, SSIM, verdict."""
    from unlearnable.app.audit import protection_status

    if "none" not in rows:
        return []
    none = rows.index("none")
    clean = accuracy[none][0]
    lines = []
    for c, column in enumerate(columns[1:], start=1):
        undefended = accuracy[none][c]
        defended: dict[str, float] = {}
        for r, row in enumerate(rows):
            value = accuracy[r][c]
            if r != none and value is not None:
                defended[row] = value
        if clean is None or undefended is None or not defended:
            continue
        best = max(defended, key=defended.__getitem__)
        lost = clean - undefended
        share = f"{100 * (defended[best] - undefended) / lost:.0f}%" if lost > 0 else "–"
        breakers = [f"{row} {number(v)}" for row, v in defended.items() if lost > 0 and v - undefended >= lost / 2]
        psnr_db, ssim = quality.get(column.key, (None, None))
        lines.append(
            [
                column.label,
                number(undefended),
                f"{best} {number(defended[best])}",
                share,
                ", ".join(breakers) or "–",
                "" if psnr_db is None else f"{psnr_db:.2f}",
                "" if ssim is None else f"{ssim:.3f}",
                protection_status(clean, undefended, defended[best]),
            ]
        )
    return lines


def _cell(value: float | None) -> str:
    """A finished cell's accuracy, or blank: a missing cell is never filled in."""
    return "" if value is None else number(value)


def heatmap_png(accuracy: list[list[float | None]], columns: list[str], rows: list[str]) -> bytes:
    """The heat map: rows defenses, columns poisons, colour = test accuracy (%), the number in each
    finished cell; unfinished cells are left white."""
    import matplotlib.pyplot as plt
    import numpy as np

    from unlearnable.figures import png_bytes

    values = np.array([[math.nan if v is None else v for v in line] for line in accuracy], dtype=float)
    values = values.reshape(len(rows), len(columns))
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(columns), 1.0 + 0.38 * len(rows)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for r in range(len(rows)):
        for c in range(len(columns)):
            if math.isfinite(values[r, c]):
                colour = "black" if values[r, c] > 60 else "white"
                ax.text(c, r, f"{values[r, c]:.1f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(columns)), columns, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("training data (poison)", fontsize=8)
    ax.set_ylabel("defense", fontsize=8)
    fig.colorbar(image, ax=ax, label="clean test accuracy (%)", fraction=0.04)
    fig.tight_layout()
    return png_bytes(fig, dpi=110)


def page_blocks(
    accuracy: list[list[float | None]],
    columns: list[Column],
    rows: list[str],
    cells: list[dict[str, Any]],
    protocol: dict[str, Any],
    command: str | None,
    png: bytes,
    title: str | None = None,
    summary: list[list[str]] | None = None,
) -> list[Block]:
    """The page as report blocks (rendered to Markdown and HTML by app/report/render.py)."""
    total = len(columns) * len(rows)
    per_class = (
        f"{protocol['train_per_class']} training and {protocol['test_per_class']} test images per class"
        if protocol["train_per_class"] is not None
        else "the whole training and test splits"
    )
    sizes = {tuple(c["protocol"]["image_size"] or ()) for c in cells}
    size = ", ".join("×".join(map(str, s)) for s in sorted(sizes) if s)
    setup = (
        f"Model `{protocol['model']}`, recipe `{protocol['recipe']}`, {protocol['epochs']} epoch{'' if protocol['epochs'] == 1 else 's'}, {per_class}"
        + (f", {size} images" if size else "")
        + f". {len(cells)} of {total} cells finished."
    )
    header = ["defense", CLEAN, "cost on clean", *(c.label for c in columns[1:])]
    numeric = set(range(1, len(header)))
    blocks: list[Block] = [
        Heading(1, title or "Defenses × poisons"),
        Paragraph(setup),
        Heading(2, "Clean test accuracy (%)"),
        Table(header, table_rows(accuracy, columns, rows), numeric),
        Figure("benchmark.png", png, "Clean test accuracy (%) by defense (rows) and training data (columns)"),
        Heading(2, "How to read it"),
        Paragraph(
            "Each cell is the last-epoch accuracy on the clean test split of a model trained on the column's "
            "training data with the row's defense. The `clean` column is the reference: without a poison, "
            "`none` is what the protocol learns, and `cost on clean` is what each defense costs there (points "
            "below `none`; − means it gained). In each poison column the `none` row is what the poison leaves "
            "an undefended trainer, and the best defense is in **bold**: a poison holds when even its best "
            "defense stays far below the clean column. Blank cells have not finished; rerun the command to "
            "train them."
        ),
        Paragraph(
            "Columns name the poison and the parameters changed from its defaults: `k5` kernel size 5, "
            "`pb 0.5` random taps up to 0.5 beside the single 1.0 (a stronger blur), `gray` grayscale, "
            "`mix 0.5` half of the training images poisoned. benchmark.json and benchmark.csv hold "
            "every finished cell with its protocol, seed, versions and host."
        ),
    ]
    if summary:
        blocks += [
            Heading(2, "Per protection"),
            Paragraph(
                "Each poison column by the audit's rule: a defense breaks a protection when it wins back at least "
                "half of what the protection took from clean training (the `none` row's clean cell); a "
                "protection that takes less than 10 points is no protection. PSNR and SSIM compare the "
                f"protected training images with their clean originals, on every {QUALITY_STEP}th image (images "
                f"further apart in sets of more than {QUALITY_STEP * QUALITY_IMAGES:,})."
            ),
            Table(
                [
                    "protection",
                    "undefended",
                    "best defense",
                    "wins back",
                    "defenses that win back ≥ half",
                    "PSNR (dB)",
                    "SSIM",
                    "verdict",
                ],
                summary,
                {1, 3, 5, 6},
            ),
        ]
    if command:
        blocks += [Paragraph("The command that made this page (it skips finished cells):"), Code(command)]
    return blocks
