"""The report's sections as blocks: the summary and the tables, the figures (written under figures/),
the deconvolution diagnostics, how to read it, and the commands that produced the runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from unlearnable.app.recover import diagnostics, kernels_png, replay
from unlearnable.app.report.figures import MAX_CLASSES, SPECTRA_PER_CLASS, curves_png, spectra_by_class, spectra_png
from unlearnable.app.report.render import (
    DASH,
    Block,
    Bullets,
    Code,
    Figure,
    Heading,
    Paragraph,
    Table,
    describe_adversarial,
    duration,
    number,
)
from unlearnable.app.report.runs import CONDITION_LABELS, DEFENSE, JPEG_COPY, Run, dig, published_for
from unlearnable.app.show import show_command
from unlearnable.data import load_saved
from unlearnable.data.lineage import load_source
from unlearnable.errors import UserInputError
from unlearnable.io import atomic_write_bytes


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


def summary_line(dataset: str, runs: list[Run]) -> str:
    """One line per dataset: how many runs, and the last-epoch accuracy of each Table-1 condition."""
    published = published_for(dataset) or {}
    unfinished = sum(not run.complete for run in runs)
    head = f"**{dataset}**: {len(runs)} run{'s' if len(runs) != 1 else ''}"
    head += f", {unfinished} not finished" if unfinished else ""
    found = []
    for key, label in CONDITION_LABELS.items():
        values = [number(run.last_acc) for run in runs if run.condition == key]
        if values:
            versus = f" (published {published[key]:.2f})" if key in published else ""
            found.append(f"{label} {' / '.join(values)}%{versus}")
    others = sum(run.condition == "other" for run in runs)
    tail = "; ".join(found) if found else "none of the Table-1 conditions"
    return f"{head} — {tail}" + (f"; {others} other run{'s' if others != 1 else ''}" if others else "") + "."


MEASURED_HEADER = [
    "condition",
    "model",
    "recipe",
    "epochs",
    "defense",
    "adversarial",
    "last test acc (%)",
    "best test acc (%)",
    "wall time",
    "images/s",
    "device",
]


def measured_table(runs: list[Run]) -> Table:
    """Every run as measured here, one row each."""
    rows = []
    for run in runs:
        config, final = run.config, run.results.final
        rows.append(
            [
                run.label,
                str(config.get("model") or DASH),
                recipe_cell(config),
                epochs_cell(run),
                str(config.get("defense") or "none"),
                describe_adversarial(run.adversarial),
                number(run.last_acc),
                number(dig(final, "test_acc_best")),
                duration(dig(final, "wall_seconds")),
                number(dig(final, "images_per_s"), ",.0f"),
                str(run.results.device or config.get("device") or DASH),
            ]
        )
    flagged = {i for i, run in enumerate(runs) if not run.complete}
    return Table(MEASURED_HEADER, rows, numeric={3, 6, 7, 8, 9}, flagged=flagged)


def published_table(runs: list[Run], published: dict[str, float]) -> Table:
    """The four Table-1 conditions: measured (last epoch) beside published, and the difference."""
    rows: list[list[str]] = []
    flagged: set[int] = set()
    for key, label in CONDITION_LABELS.items():
        matching: list[Run | None] = [run for run in runs if run.condition == key] or [None]
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
    blocks: list[Block] = [
        Heading(2, "Summary"),
        Bullets([summary_line(d, runs) for d, runs in groups.items()]),
        Heading(2, "Runs as measured here"),
    ]
    for dataset, runs in groups.items():
        blocks += [Heading(3, dataset), measured_table(runs)]
    blocks.append(Heading(2, "Compared with the published numbers"))
    blocks.append(
        Paragraph(
            "Published: Kim & Sandoval-Segura (2024), Table 1 — ResNet-18, 60 epochs, last-epoch "
            "test accuracy; its AT column is the CUDA paper's (Sadasivan et al. 2023). Difference = "
            "measured − published, in percentage points."
        )
    )
    for dataset, runs in groups.items():
        blocks.append(Heading(3, dataset))
        published = published_for(dataset)
        if published is None:
            blocks.append(
                Paragraph(f"No published number for {dataset}; the measured table above is all there is.", note=True)
            )
            continue
        if dataset.endswith(JPEG_COPY):
            blocks.append(
                Paragraph(
                    "Compared with the numbers for the original dataset; JPEG compression costs the "
                    "copy a little clean accuracy.",
                    note=True,
                )
            )
        blocks.append(published_table(runs, published))
        others = [run.label for run in runs if run.condition == "other"]
        if others:
            blocks.append(Paragraph(f"Not a Table-1 condition, so not compared: {', '.join(others)}.", note=True))
    return blocks


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
    blocks: list[Block] = [
        Heading(2, "Samples: clean, poisoned, defended"),
        Paragraph(f"From the saved training set `{saved}` (the spectra below use it too)."),
    ]
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
        spectra = spectra_by_class(protected, clean)
        png = spectra_png(spectra, str(protected.meta.get("attack", "poisoned")))
    except READ_ERRORS as e:
        return blocks + [Paragraph(f"No spectra: {e}", note=True)]
    blocks.append(Paragraph("The class-wise blur shows up as a distinct spectral fingerprint per class."))
    if clean is None:
        blocks.append(
            Paragraph(
                "The clean source of this dataset is not available, so the clean and difference columns are left out.",
                note=True,
            )
        )
    caption = (
        f"Rows: classes of `{saved.name}` (up to {MAX_CLASSES}), up to {SPECTRA_PER_CLASS} images each, "
        f"channels averaged; {DEFENSE} drawn with a generator seeded 0. Each column shares one colour scale."
    )
    return blocks + [save_figure(out, "spectra.png", png, caption)]


def poison_sections(runs: list[Run], out: Path) -> list[Block]:
    """Samples and spectra of the first run's saved poisoned training set, or a note when there is none."""
    saved = next((run.saved_poison for run in runs if run.saved_poison is not None), None)
    if saved is None:
        note = Paragraph(
            "No run was trained on a saved poisoned dataset, so there are no samples or spectra.", note=True
        )
        return [Heading(2, "Samples and spectra"), note]
    return samples_section(saved, out) + spectra_section(saved, out)


def deconv_section(runs: list[Run], out: Path) -> list[Block]:
    """For the first run trained with the deconv defense on a saved poisoned set: estimated vs true
    kernels (the key, read for evaluation only) and PSNR vs clean of its poisoned and recovered images."""
    run = next((r for r in runs if isinstance(dig(r.results.preprocessed, "deconv"), dict) and r.saved_poison), None)
    if run is None or run.saved_poison is None or run.results.preprocessed is None:
        return []
    record = run.results.preprocessed["deconv"]
    blocks: list[Block] = [
        Heading(2, "Deconvolution diagnostics"),
        Paragraph(
            f"Run `{run.name}` estimated {len(record['kernels'])} class kernels of size "
            f"{record['kernel_size']} ({record.get('method', 'border')}) from `{run.saved_poison}` "
            f"alone and deconvolved {record.get('deconvolved', 'its')} images; the key is used "
            "here only to judge them."
        ),
    ]
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
    blocks.append(
        Paragraph(
            f"{found['hits']} of the {found['poisoned']} poisoned images were deconvolved, and "
            f"{found['false_alarms']} clean ones. PSNR is against the clean source over the poisoned "
            "images (raw: CUDA rescaled each image to max 255, which caps it)."
        )
    )
    blocks.append(
        Table(["class", "kernel error", "PSNR poisoned (dB)", "PSNR recovered (dB)"], rows, numeric={1, 2, 3})
    )
    png = kernels_png(estimated, true if true is not None and true.shape == estimated.shape else None)
    return blocks + [
        save_figure(
            out,
            "kernels.png",
            png,
            "Estimated class kernels (top) and the key's (bottom), each normalised to sum 1, one colour scale.",
        )
    ]


HOW_TO_READ = (
    "Each row of the tables is one training run; accuracies are top-1 on the clean test set, in percent. "
    '"Last" is the final epoch\'s accuracy (what the papers report), "best" the best epoch\'s. A poison works when '
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
    """The command line that started each run, for the runs whose results.json records one (`RunResults.command`)."""
    lines = []
    for run in runs:
        if run.results.command:
            lines += [f"# {run.name}", run.results.command]
    if not lines:
        return []
    return [Heading(2, "Commands that produced the runs"), Code("\n".join(lines))]
