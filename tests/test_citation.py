"""cite() and ``chexmask-u cite`` say what CITATION.cff says."""

from __future__ import annotations

from pathlib import Path

import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.cli import main
from chexmask_u_tools.errors import InputError

CFF = Path(__file__).resolve().parents[1] / "CITATION.cff"


def test_entries_match_citation_cff():
    cff = CFF.read_text(encoding="utf-8")
    bib = cxu.cite()
    for fact in ("CheXmask-U: Quantifying uncertainty in landmark-based anatomical segmentation for X-ray images",
                 "10.13026/dx54-8351", "arXiv:2512.10715", "Scientific Data", "Saidman, Julia Mariel"):
        assert fact in bib
    for fact in ("CheXmask-U: Quantifying uncertainty", "10.13026/dx54-8351", "arXiv:2512.10715", "Saidman"):
        assert fact in cff
    version = next(line.split(":", 1)[1].strip() for line in cff.splitlines() if line.startswith("version:"))
    assert f"version   = {{{version}}}" in bib and version == cxu.__version__


def test_cli_and_bad_key(capsys):
    assert main(["cite", "chexmask"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("@article{gaggion2024chexmask") and out.count("@") == 1
    with pytest.raises(InputError, match="expected one of"):
        cxu.cite("chexmaks")
