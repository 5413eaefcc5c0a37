"""The README's "From Python" examples run as written (with fewer steps) and stay under 10 lines each."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.usefixtures("one_thread")


def python_examples() -> list[str]:
    section = README.read_text().split("## From Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_shows_2d_and_3d_in_under_10_lines_each():
    blocks = python_examples()
    assert len(blocks) == 2
    for block in blocks:
        lines = [ln for ln in block.splitlines() if ln.strip()]
        assert len(lines) <= 10, block


def test_the_readme_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    two_d, three_d = python_examples()
    exec(compile(two_d.replace("steps=100", "steps=10"), "README 2D", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["ddim", "fsd", "sds"]
    small = three_d.replace("Train3DConfig(method=NoiseKind.FSD)", "Train3DConfig(method=NoiseKind.FSD, steps=4)")
    assert small != three_d
    exec(compile(small, "README 3D", "exec"), {})
    assert (tmp_path / "outputs" / "mushroom" / "seed_3" / "gaussians.ply").is_file()
