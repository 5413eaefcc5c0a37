"""One self-contained HTML page for a run or a sweep: `fsd report OUT` (and `fsd gather`) write OUT/report.html.
This module decides what is on the page; fsdbatch.page is its form (HTML, tables, media as data URIs or links).

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

Turntables are what fsd3d.outputs wrote: H.264 MP4 (Debian's Chromium plays it; tests/e2e/test_browser.py checks
every <video> reports a duration) or GIF (shown as an image).
"""
from __future__ import annotations

import sys
from pathlib import Path

from fsd2d.errors import InputError
from fsd2d.folders import METRICS, REPORT, RUN_COMMANDS, RUN_RECORD, SEED_PREFIX, SWEEP_RECORD, whose
from fsd2d.io import atomic_path, check_output_dir, read_object
from fsdbatch.layout import SweepFolder, is_sweep, seed_dirs, summary_plot_files
from fsdbatch.page import GENERATOR, MIME, Media, Page, esc, fmt, table_html
from fsdbatch.table import SweepTable, collect, flatten, scalars

__all__ = ["EMBED_LIMIT", "REPORT_NAME", "Media", "write_report"]

REPORT_NAME = REPORT  # fsd2d.folders: every run and sweep layout allows it
EMBED_LIMIT = 100 * 2**20  # bytes of embedded media (before base64) above which EMBED falls back to LINK
TURNTABLES = ("turntable.mp4", "turntable.webm", "turntable.gif")  # the first one present is shown
VIEWS = "views.png"  # a seed's evaluation views (fsd3d.outputs)
DOWNLOADS = ("gaussians.ply", "mesh.glb", "mesh.obj")  # linked when present
MESH_RECORD = "mesh.json"  # a seed's mesh numbers, written by `fsd export-mesh`
CLOSING = "PLY / GLB / OBJ links point at the files next to this page."  # the page's last note


def is_ours(path: Path) -> bool:
    """Whether the page at `path` is one `fsd report` wrote (its generator tag; before the tag, its closing note)."""
    try:
        head = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">' in head[:2000] or (
        head.startswith("<!DOCTYPE html>") and CLOSING in head)


def settings_rows(config: dict, prefix: str = "") -> list[dict]:
    """A nested config as (setting, value) rows: {'train': {'steps': 3}} -> [{'setting': 'train.steps', ...}]."""
    rows = []
    for k, v in config.items():
        if isinstance(v, dict) and v:
            rows += settings_rows(v, f"{prefix}{k}.")
        else:
            rows.append({"setting": f"{prefix}{k}", "value": fmt(v)})
    return rows


def media_bytes(folder: Path) -> int:
    """Bytes of every figure and turntable the page would show from `folder` (recursively)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.suffix.lower() in MIME and p.is_file())


def seed_card(page: Page, seed_dir: Path, title: str, views: bool = True) -> str:
    """One seed of a gen-3d run: its turntable, its views figure (folded) and links to its PLY / GLB / OBJ."""
    parts = [f"<h3>{esc(title)}</h3>"]
    table = next((seed_dir / n for n in TURNTABLES if (seed_dir / n).is_file()), None)
    if table is not None:
        parts.append(page.turntable(table, title))
    if views and (seed_dir / VIEWS).is_file():
        parts.append(f'<details><summary>views</summary>{page.figure(seed_dir / VIEWS, title)}</details>')
    parts.append(page.links([seed_dir / n for n in DOWNLOADS if (seed_dir / n).is_file()]))
    return f'<div class="card">{"".join(parts)}</div>'


def write_report(out: Path, media: Media = Media.EMBED, sweep_table: SweepTable | None = None) -> Path:
    """Write out/report.html for a run folder (run.json) or a sweep folder (sweep.json); returns its path.

    sweep_table: fsdbatch.table.SweepTable when the caller (gather) has read the sweep already."""
    out = Path(out)
    sweep = is_sweep(out)
    if not sweep and whose(out) not in RUN_COMMANDS:
        raise InputError(f"{out} holds neither an fsd command's {RUN_RECORD} nor {SWEEP_RECORD}: give a folder "
                         "written by an fsd command (like gen-3d) or by `fsd batch`")
    check_output_dir(out, "report folder")
    path = out / REPORT_NAME
    if path.exists() and not is_ours(path):
        raise InputError(f"{path} was not written by `fsd report` and would be replaced: move it out first")
    if media is Media.EMBED and (size := media_bytes(out)) > EMBED_LIMIT:
        print(f"warning: {size / 2**20:.0f} MB of figures and videos in {out}: the report links them instead of "
              f"embedding them (more than {EMBED_LIMIT // 2**20} MB)", file=sys.stderr, flush=True)
        media = Media.LINK
    page = Page(out, media)
    title = sweep_page(page, out, sweep_table) if sweep else run_page(page, out)
    note = ("Figures and videos are embedded: this file is the whole report." if media is Media.EMBED else
            "Figures and videos are linked relatively: keep this file beside the run's folders.")
    page.add(f'<p class="note">{esc(note)} {CLOSING}</p>')
    with atomic_path(path, suffix=".tmp.html") as tmp:
        tmp.write_text(page.html(title), encoding="utf-8")
    return path


def run_page(page: Page, run_dir: Path) -> str:
    """Sections of one run (gen-3d, or any command's run.json + metrics.json); returns the page title."""
    record = read_object(run_dir / RUN_RECORD)
    command = record.get("command", "run")
    config = record.get("config", {}) if isinstance(record.get("config"), dict) else {}
    title = f"fsd {command}" + (f": '{config['prompt']}'" if "prompt" in config else "")
    run_metrics(page, run_dir)
    seeds = [d for _, d in seed_dirs(run_dir)]
    if seeds:
        page.add("<h2>Seeds</h2><div class=\"cards\">" + "".join(seed_card(page, d, d.name.replace("_", " "))
                                                                 for d in seeds) + "</div>")
    figures = sorted(run_dir.glob("*.png"))
    if figures:
        page.add("<h2>Figures</h2>" + "".join(f"<h3>{esc(p.name)}</h3>{page.figure(p, p.name)}" for p in figures))
    if isinstance(record.get("train_resolved"), dict):  # gen-3d: the values the prior chose for what was left open
        config = {**config, "train": record["train_resolved"]}
    page.add("<h2>Settings</h2>" + table_html(["setting", "value"], settings_rows(config)))
    return title


def run_metrics(page: Page, run_dir: Path) -> None:
    """The Metrics section of one run: its metrics.json's entries and, for gen-3d, one row per seed."""
    metrics_file = run_dir / METRICS
    metrics = read_object(metrics_file) if metrics_file.is_file() else None
    page.add("<h2>Metrics</h2>")
    if metrics is None:
        page.add(f'<p class="note">No {METRICS} yet: the run has not finished.</p>')
        return
    entries = [e for _, e in flatten(metrics, metrics_file)]
    columns = list(dict.fromkeys(k for e in entries for k in e if k != "seconds"))
    page.add(table_html(columns, entries))
    rows = per_seed_rows(run_dir, metrics)
    if rows:
        page.add("<h3>Per seed</h3>" + table_html(list(dict.fromkeys(k for r in rows for k in r)), rows))


def per_seed_rows(run_dir: Path, metrics: dict) -> list[dict]:
    """One row per seed: the scalars of metrics.json's per_seed entry and of seed_S/metrics.json (which also
    holds what only the seed records, like mesh_iou and watertight with --mesh), and seed_S/mesh.json's."""
    per_seed = metrics.get("per_seed") if isinstance(metrics.get("per_seed"), dict) else {}
    rows = {str(s): scalars(m) for s, m in per_seed.items() if isinstance(m, dict)}
    for _, d in seed_dirs(run_dir):
        seed = d.name[len(SEED_PREFIX):]
        if (d / METRICS).is_file():
            rows.setdefault(seed, {}).update(scalars(read_object(d / METRICS)))
        if (d / MESH_RECORD).is_file():
            mesh = read_object(d / MESH_RECORD)
            rows.setdefault(seed, {}).update({"mesh_iou": mesh.get("mean_iou"), "watertight": mesh.get("watertight"),
                                              "mesh_faces": mesh.get("faces")})
    return [{"seed": int(s) if s.isdigit() else s, **row} for s, row in
            sorted(rows.items(), key=lambda kv: (not kv[0].isdigit(), int(kv[0]) if kv[0].isdigit() else kv[0]))]


def sweep_page(page: Page, out: Path, table: SweepTable | None = None) -> str:
    """Sections of a sweep: its settings, the gathered table, summary plots, and the runs' seeds with the
    methods side by side; returns the page title."""
    table = collect(SweepFolder.open(out)) if table is None else table
    snap = table.snapshot
    title = f"fsd batch: {snap.get('name', out.name)} ({snap['command']})"
    page.add(f"<p>{len(table.finished)} of {len(snap['runs'])} runs finished"
             + (f"; not finished: {esc(', '.join(table.missing))}" if table.missing else "")
             + (f"; damaged (skipped): {esc(', '.join(table.damaged))}" if table.damaged else "") + ".</p>")
    page.add("<h2>Metrics</h2>" + (table_html(list(table.columns), list(table.rows)) if table.rows else
                                   '<p class="note">No finished runs yet.</p>'))
    plots = summary_plot_files(out)
    if plots:
        page.add("<h2>Summary plots</h2><div class=\"cards\">"
                 + "".join(f'<div class="card">{page.figure(p, p.name)}</div>' for p in plots) + "</div>")
    page.add(compare_section(page, snap, table.outputs))
    settings = [{"setting": k, "value": fmt(v)} for k, v in snap.get("fixed", {}).items()]
    settings += [{"setting": f"{k} (swept)", "value": fmt(v)} for k, v in snap.get("grid", {}).items()]
    page.add(f"<h2>Settings</h2><p>command: <code>fsd {esc(snap['command'])}</code></p>"
             + table_html(["setting", "value"], settings))
    return title


def compare_section(page: Page, snap: dict, outputs: dict[str, Path]) -> str:
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
        result = {r["folder"]: outputs[r["folder"]] for r in runs}
        parts += seed_rows(page, runs, result, "method" in swept)
        parts += run_figures(page, runs, result)
    return "".join(parts)


def seed_rows(page: Page, runs: list[dict], result: dict[str, Path], by_method: bool) -> list[str]:
    """One row of cards per seed folder met in the runs' outputs (`result`: run folder -> outputs folder), a card
    per run that has that seed (titled with the run's method when the sweep sweeps it)."""
    rows = []
    seeds = list(dict.fromkeys(d.name for r in runs for _, d in seed_dirs(result[r["folder"]])))
    for seed in seeds:
        cards = [seed_card(page, result[r["folder"]] / seed,
                           f"{seed.replace('_', ' ')}, method={r['params'].get('method', '-')}"
                           if by_method else f"{seed.replace('_', ' ')}")
                 for r in runs if (result[r["folder"]] / seed).is_dir()]
        rows.append(f'<div class="cards" data-seed="{esc(seed)}">{"".join(cards)}</div>')
    return rows


def run_figures(page: Page, runs: list[dict], result: dict[str, Path]) -> list[str]:
    """Each run's own figures (the PNGs in its outputs folder), folded under its folder's name."""
    parts = []
    for r in runs:
        figs = sorted(result[r["folder"]].glob("*.png"))
        if figs:
            parts.append(f"<details><summary>{esc(r['folder'])}: {len(figs)} figure(s)</summary>"
                         + "".join(page.figure(p, p.name) for p in figs) + "</details>")
    return parts
