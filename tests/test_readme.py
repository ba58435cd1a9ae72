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


def test_readme_shows_the_pictures_make_figures_writes():
    """The README shows the demo's masks, sigma per node and the soft mask, as committed small PNGs."""
    text = README.read_text(encoding="utf-8")
    shown = re.findall(r"!\[[^\]]*\]\((docs/figures/[^)]+\.png)\)", text)
    for wanted in ("demo_masks.png", "contours_sigma.png", "band_soft_mask.png"):
        assert f"docs/figures/{wanted}" in shown, f"README does not show {wanted}"
    for relative in shown:
        picture = README.parent / relative
        assert picture.is_file(), f"README shows {relative}, which is not in the repository"
        assert picture.stat().st_size < 200_000, f"{relative} is over the 200 kB budget of scripts/make_figures.py"
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
