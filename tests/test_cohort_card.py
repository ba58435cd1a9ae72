"""The cohort card (cxu.describe, chexmask-u describe) and its citation block (issue 14 item 6)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.cli import main
from chexmask_u_tools.cohorts.card import markdown_table
from chexmask_u_tools.sources import CHEXPERT_LABELS

CITATION_CFF = Path(__file__).resolve().parents[1] / "CITATION.cff"


def split_sample(leak: bool = False) -> pl.DataFrame:
    table = cxu.load_sample()
    table = table.with_columns(
        pl.format("p{}", pl.int_range(pl.len()) // 2).alias("patient_id"),
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(pl.lit("PA")).otherwise(pl.lit("AP")).alias("view"),
    )
    table = cxu.patient_split(table, seed=0)
    if leak:  # move one image of a two-image patient to another split
        table = table.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("elsewhere")).otherwise(pl.col("split")).alias("split"))
    return table


def test_card_sections_counts_and_figures(tmp_path):
    table = split_sample()
    out = tmp_path / "cards" / "cohort.md"
    card = cxu.describe(table, rules=["dice.mean>=0.75"], filters={"PA only": pl.col("view") == "PA"}, title="Test cohort", out=out)
    assert out.read_text() == card and card.startswith("# Test cohort\n")
    for png in ("cohort_dice_rca.png", "cohort_node_sigma.png"):
        assert (out.parent / png).stat().st_size > 1000 and f"]({png})" in card
    kept, steps = cxu.select_cohort(table, {"PA only": pl.col("view") == "PA"}, ["dice.mean>=0.75"])
    pa = table.filter(pl.col("view") == "PA")
    assert steps.rows() == [
        ("PA only", 200, 200 - pa.height, pa.height),
        ("dice.mean>=0.75", pa.height, pa.height - kept.height, kept.height),
    ]
    assert f"| PA only | 200 | {200 - pa.height} | {pa.height} |" in card
    assert f"{kept.height} images from 5 sources." in card
    for source, rows in kept.group_by("source"):
        counts = rows["split"].value_counts()
        cells = [str(counts.filter(pl.col("split") == s)["count"].sum()) for s in ("test", "train", "val")]
        assert f"| {source[0]} | {' | '.join(cells)} | {rows.height} |" in card
    assert "Leakage check: no patient appears in more than one split." in card
    median = kept.filter(pl.col("source") == "CheXpert")["node_sigma_mean"].median()
    assert f"{median:.3g}" in card.split("Mean node sigma")[1].split("| CheXpert |")[1].split("\n")[0]
    assert "```bibtex" in card and "@inproceedings{cosarinsky2026chexmasku," in card


def test_card_reports_leakage_and_missing_columns():
    card = cxu.describe(split_sample(leak=True))
    assert "**Leakage: 1 patients appear in more than one split.**" in card and "elsewhere" in card
    bare = cxu.describe(cxu.load_sample())
    assert "No split column" in bare and "No view column" in bare
    assert "80 rows have no patient id." in bare  # MIMIC-CXR-JPG and Padchest; the other ids name the patient
    no_ids = cxu.describe(cxu.load_sample().filter(pl.col("source") == "Padchest"))
    assert "No patient ids (attach the source metadata with read_metadata and attach_metadata" in no_ids


def test_empty_cohort_is_refused_naming_the_step():
    with pytest.raises(cxu.InputError, match="step 'no source' removed the last rows"):
        cxu.describe(split_sample(), ["dice.mean>=0.1"], filters={"PA": pl.col("view") == "PA", "no source": pl.col("source") == "x"})


def test_select_cohort_rejects_non_expressions():
    with pytest.raises(cxu.InputError, match="polars expression"):
        cxu.select_cohort(cxu.load_sample(), {"bad": "view == PA"})


def test_markdown_table_escapes_and_nulls():
    text = markdown_table(pl.DataFrame({"a": ["x|y", None], "b": [1.23456, None]}))
    assert text.splitlines() == ["| a | b |", "|---|---:|", "| x\\|y | 1.23 |", "| - | - |"]


def test_citations_are_those_of_citation_cff():
    yaml = pytest.importorskip("yaml")
    if not CITATION_CFF.is_file():
        pytest.skip("CITATION.cff not next to the tests")
    cff = yaml.safe_load(CITATION_CFF.read_text())
    text = " ".join(cxu.cite().split())
    assert cff["title"] in text and f"version = {{{cff['version']}}}" in text
    for reference in cff["references"]:
        assert reference["title"] in text and str(reference["year"]) in text
        assert " and ".join(f"{a['family-names']}, {a['given-names']}" for a in reference["authors"]) in text
        if "doi" in reference:
            assert reference["doi"] in text
    assert cxu.cite().count("@") == 3


def chexpert_metadata_for(table: pl.DataFrame, folder: Path) -> Path:
    ids = table.filter(pl.col("source") == "CheXpert")["image_id"].to_list()
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_LABELS)
    rows = [
        f"CheXpert-v1.0-small/{i},Female,50,Frontal,{'PA' if k % 2 else 'AP'},1.0" + "," * (len(CHEXPERT_LABELS) - 1)
        for k, i in enumerate(ids)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return folder


def test_cli_describe_sample_with_metadata_and_split(tmp_path, capsys):
    folder = chexpert_metadata_for(cxu.load_sample(), tmp_path / "chexpert")
    out = tmp_path / "card.md"
    argv = ["describe", "sample", "--metadata", f"CheXpert={folder}", "--patient-split", "--seed", "1", "--official-split",
            "--matched-only",
            "--rule", "dice.mean>=0.7", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "CheXpert: 40 of 40 rows matched" in printed and "Padchest: 0 of 40 rows matched" in printed
    card = out.read_text()
    unmatched = [a for a in argv if a != "--matched-only"][:-1] + [str(tmp_path / "unmatched.md")]
    assert main(unmatched) == 1
    # ChestX-ray8 ids name the patient and VinDr-CXR rows have an official split: MIMIC-CXR-JPG and Padchest lack one
    assert "80 rows have no patient_id (40 MIMIC-CXR-JPG, 40 Padchest; e.g. MIMIC-CXR-JPG '" in capsys.readouterr().err
    assert "| dice.mean>=0.7 | 40 |" in card and "Leakage check: no patient appears in more than one split." in card
    assert (tmp_path / "card_node_sigma.png").is_file()
    # the source can also be detected from the columns
    assert main(["describe", "sample", "--metadata", str(folder), "--out", str(tmp_path / "card2.md")]) == 0
    assert "| CheXpert | 20 | 20 | 0 | 40 |" in (tmp_path / "card2.md").read_text()  # AP, PA, (no view), total


def test_cli_describe_errors(tmp_path, capsys):
    nothing = tmp_path / "vindr"
    nothing.mkdir()
    (nothing / "image_labels_test.csv").write_text(
        "image_id," + ",".join(cxu.sources.REGISTRY["VinDr-CXR"].metadata.labels) + "\nzzz" + ",0" * 28 + "\n"
    )
    assert main(["describe", "sample", "--metadata", f"vindr={nothing}", "--out", str(tmp_path / "c.md")]) == 1
    assert "no row matched" in capsys.readouterr().err
    assert main(["describe", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "c.md")]) == 1
    assert main(["describe", "sample", "--patient-split", "--fractions", "train=0.5", "test=x", "--out", str(tmp_path / "c.md")]) == 1
    assert not (tmp_path / "c.md").exists()


def test_cli_export_with_metadata_and_split(tmp_path, capsys):
    folder = chexpert_metadata_for(cxu.load_sample(), tmp_path / "chexpert")
    out = tmp_path / "export"
    argv = ["export", "sample", "--sources", "CheXpert", "--metadata", f"CheXpert={folder}", "--matched-only",
            "--patient-split", "--fractions", "train=0.5", "test=0.5", "--split", "train",
            "--rule", "view in PA", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    subset = pl.read_parquet(out / "subset.parquet")
    assert set(subset["split"]) == {"train"} and set(subset["view"]) == {"PA"}
    assert 0 < subset.height < 20 and subset["patient_id"].null_count() == 0
    assert main(["export", "sample", "--split", "train", "--out", str(tmp_path / "e2"), "--no-progress"]) == 1
    assert "--patient-split" in capsys.readouterr().err
