"""The README and the documentation site (mkdocs.yml, docs/) say what the code does: their Python blocks run, the API
page names exactly the public API, the CLI reference is the typer app's, and every results table has its command.
`mkdocs build --strict` (.ci/run) checks the links, the anchors and that every API name still exists."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PYTHON_QUICK_START = DOCS / "getting-started" / "python.md"
pytestmark = pytest.mark.usefixtures("one_thread")


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def fewer_steps(block: str) -> str:
    """The block as written, with 4 steps wherever it sets steps, and 4 for the 3D run that takes the default."""
    small = re.sub(r"\bsteps=\d+", "steps=4", block)
    return small.replace("Train3DConfig(method=NoiseKind.FSD)", "Train3DConfig(method=NoiseKind.FSD, steps=4)")


def test_the_readme_is_a_front_door_of_at_most_250_lines():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    for section in ("## Install and run", "## Quick start: the command line", "## Quick start: Python",
                    "## Results in brief", "## Reproduce the paper", "## Models and priors", "## Package map",
                    "## Tests and CI", "## Citation"):
        assert section in text, section
    # the two fresh-machine commands, exactly as .ci/run installs and tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install torch==2.13.0 && pip install -e . && fsd compare-2d" in text
    assert "pip install -e \".[test]\" && python -m pytest -q" in text
    assert "pip install --quiet torch==2.13.0" in ci and "python3 -m pytest -q\n" in ci


def test_the_readme_shows_2d_and_3d_in_under_10_lines_each():
    blocks = python_blocks(README)
    assert len(blocks) == 2
    for block in blocks:
        assert len([ln for ln in block.splitlines() if ln.strip()]) <= 10, block


def test_the_readme_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    two_d, three_d = python_blocks(README)
    exec(compile(fewer_steps(two_d), "README 2D", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["ddim", "fsd", "sds"]
    assert fewer_steps(three_d) != three_d
    exec(compile(fewer_steps(three_d), "README 3D", "exec"), {})
    assert (tmp_path / "outputs" / "mushroom" / "seed_3" / "gaussians.ply").is_file()


@pytest.mark.slow
def test_every_python_block_of_the_quick_start_runs(tmp_path, monkeypatch, capsys):
    """The page's own blocks (its first 2D and 3D ones are the README's, included: test_the_readme_examples_run)."""
    page = PYTHON_QUICK_START.read_text()
    assert '--8<-- "README.md:python-2d"' in page and '--8<-- "README.md:python-3d"' in page
    blocks = python_blocks(PYTHON_QUICK_START)
    assert len(blocks) == 4
    monkeypatch.chdir(tmp_path)
    printed = []
    for i, block in enumerate(blocks):
        exec(compile(fewer_steps(block), f"{PYTHON_QUICK_START.name} block {i}", "exec"), {})
        printed.append(capsys.readouterr().out.splitlines())
    assert float(printed[0][-1]) < 1e-10  # the sampler block: fsd-exact against DDIM, float64
    assert printed[1] == ["True"]  # the study's run.json loads back into the same config
    assert (tmp_path / "outputs" / "shuffle" / "run.json").is_file()


def test_the_api_page_documents_exactly_the_public_api():
    import fsd2d
    import fsd3d

    page = (DOCS / "reference" / "python-api.md").read_text()
    documented = re.findall(r"^::: (\w+)\.(\w+)$", page, flags=re.M)
    exported = [("fsd2d", n) for n in fsd2d.__all__] + [("fsd3d", n) for n in fsd3d.__all__]
    assert sorted(documented) == sorted(exported)


def test_the_cli_reference_is_the_typer_apps_help():
    from cli import app
    import typer

    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = (DOCS / "reference" / "cli.md").read_text()
    assert hooks.CLI_MARKER in page
    markdown = hooks.on_page_markdown(page, None, None, None)
    assert hooks.CLI_MARKER not in markdown
    group = typer.main.get_command(app)
    assert group.commands
    for name, command in group.commands.items():
        assert f"## `fsd {name}`" in markdown, name
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert f"`{opt}" in markdown, (name, opt)


def sections(text: str) -> list[str]:
    """A page cut at its headings and at each folded <details> block."""
    return re.split(r"^(?=#{1,4} |<details)", text, flags=re.M)


COMMAND = re.compile(r"```bash\n|`(fsd [a-z]|python benchmarks/|PYTHONPATH=\. python benchmarks/)")


@pytest.mark.parametrize("page", sorted(p.name for p in (DOCS / "results").glob("*.md")))
def test_every_results_table_says_which_command_made_it(page):
    text = (DOCS / "results" / page).read_text()
    tables = 0
    for section in sections(text):
        if re.search(r"^\|.*\|\n\|[-| ]+\|$", section, flags=re.M):
            tables += 1
            assert COMMAND.search(section), f"{page}: a table with no command beside it:\n{section[:300]}"
    assert tables


def test_every_docs_page_is_in_the_site():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert pages and all(f" {page}" in nav for page in pages), [p for p in pages if f" {p}" not in nav]
