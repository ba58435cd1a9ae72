"""The README's quick start runs as pasted."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs_as_pasted(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # anything it writes lands here, never in the repo
    exec(compile(code, "README quick start", "exec"), {"__name__": "readme"})
