"""mkdocs hooks: pages generated from the code, so that they never drift from it.

* ``cli.md``: ``<!-- cli-reference -->`` becomes the ``--help`` of ``chexmask-u``
  and of every sub-command, taken from the argparse parsers themselves.
* ``tutorials.md``: ``<!-- tutorials -->`` becomes one section per script in
  ``tutorials/``: its docstring, its figures (``docs/figures/tutorial_NN_*.png``
  when present) and its code.
"""

from __future__ import annotations

import ast
import io
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli_reference() -> str:
    from chexmask_u_tools.cli import build_parser

    parser = build_parser()
    parts = ["## chexmask-u", "", "```text", parser.format_help().rstrip(), "```", ""]
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in sorted(subparsers.choices.items()):
        parts += [f"## chexmask-u {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def _tutorials() -> str:
    parts = []
    for script in sorted((ROOT / "tutorials").glob("*.py")):
        source = script.read_text(encoding="utf-8")
        docstring = ast.get_docstring(ast.parse(source)) or ""
        title, _, body = docstring.partition("\n")
        # The docstring is plain text (command lines with [--flags]), not Markdown.
        parts += [f"## {script.stem}", "", f"**{title.strip()}**", "", "```text", body.strip(), "```", ""]
        for figure in sorted((ROOT / "docs" / "figures").glob(f"tutorial_{script.stem[:2]}_*.png")):
            parts += [f"![{figure.stem}](figures/{figure.name})", ""]
        parts += [f"```python title=\"tutorials/{script.name}\"", source.rstrip(), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- cli-reference -->" in markdown:
        with redirect_stdout(io.StringIO()):
            markdown = markdown.replace("<!-- cli-reference -->", _cli_reference())
    if "<!-- tutorials -->" in markdown:
        markdown = markdown.replace("<!-- tutorials -->", _tutorials())
    return markdown
