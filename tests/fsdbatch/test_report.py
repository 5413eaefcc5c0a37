"""`fsd report` / `fsd gather` (fsdbatch.report): one self-contained HTML page for a run or a sweep."""
import base64
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

from cli import app
from fsdbatch import report as reporting
from fsdbatch.report import REPORT_NAME, Media, write_report

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # the fixtures run gen-3d (a few seconds each)


class Refs(HTMLParser):
    """Every src / href of a page, with its tag, and the text of <th> cells."""

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.cards: list[str] = []  # <h3> titles inside .card divs
        self._h3 = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href"):
                self.refs.append((tag, name, value))
        self._h3 = tag == "h3"

    def handle_data(self, data):
        if self._h3:
            self.cards.append(data)
            self._h3 = False


def parse(path: Path) -> Refs:
    p = Refs()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_run_report_embeds_every_turntable_and_figure_byte_for_byte(run):
    res = CliRunner().invoke(app, ["report", str(run)])
    assert res.exit_code == 0, res.output
    page = run / REPORT_NAME
    assert res.output.startswith(f"wrote {page}")
    refs = parse(page).refs
    media = [v for tag, a, v in refs if a == "src"]
    assert media and all(v.startswith("data:") for v in media)  # nothing fetched: no file, no network
    payloads = {base64.b64decode(v.split(",", 1)[1]) for v in media}
    for seed in ("seed_0", "seed_1"):  # the very bytes of each seed's turntable and views figure
        assert (run / seed / "turntable.mp4").read_bytes() in payloads
        assert (run / seed / "views.png").read_bytes() in payloads
    assert (run / "summary.png").read_bytes() in payloads
    videos = [v for tag, a, v in refs if tag == "video"]
    assert len(videos) == 2 and all(v.startswith("data:video/mp4;base64,") for v in videos)


def test_run_report_links_the_seeds_files_relatively(run):
    page = write_report(run)
    links = [unquote(v) for tag, a, v in parse(page).refs if tag == "a"]
    want = {f"seed_{s}/{name}" for s in (0, 1) for name in ("gaussians.ply", "mesh.glb")}
    assert want <= set(links)
    assert all((page.parent / link).is_file() for link in links)


def test_run_report_shows_the_settings_and_each_seeds_metrics(run):
    text = (run / REPORT_NAME).read_text() if (run / REPORT_NAME).exists() else write_report(run).read_text()
    assert "<td class=t>train.steps</td><td class=t>1</td>" in text
    assert "<td class=t>prompt</td><td class=t>mushroom</td>" in text
    per_seed = text.split("<h3>Per seed</h3>", 1)[1].split("</table>", 1)[0]
    assert "<th class=t>mesh_iou</th>" in per_seed and "<th class=t>majority</th>" in per_seed
    assert re.findall(r"<tr><td>(\d+)</td>", per_seed) == ["0", "1"]  # one row per seed, in order


def test_link_mode_references_files_that_exist_and_is_small(run):
    res = CliRunner().invoke(app, ["report", str(run), "--link-media"])
    assert res.exit_code == 0, res.output
    page = run / REPORT_NAME
    refs = parse(page).refs
    assert not any(v.startswith("data:") for _, _, v in refs)
    assert {unquote(v) for t, a, v in refs if t == "video"} == {"seed_0/turntable.mp4", "seed_1/turntable.mp4"}
    assert all((run / unquote(v)).is_file() for _, _, v in refs)
    assert page.stat().st_size < 20_000


def test_embedding_past_the_limit_falls_back_to_links(run, monkeypatch, capsys):
    monkeypatch.setattr(reporting, "EMBED_LIMIT", 1)
    page = write_report(run, Media.EMBED)
    assert "warning:" in capsys.readouterr().err
    assert not any(v.startswith("data:") for _, _, v in parse(page).refs)


def test_gather_writes_a_sweep_report_with_the_methods_side_by_side(sweep):
    res = CliRunner().invoke(app, ["gather", str(sweep)])
    assert res.exit_code == 0, res.output
    assert f"report: {sweep / REPORT_NAME}" in res.output
    text = (sweep / REPORT_NAME).read_text()
    rows = text.split('<div class="cards" data-seed=')[1:]  # one row of cards per seed
    seeds = [re.findall(r"<h3>(seed \d+), method=(\w+)</h3>", row) for row in rows]
    assert seeds == [[("seed 0", "fsd"), ("seed 0", "sds")], [("seed 1", "fsd"), ("seed 1", "sds")]]
    refs = parse(sweep / REPORT_NAME).refs
    assert sum(t == "video" for t, _, _ in refs) == 4
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    for name in runs:  # the metrics table names each run
        assert f"<td class=t>{name}</td>" in text
    plys = [unquote(v) for t, a, v in refs if t == "a" and v.endswith(".ply")]
    assert len(plys) == 4 and all((sweep / p).is_file() for p in plys)


def test_report_on_a_folder_that_is_no_run_is_one_error_line(tmp_path):
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2
    assert res.stderr.strip().startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
