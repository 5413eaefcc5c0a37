"""One self-contained HTML page for a run or a sweep: `fsd report OUT` (and `fsd gather`) write OUT/report.html.

The page holds the settings, the metrics table(s), the figures (PNG), a turntable per seed (and per method in
a sweep, FSD beside SDS for the same seed and the same other settings), and links to each seed's PLY / GLB /
OBJ. It opens from disk with no server and no network: nothing is fetched but the page's own data.

Media (figures and turntables):
    Media.EMBED (default)  base64 data URIs inside the page: the page alone is the whole report (mail it, copy it).
                           At 32 px a seed adds ~120 kB (turntable.mp4 30-40 kB, views.png ~45 kB, base64 +33%),
                           at 128 px ~500 kB, so a sweep of 24 seeds is a few MB to ~12 MB. Beyond EMBED_LIMIT
                           bytes of media the page falls back to LINK with one `warning:` line (a browser opening
                           a page of hundreds of MB is slow, and gather must not make one unasked).
    Media.LINK             relative references (src="seed_0/turntable.mp4"): a small page that works while it
                           stays in OUT beside the files.
PLY / GLB / OBJ files are always relative links (downloads, not something a page shows).

Turntables are what fsd3d.outputs wrote: H.264 MP4 (Debian's Chromium plays it; tests/test_browser.py checks
every <video> reports a duration) or GIF (shown as an image).
"""
from __future__ import annotations

import base64
import enum
import html
import math
import os
import re
import sys
from pathlib import Path
from urllib.parse import quote

from fsd2d.errors import InputError
from fsd2d.folders import REPORT, RUN_COMMANDS, whose
from fsd2d.io import atomic_path, check_output_dir, read_object
from fsdbatch.table import collect, flatten, scalars

__all__ = ["EMBED_LIMIT", "REPORT_NAME", "Media", "write_report"]

REPORT_NAME = REPORT  # fsd2d.folders: every run and sweep layout allows it
GENERATOR = "fsd report"  # the page's <meta name="generator">: how a later report tells its own page
EMBED_LIMIT = 100 * 2**20  # bytes of embedded media (before base64) above which EMBED falls back to LINK
MIME = {".png": "image/png", ".gif": "image/gif", ".mp4": "video/mp4", ".webm": "video/webm"}
TURNTABLES = ("turntable.mp4", "turntable.webm", "turntable.gif")  # the first one present is shown
DOWNLOADS = ("gaussians.ply", "mesh.glb", "mesh.obj")  # linked when present
SEED_DIR = re.compile(r"seed_(\d+)")

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}h3{font-size:1em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}th{background:#f0f0f0}
td.t,th.t{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.card{border:1px solid #ddd;padding:.5em;border-radius:4px}
.card video,.card img.turntable{width:384px;max-width:100%;image-rendering:pixelated;display:block}
img.figure{max-width:100%;display:block;margin:.5em 0}
.links a{margin-right:.8em}.note{color:#666;font-size:.85em}
"""


class Media(str, enum.Enum):
    """How the page carries its figures and turntables (module docstring)."""

    EMBED = "embed"
    LINK = "link"


class _Page:
    """Collects the page's sections; media go in as data URIs or relative references."""

    def __init__(self, folder: Path, media: Media):
        self.folder = folder
        self.media = media
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def src(self, path: Path) -> str:
        if self.media is Media.EMBED:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            return f"data:{MIME[path.suffix.lower()]};base64,{data}"
        return self.href(path)

    def href(self, path: Path) -> str:
        return quote(Path(os.path.relpath(path, self.folder)).as_posix(), safe="/")

    def figure(self, path: Path, alt: str) -> str:
        return f'<img class="figure" src="{self.src(path)}" alt="{esc(alt)}">'

    def turntable(self, path: Path, label: str) -> str:
        if path.suffix.lower() == ".gif":
            return f'<img class="turntable" src="{self.src(path)}" alt="{esc(label)}">'
        return (f'<video src="{self.src(path)}" title="{esc(label)}" autoplay loop muted playsinline controls>'
                f"</video>")

    def links(self, seed_dir: Path) -> str:
        found = [seed_dir / n for n in DOWNLOADS if (seed_dir / n).is_file()]
        return ('<div class="links">' + "".join(f'<a href="{self.href(p)}" download>{esc(p.name)}</a>'
                                                for p in found) + "</div>") if found else ""

    def seed_card(self, seed_dir: Path, title: str, views: bool = True) -> str:
        parts = [f"<h3>{esc(title)}</h3>"]
        table = next((seed_dir / n for n in TURNTABLES if (seed_dir / n).is_file()), None)
        if table is not None:
            parts.append(self.turntable(table, title))
        if views and (seed_dir / "views.png").is_file():
            parts.append(f'<details><summary>views</summary>{self.figure(seed_dir / "views.png", title)}</details>')
        parts.append(self.links(seed_dir))
        return f'<div class="card">{"".join(parts)}</div>'

    def html(self, title: str) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f'<meta name="generator" content="{GENERATOR}">'
                f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n<h1>{esc(title)}</h1>\n"
                + "\n".join(self.parts) + "\n</body></html>\n")


def is_ours(path: Path) -> bool:
    """Whether the page at `path` is one `fsd report` wrote (its generator tag; before the tag, its closing note)."""
    try:
        head = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">' in head[:2000] or (
        head.startswith("<!DOCTYPE html>") and "PLY / GLB / OBJ links point at the files next to this page." in head)


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value) -> str:
    """A table cell: floats to 4 significant digits, everything else as text."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return "" if value is None else str(value)


def table_html(columns: list[str], rows: list[dict]) -> str:
    def cell(tag: str, v) -> str:
        text = fmt(v)
        numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
        return f"<{tag}{'' if numeric else ' class=t'}>{esc(text)}</{tag}>"

    head = "".join(f"<th class=t>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(cell("td", r.get(c)) for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def settings_rows(config: dict, prefix: str = "") -> list[dict]:
    """A nested config as (setting, value) rows: {'train': {'steps': 3}} -> [{'setting': 'train.steps', ...}]."""
    rows = []
    for k, v in config.items():
        if isinstance(v, dict) and v:
            rows += settings_rows(v, f"{prefix}{k}.")
        else:
            rows.append({"setting": f"{prefix}{k}", "value": fmt(v)})
    return rows


def seed_dirs(run_dir: Path) -> list[Path]:
    """run_dir/seed_S folders in the order of S."""
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := SEED_DIR.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def media_bytes(folder: Path) -> int:
    """Bytes of every figure and turntable the page would show from `folder` (recursively)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.suffix.lower() in MIME and p.is_file())


def write_report(out: Path, media: Media = Media.EMBED, sweep_table=None) -> Path:
    """Write out/report.html for a run folder (run.json) or a sweep folder (sweep.json); returns its path.

    sweep_table: fsdbatch.table.SweepTable when the caller (gather) has read the sweep already."""
    out = Path(out)
    is_sweep = (out / "sweep.json").is_file()
    if not is_sweep and whose(out) not in RUN_COMMANDS:
        raise InputError(f"{out} holds neither an fsd command's run.json nor sweep.json: give a folder written by an "
                         "fsd command (like gen-3d) or by `fsd batch`")
    check_output_dir(out, "report folder")
    path = out / REPORT_NAME
    if path.exists() and not is_ours(path):
        raise InputError(f"{path} was not written by `fsd report` and would be replaced: move it out first")
    if media is Media.EMBED and (size := media_bytes(out)) > EMBED_LIMIT:
        print(f"warning: {size / 2**20:.0f} MB of figures and videos in {out}: the report links them instead of "
              f"embedding them (more than {EMBED_LIMIT // 2**20} MB)", file=sys.stderr, flush=True)
        media = Media.LINK
    page = _Page(out, media)
    title = sweep_page(page, out, sweep_table) if is_sweep else run_page(page, out)
    note = ("Figures and videos are embedded: this file is the whole report." if media is Media.EMBED else
            "Figures and videos are linked relatively: keep this file beside the run's folders.")
    page.add(f'<p class="note">{esc(note)} PLY / GLB / OBJ links point at the files next to this page.</p>')
    with atomic_path(path, suffix=".tmp.html") as tmp:
        tmp.write_text(page.html(title), encoding="utf-8")
    return path


def run_page(page: _Page, run_dir: Path) -> str:
    """Sections of one run (gen-3d, or any command's run.json + metrics.json); returns the page title."""
    record = read_object(run_dir / "run.json")
    command = record.get("command", "run")
    config = record.get("config", {}) if isinstance(record.get("config"), dict) else {}
    title = f"fsd {command}" + (f": '{config['prompt']}'" if "prompt" in config else "")
    metrics_file = run_dir / "metrics.json"
    metrics = read_object(metrics_file) if metrics_file.is_file() else None
    page.add("<h2>Metrics</h2>")
    if metrics is None:
        page.add('<p class="note">No metrics.json yet: the run has not finished.</p>')
    else:
        entries = [e for _, e in flatten(metrics, metrics_file)]
        columns = list(dict.fromkeys(k for e in entries for k in e if k != "seconds"))
        page.add(table_html(columns, entries))
        rows = per_seed_rows(run_dir, metrics)
        if rows:
            page.add("<h3>Per seed</h3>" + table_html(list(dict.fromkeys(k for r in rows for k in r)), rows))
    seeds = seed_dirs(run_dir)
    if seeds:
        page.add("<h2>Seeds</h2><div class=\"cards\">" + "".join(page.seed_card(d, d.name.replace("_", " "))
                                                                 for d in seeds) + "</div>")
    figures = sorted(run_dir.glob("*.png"))
    if figures:
        page.add("<h2>Figures</h2>" + "".join(f"<h3>{esc(p.name)}</h3>{page.figure(p, p.name)}" for p in figures))
    if isinstance(record.get("train_resolved"), dict):  # gen-3d: the values the prior chose for what was left open
        config = {**config, "train": record["train_resolved"]}
    page.add("<h2>Settings</h2>" + table_html(["setting", "value"], settings_rows(config)))
    return title


def per_seed_rows(run_dir: Path, metrics: dict) -> list[dict]:
    """One row per seed: the scalars of metrics.json's per_seed entry and of seed_S/metrics.json (which also
    holds what only the seed records, like mesh_iou and watertight with --mesh), and seed_S/mesh.json's."""
    per_seed = metrics.get("per_seed") if isinstance(metrics.get("per_seed"), dict) else {}
    rows = {str(s): scalars(m) for s, m in per_seed.items() if isinstance(m, dict)}
    for d in seed_dirs(run_dir):
        if (d / "metrics.json").is_file():
            rows.setdefault(d.name[len("seed_"):], {}).update(scalars(read_object(d / "metrics.json")))
        if (d / "mesh.json").is_file():  # written by `fsd export-mesh`
            mesh = read_object(d / "mesh.json")
            rows.setdefault(d.name[len("seed_"):], {}).update({"mesh_iou": mesh.get("mean_iou"),
                                                               "watertight": mesh.get("watertight"),
                                                               "mesh_faces": mesh.get("faces")})
    return [{"seed": int(s) if s.isdigit() else s, **row} for s, row in
            sorted(rows.items(), key=lambda kv: (not kv[0].isdigit(), int(kv[0]) if kv[0].isdigit() else kv[0]))]


def sweep_page(page: _Page, out: Path, table=None) -> str:
    """Sections of a sweep: its settings, the gathered table, summary plots, and the runs' seeds with the
    methods side by side; returns the page title."""
    table = collect(out) if table is None else table
    snap = table.snapshot
    title = f"fsd batch: {snap.get('name', out.name)} ({snap['command']})"
    page.add(f"<p>{len(table.finished)} of {len(snap['runs'])} runs finished"
             + (f"; not finished: {esc(', '.join(table.missing))}" if table.missing else "")
             + (f"; damaged (skipped): {esc(', '.join(table.damaged))}" if table.damaged else "") + ".</p>")
    page.add("<h2>Metrics</h2>" + (table_html(list(table.columns), list(table.rows)) if table.rows else
                                   '<p class="note">No finished runs yet.</p>'))
    plots = sorted(out.glob("summary_*.png"))
    if plots:
        page.add("<h2>Summary plots</h2><div class=\"cards\">"
                 + "".join(f'<div class="card">{page.figure(p, p.name)}</div>' for p in plots) + "</div>")
    page.add(compare_section(page, out, snap, table.outputs))
    settings = [{"setting": k, "value": fmt(v)} for k, v in snap.get("fixed", {}).items()]
    settings += [{"setting": f"{k} (swept)", "value": fmt(v)} for k, v in snap.get("grid", {}).items()]
    page.add(f"<h2>Settings</h2><p>command: <code>fsd {esc(snap['command'])}</code></p>"
             + table_html(["setting", "value"], settings))
    return title


def compare_section(page: _Page, out: Path, snap: dict, outputs: dict[str, str]) -> str:
    """Per combination of the swept settings other than the method: one row per seed, one column per method
    (FSD beside SDS for the same seed); the run's other figures under it. `outputs`: each finished run's
    outputs folder (SweepTable.outputs)."""
    swept = list(snap.get("swept", []))
    others = [k for k in swept if k != "method"]
    groups: dict[tuple, list[dict]] = {}
    for run in snap["runs"]:
        if run["folder"] in outputs:
            groups.setdefault(tuple(fmt(run["params"].get(k)) for k in others), []).append(run)
    parts = ["<h2>Runs</h2>"]
    for key, runs in groups.items():
        label = ", ".join(f"{k}={v}" for k, v in zip(others, key)) or "all runs"
        parts.append(f"<h3>{esc(label)}</h3>")
        result = {r["folder"]: out / r["folder"] / outputs[r["folder"]] for r in runs}
        seeds = list(dict.fromkeys(d.name for r in runs for d in seed_dirs(result[r["folder"]])))
        for seed in seeds:
            cards = [page.seed_card(result[r["folder"]] / seed,
                                    f"{seed.replace('_', ' ')}, method={r['params'].get('method', '-')}"
                                    if "method" in swept else f"{seed.replace('_', ' ')}")
                     for r in runs if (result[r["folder"]] / seed).is_dir()]
            parts.append(f'<div class="cards" data-seed="{esc(seed)}">{"".join(cards)}</div>')
        for r in runs:
            figs = sorted(result[r["folder"]].glob("*.png"))
            if figs:
                parts.append(f"<details><summary>{esc(r['folder'])}: {len(figs)} figure(s)</summary>"
                             + "".join(page.figure(p, p.name) for p in figs) + "</details>")
    return "".join(parts)

