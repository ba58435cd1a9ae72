"""``chexmask-u filter``: the rule vocabulary of ``export --rule``, flag aliases, and missing std as an error."""

from __future__ import annotations

import re

import polars as pl
import pytest
from conftest import expected_table

from chexmask_u_tools.cli import main
from chexmask_u_tools.select.rules import apply_rules
from chexmask_u_tools.testing.mirror import build_mirror


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return build_mirror(tmp_path_factory.mktemp("mirror"), rows_per_source=12)


def _filter(mirror, out, *flags) -> int:
    return main(["filter", str(mirror), "--out", str(out), "--no-cache", "--no-progress", *flags])


def test_threshold_on_rows_without_std_exits_non_zero(mirror, tmp_path, capsys):
    out = tmp_path / "kept.parquet"
    assert _filter(mirror, out, "--sources", "vindr", "--max-node-sigma", "8") == 1
    error = capsys.readouterr().err
    match = re.search(r"needs landmarks_std, but (\d+) of (\d+) rows have none", error)
    assert match and match[1] == match[2] and int(match[1]) > 0
    assert "--missing drop" in error
    assert not out.exists()
    assert _filter(mirror, out, "--sources", "vindr", "--max-node-sigma", "8", "--missing", "keep") == 0
    assert f"kept {match[1]} of {match[1]} rows" in capsys.readouterr().out


def test_rules_and_flags_are_one_vocabulary(mirror, tmp_path, capsys):
    table = expected_table(mirror)
    rules = ["source in CheXpert,Padchest", "dice.mean>=0.7", "dice.max>=0.8", "image.q0.9<=14"]
    expected = apply_rules(table.filter(pl.col("landmarks_std").is_not_null()), rules).select(table.columns)
    outputs = []
    for spelling in (["--min-dice", "0.7"], ["--min-dice-rca-mean", "0.7"], ["--rule", "dice.mean>=0.7"]):
        out = tmp_path / f"{spelling[0].strip('-')}.parquet"
        code = _filter(mirror, out, "--sources", "chexpert", "padchest", *spelling, "--rule", "dice.max>=0.8",
                       "--rule", "image.q0.9<=14;missing=drop", "--missing", "drop")
        assert code == 0
        report = capsys.readouterr().out
        assert "dice.max>=0.8" in report and "image.q0.9<=14.0;missing=drop" in report
        outputs.append(pl.read_parquet(out))
    assert 0 < expected.height < table.height
    for output in outputs:
        assert output.equals(expected)


def test_export_spellings_of_sigma_flags(mirror, tmp_path, capsys):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert _filter(mirror, a, "--sources", "mimic", "--max-node-sigma", "9", "--max-latent-sigma", "0.95") == 0
    assert _filter(mirror, b, "--sources", "mimic", "--max-node-sigma-mean", "9", "--max-latent-sigma-mean", "0.95") == 0
    assert pl.read_parquet(a).equals(pl.read_parquet(b))
    assert 0 < pl.read_parquet(a).height < 12


def test_rules_that_do_not_remove_rows_are_refused(mirror, tmp_path, capsys):
    out = tmp_path / "x.parquet"
    assert _filter(mirror, out, "--rule", "organ.heart.mean<=9:drop_organ") == 1
    assert "export --rule" in capsys.readouterr().err
    assert _filter(mirror, out, "--rule", "organ.hart.mean<=9") == 1
    assert "unknown organ 'hart' (did you mean 'heart'?)" in capsys.readouterr().err
    assert _filter(mirror, out, "--rule", "view in PA") == 1
    assert "attach_metadata" in capsys.readouterr().err
    assert not out.exists()


def test_out_is_not_overwritten_without_flag(mirror, tmp_path, capsys):
    out = tmp_path / "kept.parquet"
    out.write_bytes(b"keep me")
    assert _filter(mirror, out, "--sources", "mimic") == 1
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert _filter(mirror, out, "--sources", "mimic", "--overwrite") == 0
    assert pl.read_parquet(out).height == 12


def test_image_ids_not_in_the_input_are_counted(mirror, tmp_path, capsys):
    table = expected_table(mirror)
    ids = table["image_id"].head(2).to_list()
    listing = tmp_path / "ids.txt"
    listing.write_text("\n".join([*ids, "nowhere/1.png", "nowhere/2.png"]) + "\n")
    out = tmp_path / "kept.parquet"
    assert _filter(mirror, out, "--image-ids", str(listing), "--missing", "drop") == 0
    captured = capsys.readouterr()
    assert "2 of 4 ids" in captured.err and "'nowhere/1.png'" in captured.err
    assert set(pl.read_parquet(out)["image_id"]) == set(ids)


def test_filter_reads_a_single_file_and_the_sample(tmp_path, capsys):
    import polars as pl

    import chexmask_u_tools as cxu
    from chexmask_u_tools.cli import main

    path = tmp_path / "one.parquet"
    cxu.load_sample().head(20).write_parquet(path)
    out = tmp_path / "kept.parquet"
    assert main(["filter", str(path), "--min-dice", "0.7", "--out", str(out), "--no-progress"]) == 0
    expected = cxu.apply_rules(cxu.load_sample().head(20), ["dice.mean>=0.7"])
    assert pl.read_parquet(out)["image_id"].to_list() == expected["image_id"].to_list()
    assert main(["filter", "sample", "--sources", "CheXpert", "--out", str(tmp_path / "s.parquet"), "--no-progress"]) == 0
    assert pl.read_parquet(tmp_path / "s.parquet").height == 40
