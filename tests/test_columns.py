"""Column mappings everywhere data is read (--column / columns=), and outputs that read back as written."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.cli import build_parser, main
from chexmask_u_tools.cli._args import column_mapping, parse_column_pairs
from chexmask_u_tools.hub.cache import build_cache, find_cache, read_manifest
from chexmask_u_tools.hub.inputs import open_table
from chexmask_u_tools.hub.read import load, scan
from chexmask_u_tools.io.released import to_released, write_released
from chexmask_u_tools.schema import CANONICAL_SCHEMA

THEIRS = {"Image ID": "img", "Landmarks (Mean)": "lm", "Dice RCA (Mean)": "quality"}
"""Released name -> the name of a layout no reader knows."""

MAPPING = {"img": "image_id", "lm": "landmarks"}
"""Enough to read the renamed files; ``quality`` stays unread (null Dice mean)."""

MAPPING_WITH_DICE = {**MAPPING, "quality": "dice_rca_mean"}

SOURCES = ("CheXpert", "ChestX-ray8")


def _renamed_table(source: str) -> pl.DataFrame:
    return cxu.load_sample().filter(pl.col("source") == source).head(6)


def _write_renamed(path: Path, table: pl.DataFrame) -> Path:
    released = to_released(table, id_column="Image ID")
    released = released.rename({k: v for k, v in THEIRS.items() if k in released.columns})
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        released.write_parquet(path)
    else:
        released.write_csv(path)
    return path


@pytest.fixture
def renamed_mirror(tmp_path) -> Path:
    """A mirror whose files use column names no reader knows (one CSV, one parquet)."""
    root = tmp_path / "mirror"
    _write_renamed(root / "Preprocessed" / "CheXpert.csv", _renamed_table("CheXpert"))
    _write_renamed(root / "Preprocessed" / "ChestX-ray8.parquet", _renamed_table("ChestX-ray8"))
    return root


def _expected(mapping: dict[str, str], tmp_path: Path) -> pl.DataFrame:
    """What the renamed mirror reads as: with ``quality`` unmapped, as its files without the Dice mean column."""
    tables = [_renamed_table(source) for source in SOURCES]
    if "quality" in mapping:
        return pl.concat(tables)
    reads = []
    for source, table in zip(SOURCES, tables):
        path = tmp_path / "expected" / f"{source}.csv"
        path.parent.mkdir(exist_ok=True)
        to_released(table, id_column="Image ID").drop("Dice RCA (Mean)").write_csv(path)
        reads.append(cxu.read_table(path))
    return pl.concat(reads)


def _sorted(table: pl.DataFrame) -> pl.DataFrame:
    return table.sort("source", "image_id")


# ----------------------------------------------------------------------------- library


def test_open_table_maps_the_columns_of_a_file(tmp_path):
    path = _write_renamed(tmp_path / "CheXpert.csv", _renamed_table("CheXpert"))
    with pytest.raises(cxu.SchemaError, match="no image id column"):
        open_table(path).collect()
    read = open_table(path, columns=MAPPING_WITH_DICE).collect()
    assert read.equals(_renamed_table("CheXpert"))


def test_open_table_refuses_a_mapping_for_canonical_inputs():
    with pytest.raises(cxu.InputError, match=r"columns= \(--column\).*'sample' is a sample"):
        open_table("sample", columns=MAPPING)


@pytest.mark.parametrize("mapping", [MAPPING, MAPPING_WITH_DICE])
def test_mirror_readers_map_columns_lazy_and_streaming(renamed_mirror, tmp_path, mapping):
    with pytest.raises(cxu.SchemaError):
        scan(renamed_mirror, cache_dir=tmp_path / "cache").collect()
    lazy = scan(renamed_mirror, cache_dir=tmp_path / "cache", columns=mapping).collect()
    # load() streams every file through hub.stream.iter_file_batches, the reader of Hub files.
    streamed = pl.concat(load(renamed_mirror, cache_dir=tmp_path / "cache", columns=mapping, batch_size=4))
    via_spec = open_table(renamed_mirror, cache_dir=tmp_path / "cache", columns=mapping).collect()
    for table in (lazy, streamed, via_spec):
        assert _sorted(table).equals(_sorted(_expected(mapping, tmp_path)))


def test_hub_files_are_read_with_the_mapping(hub_emulator, renamed_mirror, tmp_path):
    hub_emulator.add_repo("someone/renamed", renamed_mirror, repo_type="dataset")
    read = scan("someone/renamed", columns=MAPPING_WITH_DICE, use_cache=False).collect()
    assert _sorted(read).equals(_sorted(_expected(MAPPING_WITH_DICE, tmp_path)))


def test_cache_records_the_mapping_and_is_not_reused_for_another(renamed_mirror, tmp_path):
    cache_dir = tmp_path / "cache"
    built = build_cache(renamed_mirror, cache_dir, columns=MAPPING, n_shards=1, progress=False)
    assert read_manifest(built).options.columns == MAPPING
    assert find_cache(renamed_mirror, cache_dir, columns=MAPPING) == built
    assert find_cache(renamed_mirror, cache_dir) is None
    assert find_cache(renamed_mirror, cache_dir, columns=MAPPING_WITH_DICE) is None
    assert _sorted(scan(renamed_mirror, cache_dir=cache_dir, columns=MAPPING).collect()).equals(
        _sorted(_expected(MAPPING, tmp_path))
    )

    events = []
    rebuilt = build_cache(
        renamed_mirror, cache_dir, columns=MAPPING_WITH_DICE, n_shards=1, progress=False,
        on_event=lambda kind, detail: events.append(kind),
    )
    assert events.count("part") == 2  # converted again, not reused
    assert read_manifest(rebuilt).options.columns == MAPPING_WITH_DICE
    from_cache = scan(renamed_mirror, cache_dir=cache_dir, columns=MAPPING_WITH_DICE).collect()
    assert _sorted(from_cache).equals(_sorted(_expected(MAPPING_WITH_DICE, tmp_path)))


# ----------------------------------------------------------------------------- CLI

DATA_COMMANDS = {
    "info": ["info", "X"],
    "plot": ["plot", "0", "--table", "X", "--out", "f.png"],
    "plot-stats": ["plot-stats", "X", "--out", "d"],
    "filter": ["filter", "X", "--out", "o.parquet"],
    "export": ["export", "X", "--out", "d"],
    "describe": ["describe", "X", "--out", "card.md"],
    "experiment ood": ["experiment", "ood", "X"],
    "cache": ["cache", "X"],
}


@pytest.mark.parametrize("command", sorted(DATA_COMMANDS))
def test_every_data_command_takes_repeatable_column(command):
    argv = [*DATA_COMMANDS[command], "--column", "img=image_id", "--column", "lm=Landmarks (Mean)"]
    args = build_parser().parse_args(argv)
    assert column_mapping(args) == {"img": "image_id", "lm": "Landmarks (Mean)"}


def test_column_values_are_checked_naming_the_flag():
    assert parse_column_pairs(["a=b=image_id"]) == {"a=b": "image_id"}  # split at the last '='
    with pytest.raises(cxu.InputError, match="--column 'img': expected THEIRS=KNOWN"):
        parse_column_pairs(["img"])
    with pytest.raises(cxu.InputError, match="--column '=image_id': expected THEIRS=KNOWN"):
        parse_column_pairs(["=image_id"])
    with pytest.raises(cxu.InputError, match="--column 'lm=landmark'.*did you mean 'landmarks'"):
        parse_column_pairs(["lm=landmark"])
    with pytest.raises(cxu.InputError, match="--column: the column 'lm' is given twice"):
        parse_column_pairs(["lm=landmarks", "lm=Landmarks"])


def test_cli_info_and_filter_read_with_column(renamed_mirror, tmp_path, capsys):
    file = renamed_mirror / "Preprocessed" / "CheXpert.csv"
    flags = [arg for pair in MAPPING.items() for arg in ("--column", "=".join(pair))]
    assert main(["info", str(file)]) == 1
    assert "no image id column" in capsys.readouterr().err
    assert main(["info", str(file), *flags]) == 0
    assert "6 rows in 1 file(s)" in capsys.readouterr().out
    out = tmp_path / "kept.parquet"
    assert main(["filter", str(renamed_mirror), "--out", str(out), "--no-progress", "--no-cache", *flags]) == 0
    assert pl.read_parquet(out).height == 12
    assert main(["info", str(file), "--column", "lm"]) == 1
    assert "--column 'lm': expected THEIRS=KNOWN" in capsys.readouterr().err


def test_cli_cache_records_the_mapping(renamed_mirror, tmp_path, capsys):
    flags = [arg for pair in MAPPING.items() for arg in ("--column", "=".join(pair))]
    cache_dir = tmp_path / "cache"
    argv = ["cache", str(renamed_mirror), "--cache-dir", str(cache_dir), "--shards", "1", "--no-progress", *flags]
    assert main(argv) == 0
    found = find_cache(renamed_mirror, cache_dir, columns=MAPPING)
    assert found is not None and read_manifest(found).rows == 12


# ----------------------------------------------------------------------------- outputs that read back


def test_export_subset_reads_back_with_its_extra_columns(tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", "sample", "--png", "--out", str(out), "--no-progress", "--rule", "dice.mean>=0.5"]) == 0
    subset = out / "subset.parquet"
    stored = pl.read_parquet(subset)
    extra = [name for name in stored.columns if name not in CANONICAL_SCHEMA]
    assert {"mask_png", "sample_weight", "rule_weight"} <= set(extra)
    assert any(name.startswith("mask_valid_") for name in extra)
    for table in (cxu.read_table(subset), cxu.scan_table(subset).collect()):
        assert table.columns == [*CANONICAL_SCHEMA, *extra]  # canonical first, then the file's own
        assert table.select(extra).equals(stored.select(extra))  # as stored, dtypes included
        assert table.select(*CANONICAL_SCHEMA).equals(stored.select(*CANONICAL_SCHEMA))
    assert open_table(subset).collect_schema().names() == list(CANONICAL_SCHEMA)
    # A folder of a subset and a released file: the released rows get nulls in the extra columns.
    folder = tmp_path / "both"
    folder.mkdir()
    subset_copy = folder / "subset.parquet"
    subset_copy.write_bytes(subset.read_bytes())
    write_released(_renamed_table("CheXpert"), folder / "CheXpert.csv")
    both = cxu.read_table(folder)
    assert both.columns == [*CANONICAL_SCHEMA, *extra]
    assert both.filter(pl.col("mask_png").is_null()).height == 6


def test_released_csv_of_a_private_source_reads_back_without_source(tmp_path):
    table = cxu.load_sample().head(5).with_columns(source=pl.lit("private"))
    plain = tmp_path / "plain.csv"
    write_released(table, plain, id_column="Image ID")
    with pytest.raises(cxu.SchemaError, match="cannot tell the source"):
        cxu.read_table(plain)
    path = tmp_path / "pred.csv"
    write_released(table, path, id_column="Image ID", dataset_column=True)
    read = cxu.read_table(path)
    assert read["source"].to_list() == ["private"] * 5
    assert read.equals(table)
    numpy_printed = to_released(table, id_column="Image ID", dataset_column=True, points_format="numpy")
    assert numpy_printed.columns[:4] == ["Image ID", "Dataset", "Dice RCA (Mean)", "Dice RCA (Max)"]


@pytest.mark.slow
def test_predict_csv_of_a_private_source_reads_back(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    import json

    import numpy as np
    from PIL import Image

    from chexmask_u_tools.model import HybridGNet

    torch.manual_seed(0)
    weights = tmp_path / "weights" / "v1_skip"
    weights.mkdir(parents=True)
    (weights / "config.json").write_text(json.dumps({"inputsize": 64, "roi_align": "nominal"}))
    state = HybridGNet(input_size=64).state_dict()
    torch.save({f"model.{k}": v for k, v in state.items()}, weights / "pytorch_model.bin")
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(64, 64), dtype=np.uint8)).save(image)
    out, csv = tmp_path / "p.parquet", tmp_path / "pred.csv"
    argv = ["predict", str(image), "--out", str(out), "--csv", str(csv), "--weights", str(weights.parent)]
    assert main([*argv, "--samples", "2", "--no-progress"]) == 0
    read = cxu.read_table(csv)
    assert read["source"].to_list() == ["private"] and read["image_id"].to_list() == ["img.png"]
