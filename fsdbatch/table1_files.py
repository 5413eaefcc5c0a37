"""Table 1 written out (fsdbatch.table1 computes the rows): table1.md and table1.csv, one row per (space, method),
and for 3D rows table1_per_prompt.md / .csv, one row per prompt with each number's spread over the seeds.
A number is written with 3 decimals in markdown ('-' where undefined) and as Python writes it in CSV (empty where
undefined; an interval's two ends separated by a space).
"""
from __future__ import annotations

from pathlib import Path

from fsd2d.folders import TABLE1
from fsd2d.io import atomic_output_dir

MARKDOWN, CSV, PER_PROMPT_MARKDOWN, PER_PROMPT_CSV = TABLE1.files  # table1.md, .csv, table1_per_prompt.md, .csv
COLUMNS = ("space", "method", "prompts", "coverage", "nearest_psnr", "agreement", "holes", "diversity",
           "clip", "inception_score", "cross_fid")
PER_PROMPT_COLUMNS = ("space", "method", "prompt", "seeds", "reached", "reached_ci", "psnr", "psnr_std",
                      "agreement", "agreement_std", "holes", "holes_std", "diversity", "diversity_ci")


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_cell(x) for x in v) + "]"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _csv_cell(v) -> str:
    return "" if v is None else (" ".join(map(str, v)) if isinstance(v, list) else str(v))


def markdown(columns: tuple[str, ...], rows: list[dict]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_text(columns: tuple[str, ...], rows: list[dict]) -> str:
    return ",".join(columns) + "\n" + "".join(",".join(_csv_cell(r[c]) for c in columns) + "\n" for r in rows)


def to_markdown(rows: list[dict]) -> str:
    return markdown(COLUMNS, rows)


def per_prompt_markdown(rows: list[dict]) -> str:
    return markdown(PER_PROMPT_COLUMNS, rows)


def write_table(out: Path, rows: list[dict], note: str | None) -> None:
    """table1.md, table1.csv (and the per-prompt pair for 3D rows) in `out`, which a new folder replaces in one rename
    (`out`: new, or an earlier table1 output holding only its files: fsd2d.folders)."""
    with atomic_output_dir(out, TABLE1) as folder:
        write_files(folder, rows, note)


def write_files(folder: Path, rows: list[dict], note: str | None) -> None:
    """The table's files in `folder` (a fresh temporary one: write_table)."""
    (folder / MARKDOWN).write_text(to_markdown(rows) + (f"\n{note}\n" if note else ""))
    (folder / CSV).write_text(csv_text(COLUMNS, rows))
    per_prompt = [p for r in rows for p in r.get("per_prompt", [])]
    if per_prompt:
        (folder / PER_PROMPT_MARKDOWN).write_text(per_prompt_markdown(per_prompt))
        (folder / PER_PROMPT_CSV).write_text(csv_text(PER_PROMPT_COLUMNS, per_prompt))
