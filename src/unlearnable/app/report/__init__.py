"""The report: tables and figures over training runs, as Markdown and as one self-contained HTML page.

    write_report([Path("out/runs/clean"), Path("out/runs/cuda")], Path("out/report"))

reads every run's results.json (`unlearnable.training.results.RunResults`), groups the runs by
dataset, maps them to the four conditions of Kim & Sandoval-Segura's Table 1 and sets them beside
the published numbers, then draws the accuracy curves, the clean / poisoned / defended sample grid
and per-class spectra of the first saved poisoned training set. It reads results; it never trains
and never recomputes an accuracy. Whatever is missing (a results file, a saved dataset, the clean
source) leaves a one-line note.

Modules: `runs` (reading runs, their condition and dataset), `render` (the blocks, Markdown and
HTML), `figures` (the PNGs), `sections` (what the report says, as blocks).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from unlearnable.app.report.render import Block, Heading, Paragraph, describe_adversarial, to_html, to_markdown
from unlearnable.app.report.runs import CONDITION_LABELS, Run, condition_of, dataset_name, group_by_dataset, load_run
from unlearnable.app.report.sections import (
    HOW_TO_READ,
    commands_section,
    curves_section,
    deconv_section,
    poison_sections,
    results_sections,
)
from unlearnable.errors import UserInputError
from unlearnable.io import MARKER, atomic_write_bytes, write_marker, written_by_tool

__all__ = [
    "CONDITION_LABELS",
    "DEFAULT_TITLE",
    "Run",
    "check_report_dir",
    "condition_of",
    "dataset_name",
    "describe_adversarial",
    "load_run",
    "write_report",
]

DEFAULT_TITLE = "Unlearnable data: results report"
REPORT_ENTRIES = frozenset({"report.md", "report.html", "figures", MARKER})


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
    groups = group_by_dataset(runs)
    blocks: list[Block] = [
        Heading(1, title),
        Paragraph(f"Generated {datetime.now():%Y-%m-%d %H:%M} from {len(runs)} of {len(loaded)} run directories."),
    ]
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


def check_report_dir(out: Path) -> None:
    """Refuse a report directory that holds anything but an earlier report (which is replaced)."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} exists and is not a directory; choose a new path")
    if (
        out.is_dir()
        and any(out.iterdir())
        and not written_by_tool(out)
        and not {e.name for e in out.iterdir()} <= REPORT_ENTRIES
    ):
        raise UserInputError(f"--out {out} holds files unlearnable did not write; choose a new or empty directory")
