"""The report: tables and figures over training runs, as Markdown and as one self-contained HTML page.

    write_report([Path("out/runs/clean"), Path("out/runs/cuda")], Path("out/report"))

reads every run's results.json (written by the trainer), groups the runs by dataset, maps them to the
four conditions of Kim & Sandoval-Segura's Table 1 and sets them beside the published numbers, then
draws the accuracy curves, the clean / poisoned / defended sample grid and per-class spectra of the
first saved poisoned training set. It reads results; it never trains and never recomputes an accuracy.
Whatever is missing (a results file, a saved dataset, the clean source) leaves a one-line note.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from unlearnable.data import ImageDataset, is_saved_dataset, load_saved, to_unit_float  # noqa: E402
from unlearnable.defenses import build_defense  # noqa: E402
from unlearnable.app.recover import diagnostics, kernels_png, replay  # noqa: E402
from unlearnable.errors import UserInputError  # noqa: E402
from unlearnable.io import MARKER, PNG_SOFTWARE, atomic_write_bytes, write_marker, written_by_tool  # noqa: E402
from unlearnable.app.show import pick_samples, show_command  # noqa: E402
from unlearnable.data.lineage import load_source  # noqa: E402

DASH = "—"
DEFAULT_TITLE = "Unlearnable data: results report"
DEFENSE = "rsk+ff"
SPECTRA_PER_CLASS = 500
MAX_CLASSES = 10
LOG_EPS = 1e-8

CONDITIONS = {
    "clean": "clean",
    "cuda": "CUDA (no defense)",
    "cuda+at": "CUDA + AT (L∞ 4/255)",
    "cuda+rsk+ff": "CUDA + RSK+FF",
}
"""The four Table-1 conditions: key → label."""

# Kim & Sandoval-Segura (2024), Table 1: ResNet-18, last-epoch test accuracy (%) on the clean test set,
# 60 epochs of the paper recipe. Their AT column is the CUDA paper's (Sadasivan et al., CVPR 2023),
# PGD L∞ 4/255. Transcribed in /work/shared/TARGETS.md.
PUBLISHED: dict[str, dict[str, float]] = {
    "CIFAR-10": {"clean": 94.34, "cuda": 23.25, "cuda+at": 44.40, "cuda+rsk+ff": 78.53},
    "CIFAR-100": {"clean": 74.41, "cuda": 17.33, "cuda+at": 34.34, "cuda+rsk+ff": 53.33},
    "ImageNet-100": {"clean": 81.76, "cuda": 2.68, "cuda+at": 38.68, "cuda+rsk+ff": 43.08},
}

KIND_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet100": "ImageNet-100",
              "fashion-mnist": "Fashion-MNIST"}
JPEG_COPY = " (JPEG copy)"


# ---------------------------------------------------------------------------------------------------
# Reading runs


def dig(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]... or None where a level is missing or not a dict."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def read_meta(spec: Any) -> tuple[Path, dict[str, Any]] | None:
    """(directory, meta.json) of the saved dataset at `spec`, or None if it is not a readable one."""
    if not isinstance(spec, str) or not spec:
        return None
    path = Path(spec).expanduser()
    if not is_saved_dataset(path):
        return None
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return (path, meta) if isinstance(meta, dict) else None


def dataset_name(source: Any, depth: int = 0) -> str:
    """A reader's name for the dataset a `source` dict ({spec, kind, path}) describes.

    Named kinds map to their usual spelling; an ImageFolder is named after its file (a CIFAR-10 folder
    is "CIFAR-10 (JPEG copy)"); a saved dataset is followed to the source recorded in its meta.json.
    """
    if not isinstance(source, dict):
        return "unknown dataset"
    kind = str(source.get("kind") or "").lower()
    if kind in KIND_NAMES:
        return KIND_NAMES[kind]
    location = str(source.get("path") or source.get("spec") or "")
    if kind == "saved":
        found = read_meta(location)
        if found is not None and depth < 5 and found[1].get("source"):
            return dataset_name(found[1]["source"], depth + 1)
        return f"saved dataset {Path(location).name}" if location else "unknown dataset"
    name = Path(location).name.lower()
    if re.search(r"cifar-?100", name):
        return "CIFAR-100" + JPEG_COPY
    if re.search(r"cifar-?10", name):
        return "CIFAR-10" + JPEG_COPY
    if re.search(r"imagenet-?100", name):
        return "ImageNet-100"
    if location:
        return f"{'ImageFolder' if kind == 'imagefolder' else kind or 'dataset'} {Path(location).name}"
    return "unknown dataset"


def published_for(dataset: str) -> dict[str, float] | None:
    """The published Table-1 numbers for `dataset` (a JPEG copy is compared with its original)."""
    return PUBLISHED.get(dataset.removesuffix(JPEG_COPY))


def is_linf_4(adversarial: dict[str, Any]) -> bool:
    """True for L∞ PGD at ε = 4/255 (0.015, the published code's value, counts too)."""
    eps = adversarial.get("eps")
    close = not isinstance(eps, (int, float)) or abs(eps * 255 - 4) < 0.25
    return str(adversarial.get("norm", "")).lower() == "linf" and close


def condition_of(attack: Any, defense: Any, adversarial: Any, defense_options: Any = None) -> str:
    """The Table-1 condition of a run (a key of CONDITIONS) or "other"."""
    defense = str(defense or "none").lower()
    if defense == "at-linf" and not adversarial:  # the same PGD hook, named in the defense chain
        defense, adversarial = "none", {"norm": "linf", "eps": (defense_options or {}).get("eps", 4 / 255)}
    if not attack:
        return "clean" if defense == "none" and not adversarial else "other"
    if str(attack).lower() != "cuda":
        return "other"
    if defense == "none" and not adversarial:
        return "cuda"
    if defense == "none" and isinstance(adversarial, dict) and is_linf_4(adversarial):
        return "cuda+at"
    if defense == DEFENSE and not adversarial:
        return "cuda+rsk+ff"
    return "other"


@dataclass
class Run:
    """One run directory's results.json and what the report derives from it."""

    path: Path
    results: dict[str, Any]
    dataset: str = ""
    condition: str = "other"
    saved_poison: Path | None = None

    @property
    def name(self) -> str:
        """The run's name, or its directory's."""
        return str(self.results.get("name") or self.path.name)

    @property
    def config(self) -> dict[str, Any]:
        """The training config ({} when missing)."""
        config = self.results.get("config")
        return config if isinstance(config, dict) else {}

    @property
    def complete(self) -> bool:
        """True once the trainer marked the run complete."""
        return self.results.get("status") == "complete"

    @property
    def epochs(self) -> list[dict[str, Any]]:
        """The per-epoch records written so far."""
        epochs = self.results.get("epochs")
        return [e for e in epochs if isinstance(e, dict)] if isinstance(epochs, list) else []

    @property
    def last_acc(self) -> Any:
        """The final test accuracy, or for an unfinished run the latest epoch's."""
        final = dig(self.results, "final", "test_acc_last")
        if final is None and self.epochs:
            return self.epochs[-1].get("test_acc")
        return final

    @property
    def label(self) -> str:
        """The run name, with a flag when it has not finished."""
        if self.complete:
            return self.name
        status = self.results.get("status") or "no status"
        return f"{self.name} (incomplete: {status})"


def load_run(run_dir: Path) -> Run | str:
    """The run in `run_dir`, or a one-line note saying why it cannot be read."""
    path = run_dir / "results.json"
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        return f"{run_dir}: no results.json yet; not shown."
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{path}: unreadable ({e}); not shown."
    if not isinstance(results, dict):
        return f"{path}: not a JSON object; not shown."
    run = Run(run_dir, results)
    train_spec = run.config.get("train")
    saved = read_meta(train_spec) or read_meta(dig(results, "train_data", "source", "path"))
    train_data = results.get("train_data") if isinstance(results.get("train_data"), dict) else {}
    attack = train_data["attack"] if "attack" in train_data else (saved[1].get("attack") if saved else None)
    source = train_data.get("source") or (saved[1].get("source") if saved else None)
    if source is None and isinstance(train_spec, str):
        source = {"kind": train_spec, "spec": train_spec, "path": train_spec}
    run.dataset = dataset_name(source)
    run.condition = condition_of(attack, run.config.get("defense"), run.config.get("adversarial"),
                                 run.config.get("defense_options"))
    if saved is not None and saved[1].get("attack"):
        run.saved_poison = saved[0]
    return run


# ---------------------------------------------------------------------------------------------------
# Formatting


def number(value: Any, fmt: str = ".2f") -> str:
    """`value` formatted, or a dash when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return DASH
    return format(value, fmt)


def duration(seconds: Any) -> str:
    """Seconds as '12.3 s', '20 min 05 s' or '3 h 07 min'."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def describe_adversarial(adversarial: Any) -> str:
    """e.g. 'L∞ 4/255, 10 steps', 'L2 ε=0.5, 7 steps', 'none'."""
    if not adversarial:
        return "none"
    if not isinstance(adversarial, dict):
        return str(adversarial)
    norm = str(adversarial.get("norm", "?"))
    linf = norm.lower() == "linf"
    text = "L∞" if linf else norm.upper()
    eps = adversarial.get("eps")
    if isinstance(eps, (int, float)):
        levels = eps * 255
        text += f" {round(levels)}/255" if linf and abs(levels - round(levels)) < 0.02 else f" ε={eps:g}"
    steps = adversarial.get("steps")
    return text + (f", {steps} steps" if steps is not None else "")


def epochs_cell(run: Run) -> str:
    """Epochs trained: the total for a finished run, 'done of total' for an unfinished one."""
    total = dig(run.config, "recipe", "epochs")
    done = len(run.epochs)
    if run.complete:
        return str(total if total is not None else done)
    return f"{done} of {total if total is not None else '?'}"


def recipe_cell(config: dict[str, Any]) -> str:
    """The recipe's name (the config holds either the recipe dict or its name)."""
    recipe = config.get("recipe")
    if isinstance(recipe, dict):
        return str(recipe.get("name") or DASH)
    return str(recipe) if recipe else DASH


# ---------------------------------------------------------------------------------------------------
# The document: a few block kinds, rendered once as Markdown and once as HTML


@dataclass
class Heading:
    """A section title; level 1 is the report's title."""

    level: int
    text: str


@dataclass
class Paragraph:
    """Running text (`code` and **bold** allowed); a note is set in italics."""

    text: str
    note: bool = False


@dataclass
class Bullets:
    """A bulleted list."""

    items: list[str]


@dataclass
class Table:
    """A table of strings; `numeric` columns are right-aligned, `flagged` rows highlighted."""

    header: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)
    flagged: set[int] = field(default_factory=set)


@dataclass
class Figure:
    """A PNG: linked by `path` (relative to the report) from Markdown, embedded in HTML."""

    path: str
    png: bytes
    caption: str


@dataclass
class Code:
    """A block of shell commands."""

    text: str


Block = Heading | Paragraph | Bullets | Table | Figure | Code


def md_row(cells: list[str]) -> str:
    """One Markdown table row, with pipes inside cells escaped."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def to_markdown(blocks: list[Block]) -> str:
    """The blocks as GitHub-flavoured Markdown; figures link to their PNG files."""
    parts = []
    for block in blocks:
        match block:
            case Heading(level, text):
                parts.append(f"{'#' * level} {text}")
            case Paragraph(text, note):
                parts.append(f"_{text}_" if note else text)
            case Bullets(items):
                parts.append("\n".join(f"- {item}" for item in items))
            case Table(header, rows, numeric, _):
                rule = "|" + "|".join("---:" if i in numeric else "---" for i in range(len(header))) + "|"
                lines = [md_row(header), rule]
                parts.append("\n".join(lines + [md_row(row) for row in rows]))
            case Figure(path, _, caption):
                parts.append(f"![{caption}]({path})\n\n_{caption}_")
            case Code(text):
                parts.append(f"```sh\n{text}\n```")
    return "\n\n".join(parts) + "\n"


CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1120px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.8em; margin-bottom: .2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
h3 { margin-bottom: .3em; }
.scroll { overflow-x: auto; margin: .4em 0 1.2em; }
table { border-collapse: collapse; font-size: 13.5px; }
th, td { border: 1px solid #d0d0d0; padding: .3em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; vertical-align: bottom; }
td { white-space: nowrap; } td:first-child { white-space: normal; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flagged td { background: #fff6dd; }
figure { margin: 1em 0 1.5em; } figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: 13px; color: #555; margin-top: .4em; }
.note { color: #666; font-style: italic; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; font-size: 90%; }
pre { background: #f6f6f6; padding: .8em 1em; overflow-x: auto; font-size: 13px; }
pre code { background: none; padding: 0; }
"""


def inline(text: str) -> str:
    """Escape text for HTML and turn `code` and **bold** into tags."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def html_cells(values: list[str], tag: str, numeric: set[int]) -> str:
    """One table row's cells; numeric columns are right-aligned."""
    return "".join(f'<{tag}{" class=num" if i in numeric else ""}>{inline(v)}</{tag}>' for i, v in enumerate(values))


def to_html(blocks: list[Block], title: str) -> str:
    """The blocks as one HTML page with inline CSS and every figure embedded as a data: URI."""
    body = []
    for block in blocks:
        match block:
            case Heading(level, text):
                body.append(f"<h{level}>{inline(text)}</h{level}>")
            case Paragraph(text, note):
                body.append(f'<p class="note">{inline(text)}</p>' if note else f"<p>{inline(text)}</p>")
            case Bullets(items):
                body.append("<ul>" + "".join(f"<li>{inline(item)}</li>" for item in items) + "</ul>")
            case Table(header, rows, numeric, flagged):
                lines = [f"<tr>{html_cells(header, 'th', numeric)}</tr>"]
                lines += [f'<tr{" class=flagged" if r in flagged else ""}>{html_cells(row, "td", numeric)}</tr>'
                          for r, row in enumerate(rows)]
                body.append('<div class="scroll"><table>' + "".join(lines) + "</table></div>")
            case Figure(_, png, caption):
                data = base64.b64encode(png).decode()
                body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{inline(caption)}</figcaption></figure>")
            case Code(text):
                body.append(f"<pre><code>{html.escape(text)}</code></pre>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------------------------------------------
# Tables


def summary_line(dataset: str, runs: list[Run]) -> str:
    """One line per dataset: how many runs, and the last-epoch accuracy of each Table-1 condition."""
    published = published_for(dataset) or {}
    unfinished = sum(not run.complete for run in runs)
    head = f"**{dataset}**: {len(runs)} run{'s' if len(runs) != 1 else ''}"
    head += f", {unfinished} not finished" if unfinished else ""
    found = []
    for key, label in CONDITIONS.items():
        values = [number(run.last_acc) for run in runs if run.condition == key]
        if values:
            versus = f" (published {published[key]:.2f})" if key in published else ""
            found.append(f"{label} {' / '.join(values)}%{versus}")
    others = sum(run.condition == "other" for run in runs)
    tail = "; ".join(found) if found else "none of the Table-1 conditions"
    return f"{head} — {tail}" + (f"; {others} other run{'s' if others != 1 else ''}" if others else "") + "."


MEASURED_HEADER = ["condition", "model", "recipe", "epochs", "defense", "adversarial", "last test acc (%)",
                   "best test acc (%)", "wall time", "images/s", "device"]


def measured_table(runs: list[Run]) -> Table:
    """Every run as measured here, one row each."""
    rows = []
    for run in runs:
        config, final = run.config, run.results.get("final")
        rows.append([run.label, str(config.get("model") or DASH), recipe_cell(config), epochs_cell(run),
                     str(config.get("defense") or "none"), describe_adversarial(config.get("adversarial")),
                     number(run.last_acc), number(dig(final, "test_acc_best")),
                     duration(dig(final, "wall_seconds")), number(dig(final, "images_per_s"), ",.0f"),
                     str(run.results.get("device") or config.get("device") or DASH)])
    flagged = {i for i, run in enumerate(runs) if not run.complete}
    return Table(MEASURED_HEADER, rows, numeric={3, 6, 7, 8, 9}, flagged=flagged)


def published_table(runs: list[Run], published: dict[str, float]) -> Table:
    """The four Table-1 conditions: measured (last epoch) beside published, and the difference."""
    rows, flagged = [], set()
    for key, label in CONDITIONS.items():
        matching = [run for run in runs if run.condition == key] or [None]
        for run in matching:
            if run is None:
                rows.append([label, DASH, "not run", f"{published[key]:.2f}", DASH])
                continue
            measured = run.last_acc
            diff = number(measured - published[key], "+.2f") if number(measured) != DASH else DASH
            if not run.complete:
                flagged.add(len(rows))
            rows.append([label, run.label, number(measured), f"{published[key]:.2f}", diff])
    header = ["condition", "run", "measured (%)", "published (%)", "difference (points)"]
    return Table(header, rows, numeric={2, 3, 4}, flagged=flagged)


def results_sections(groups: dict[str, list[Run]]) -> list[Block]:
    """Summary, the measured tables and the comparison with the published numbers."""
    blocks: list[Block] = [Heading(2, "Summary"), Bullets([summary_line(d, runs) for d, runs in groups.items()]),
                           Heading(2, "Runs as measured here")]
    for dataset, runs in groups.items():
        blocks += [Heading(3, dataset), measured_table(runs)]
    blocks.append(Heading(2, "Compared with the published numbers"))
    blocks.append(Paragraph("Published: Kim & Sandoval-Segura (2024), Table 1 — ResNet-18, 60 epochs, last-epoch "
                            "test accuracy; its AT column is the CUDA paper's (Sadasivan et al. 2023). Difference = "
                            "measured − published, in percentage points."))
    for dataset, runs in groups.items():
        blocks.append(Heading(3, dataset))
        published = published_for(dataset)
        if published is None:
            blocks.append(Paragraph(f"No published number for {dataset}; the measured table above is all there is.",
                                    note=True))
            continue
        if dataset.endswith(JPEG_COPY):
            blocks.append(Paragraph("Compared with the numbers for the original dataset; JPEG compression costs the "
                                    "copy a little clean accuracy.", note=True))
        blocks.append(published_table(runs, published))
        others = [run.label for run in runs if run.condition == "other"]
        if others:
            blocks.append(Paragraph(f"Not a Table-1 condition, so not compared: {', '.join(others)}.", note=True))
    return blocks


# ---------------------------------------------------------------------------------------------------
# Figures


def png_bytes(fig: plt.Figure, dpi: int = 110) -> bytes:
    """Render and close a figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": PNG_SOFTWARE})
    plt.close(fig)
    return buffer.getvalue()


def curves_png(runs: list[Run], several_datasets: bool) -> bytes | None:
    """Test accuracy and train loss against epoch for every run, or None when no run has epochs."""
    runs = [run for run in runs if run.epochs]
    if not runs:
        return None
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for run in runs:
        label = run.label + (f" [{run.dataset}]" if several_datasets else "")
        style = "-" if run.complete else "--"
        for ax, key in ((acc_ax, "test_acc"), (loss_ax, "train_loss")):
            points = [(e.get("epoch", i + 1), e.get(key)) for i, e in enumerate(run.epochs)]
            points = [(x, y) for x, y in points if number(x) != DASH and number(y) != DASH]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, style, marker="o" if len(xs) < 15 else None, markersize=3, label=label)
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy (clean test set)")
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="Train loss")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
    handles, labels = acc_ax.get_legend_handles_labels()
    if handles:  # as many columns as fit the figure's width at this font size
        ncols = max(1, min(len(handles), 160 // (max(map(len, labels)) + 8)))
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8.5, frameon=False)
    return png_bytes(fig)


def mean_log_power(images: torch.Tensor, chunk: int = 64) -> np.ndarray:
    """Mean over images and channels of log(|F|² + eps), F the centred 2-D FFT; float N×C×H×W → H×W."""
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)
    for start in range(0, len(images), chunk):
        spectrum = torch.fft.fftshift(torch.fft.fft2(images[start:start + chunk]), dim=(-2, -1))
        total += torch.log(spectrum.abs().square() + LOG_EPS).double().sum(dim=(0, 1))
    return (total / (len(images) * images.shape[1])).numpy()


def class_spectra(protected: ImageDataset, clean: ImageDataset | None, seed: int = 0,
                  chunk: int = 128) -> dict[str, dict[str, np.ndarray]]:
    """Per class (up to MAX_CLASSES; up to SPECTRA_PER_CLASS of its poisoned images): the mean log-power
    spectra of the clean, poisoned and defended images and the poisoned − clean difference."""
    defense, generator = build_defense(DEFENSE), torch.Generator().manual_seed(seed)
    spectra = {}
    for c, idx in pick_samples(protected, SPECTRA_PER_CLASS, MAX_CLASSES).items():
        poisoned = to_unit_float(protected.images[idx])
        defended = torch.cat([defense(poisoned[s:s + chunk], generator) for s in range(0, len(idx), chunk)])
        row = {"poisoned": mean_log_power(poisoned), "defended": mean_log_power(defended)}
        if clean is not None:
            row["clean"] = mean_log_power(to_unit_float(clean.images[idx]))
            row["difference"] = row["poisoned"] - row["clean"]
        spectra[protected.classes[c]] = row
    return spectra


def spectra_png(spectra: dict[str, dict[str, np.ndarray]], attack: str) -> bytes:
    """Rows = classes, columns = clean | poisoned | defended | poisoned − clean, one colour scale per column."""
    keys = [k for k in ("clean", "poisoned", "defended", "difference") if k in next(iter(spectra.values()))]
    titles = {"clean": "clean", "poisoned": f"poisoned ({attack})", "defended": f"defended ({DEFENSE})",
              "difference": "poisoned − clean"}
    n_rows, n_cols = len(spectra), len(keys)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.7 * n_cols + 1.2, 1.6 * n_rows + 1.1),
                             squeeze=False, layout="constrained")
    for j, key in enumerate(keys):
        stack = np.stack([row[key] for row in spectra.values()])
        if key == "difference":
            bound = float(np.abs(stack).max()) or 1.0
            scale = {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}
        else:
            scale = {"cmap": "viridis", "vmin": float(stack.min()), "vmax": float(stack.max())}
        for i, (name, row) in enumerate(spectra.items()):
            ax = axes[i][j]
            image = ax.imshow(row[key], interpolation="nearest", **scale)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[key], fontsize=10)
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        bar = fig.colorbar(image, ax=axes[:, j], location="bottom", fraction=0.5 / (1.6 * n_rows + 1.1), aspect=12)
        bar.ax.tick_params(labelsize=8)
    fig.suptitle("Per-class mean log-power spectrum, log(|FFT|² + ε), centred", fontsize=11)
    return png_bytes(fig, dpi=90)


def save_figure(out: Path, name: str, png: bytes, caption: str) -> Figure:
    """Write out/figures/<name> atomically and return its block."""
    atomic_write_bytes(out / "figures" / name, png)
    return Figure(f"figures/{name}", png, caption)


def curves_section(runs: list[Run], out: Path, several_datasets: bool) -> list[Block]:
    """The accuracy and loss curves of every run, or a note when no run has an epoch yet."""
    blocks: list[Block] = [Heading(2, "Accuracy curves")]
    png = curves_png(runs, several_datasets)
    if png is None:
        return blocks + [Paragraph("No run has recorded an epoch yet; no curves.", note=True)]
    caption = "Test accuracy (left) and train loss (right) per epoch; dashed lines are runs that have not finished."
    return blocks + [save_figure(out, "curves.png", png, caption)]


READ_ERRORS = (UserInputError, OSError, ValueError, RuntimeError)
"""What reading a saved dataset or drawing from it may raise; the report turns them into a note."""


def samples_section(saved: Path, out: Path) -> list[Block]:
    """The clean / poisoned / defended sample grid of `saved` (via `unlearnable show`)."""
    blocks: list[Block] = [Heading(2, "Samples: clean, poisoned, defended"),
                           Paragraph(f"From the saved training set `{saved}` (the spectra below use it too).")]
    try:
        png = show_command(saved, out / "figures" / "samples.png", defense=DEFENSE, per_class=1).read_bytes()
    except READ_ERRORS as e:
        return blocks + [Paragraph(f"No sample grid: {e}", note=True)]
    caption = f"One image per class of `{saved.name}`: clean (when its source is available), poisoned, after {DEFENSE}."
    return blocks + [Figure("figures/samples.png", png, caption)]


def spectra_section(saved: Path, out: Path) -> list[Block]:
    """Per-class mean log-power spectra of the clean, poisoned and defended images of `saved`."""
    blocks: list[Block] = [Heading(2, "Spectra")]
    try:
        protected = load_saved(saved)
        clean = load_source(protected, None)
        spectra = class_spectra(protected, clean)
        png = spectra_png(spectra, str(protected.meta.get("attack", "poisoned")))
    except READ_ERRORS as e:
        return blocks + [Paragraph(f"No spectra: {e}", note=True)]
    blocks.append(Paragraph("The class-wise blur shows up as a distinct spectral fingerprint per class."))
    if clean is None:
        blocks.append(Paragraph("The clean source of this dataset is not available, so the clean and difference "
                                "columns are left out.", note=True))
    caption = (f"Rows: classes of `{saved.name}` (up to {MAX_CLASSES}), up to {SPECTRA_PER_CLASS} images each, "
               f"channels averaged; {DEFENSE} drawn with a generator seeded 0. Each column shares one colour scale.")
    return blocks + [save_figure(out, "spectra.png", png, caption)]


def poison_sections(runs: list[Run], out: Path) -> list[Block]:
    """Samples and spectra of the first run's saved poisoned training set, or a note when there is none."""
    saved = next((run.saved_poison for run in runs if run.saved_poison is not None), None)
    if saved is None:
        note = Paragraph("No run was trained on a saved poisoned dataset, so there are no samples or spectra.",
                         note=True)
        return [Heading(2, "Samples and spectra"), note]
    return samples_section(saved, out) + spectra_section(saved, out)


def deconv_section(runs: list[Run], out: Path) -> list[Block]:
    """For the first run trained with the deconv defense on a saved poisoned set: estimated vs true
    kernels (the key, read for evaluation only) and PSNR vs clean of its poisoned and recovered images."""
    run = next((r for r in runs if isinstance(dig(r.results, "preprocessed", "deconv"), dict) and r.saved_poison), None)
    if run is None or run.saved_poison is None:
        return []
    record = run.results["preprocessed"]["deconv"]
    blocks: list[Block] = [Heading(2, "Deconvolution diagnostics"),
                           Paragraph(f"Run `{run.name}` estimated {len(record['kernels'])} class kernels of size "
                                     f"{record['kernel_size']} ({record.get('method', 'border')}) from `{run.saved_poison}` "
                                     f"alone and deconvolved {record.get('deconvolved', 'its')} images; the key is used "
                                     "here only to judge them.")]
    try:
        poisoned = load_saved(run.saved_poison)
        found = diagnostics(poisoned, replay(poisoned, record), load_source(poisoned, None))
    except READ_ERRORS as e:
        return blocks + [Paragraph(f"No diagnostics: {e}", note=True)]
    estimated = torch.tensor(record["kernels"], dtype=torch.float32)
    true = torch.tensor(poisoned.meta["kernels"], dtype=torch.float32) if "kernels" in poisoned.meta else None
    rows = []
    for c in range(poisoned.num_classes):
        cells = [str(poisoned.classes[c])]
        for key, fmt in (("kernel_error", "{:.1%}"), ("psnr_poisoned", "{:.2f}"), ("psnr_recovered", "{:.2f}")):
            values = found.get(key)
            cells.append("–" if values is None or values[c] is None else fmt.format(values[c]))
        rows.append(cells)
    blocks.append(Paragraph(f"{found['hits']} of the {found['poisoned']} poisoned images were deconvolved, and "
                            f"{found['false_alarms']} clean ones. PSNR is against the clean source over the poisoned "
                            "images (raw: CUDA rescaled each image to max 255, which caps it)."))
    blocks.append(Table(["class", "kernel error", "PSNR poisoned (dB)", "PSNR recovered (dB)"], rows, numeric={1, 2, 3}))
    png = kernels_png(estimated, true if true is not None and true.shape == estimated.shape else None)
    return blocks + [save_figure(out, "kernels.png", png, "Estimated class kernels (top) and the key's (bottom), each "
                                 "normalised to sum 1, one colour scale.")]


# ---------------------------------------------------------------------------------------------------
# Prose


HOW_TO_READ = (
    "Each row of the tables is one training run; accuracies are top-1 on the clean test set, in percent. "
    "\"Last\" is the final epoch's accuracy (what the papers report), \"best\" the best epoch's. A poison works when "
    "a model trained on it does badly on clean test data (the CUDA row far below the clean row); a defense works when "
    "it brings that number back towards clean. Runs on a smaller budget than the paper's (fewer epochs, a subset, a "
    "small model) are not expected to match the published numbers; compare the gaps between conditions rather than "
    "the absolute values. In the spectra, a blur removes high frequencies: the poisoned − clean difference is blue "
    "away from the centre, with a pattern that differs from class to class — the shortcut a network learns instead "
    "of the images' content (red horizontal and vertical lines through the centre come from the border that zero "
    "padding darkens). RSK+FF sharpens with random kernels, then keeps only the lowest 30% of DCT frequencies; the "
    "defended column shows how much of the per-class pattern survives."
)


def commands_section(runs: list[Run]) -> list[Block]:
    """The exact command of every run whose config records one."""
    lines = []
    for run in runs:
        command = run.config.get("command")
        if isinstance(command, list):
            command = shlex.join(str(part) for part in command)
        if command:
            lines += [f"# {run.name}", str(command)]
    if not lines:
        return []
    return [Heading(2, "Commands that produced the runs"), Code("\n".join(lines))]


def write_report(run_dirs: list[Path], out: Path, title: str | None = None) -> tuple[Path, Path]:
    """Write out/report.md and a self-contained out/report.html (figures under out/figures/).

    Args:
        run_dirs: training run directories, each holding the trainer's results.json.
        out: the report directory (created if needed).
        title: the report's title (default: DEFAULT_TITLE).

    Returns:
        (the Markdown path, the HTML path).
    """
    out, title = Path(out), title or DEFAULT_TITLE
    check_report_dir(out)
    loaded = [load_run(Path(d)) for d in run_dirs]
    runs = [r for r in loaded if isinstance(r, Run)]
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.dataset, []).append(run)
    blocks: list[Block] = [Heading(1, title),
                           Paragraph(f"Generated {datetime.now():%Y-%m-%d %H:%M} from {len(runs)} of "
                                     f"{len(loaded)} run directories.")]
    blocks += [Paragraph(note, note=True) for note in loaded if isinstance(note, str)]
    if runs:
        blocks += results_sections(groups)
    blocks += curves_section(runs, out, len(groups) > 1)
    blocks += poison_sections(runs, out)
    blocks += deconv_section(runs, out)
    blocks += [Heading(2, "How to read this"), Paragraph(HOW_TO_READ)]
    blocks += commands_section(runs)
    markdown, page = out / "report.md", out / "report.html"
    atomic_write_bytes(markdown, to_markdown(blocks).encode())
    atomic_write_bytes(page, to_html(blocks, title).encode())
    write_marker(out, "report")
    return markdown, page


REPORT_ENTRIES = frozenset({"report.md", "report.html", "figures", MARKER})


def check_report_dir(out: Path) -> None:
    """Refuse a report directory that holds anything but an earlier report (which is replaced)."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} exists and is not a directory; choose a new path")
    if out.is_dir() and any(out.iterdir()) and not written_by_tool(out) \
            and not {e.name for e in out.iterdir()} <= REPORT_ENTRIES:
        raise UserInputError(f"--out {out} holds files unlearnable did not write; choose a new or empty directory")
