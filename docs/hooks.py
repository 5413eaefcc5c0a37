"""mkdocs hooks of the documentation site (mkdocs.yml `hooks:`), so that no page copies what the code already says.

- `<!-- cli-reference -->` in a page becomes typer's own Markdown for the `fsd` app (`typer cli utils docs`, the
  generator typer ships): the command-line reference is the `--help` of every command, regenerated at each build.
- The trained models' `samples.png` are served from the package folder they live in (`fsd2d/priors/trained/NAME/`)
  as `images/trained/NAME-samples.png`, not copied into docs/.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI_MARKER = "<!-- cli-reference -->"
TRAINED = ROOT / "fsd2d" / "priors" / "trained"


def cli_reference() -> str:
    """typer's Markdown for `fsd` and every command, headings one level down (the page has its own title)."""
    done = subprocess.run([sys.executable, "-m", "typer", "cli", "utils", "docs", "--name", "fsd"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return "\n".join("#" + line if line.startswith("#") else line for line in done.stdout.splitlines())


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(CLI_MARKER, cli_reference()) if CLI_MARKER in markdown else markdown


def on_files(files, config):
    from mkdocs.structure.files import File  # here, so that the tests import this file without mkdocs

    for samples in sorted(TRAINED.glob("*/samples.png")):
        files.append(File.generated(config, f"images/trained/{samples.parent.name}-samples.png",
                                    abs_src_path=str(samples)))
    return files
