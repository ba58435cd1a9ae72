"""Datasets return chosen metadata fields and finding labels, with an explicit policy for uncertain and null labels."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import InputError, RecordError
from chexmask_u_tools.testing.images import write_demo_images
from chexmask_u_tools.train.datasets import CheXmaskUDataset, CheXmaskUIterableDataset

CARDIOMEGALY = [1.0, 0.0, -1.0, None, 1.0, -1.0, None, 0.0]
EDEMA = [None, -1.0, 0.0, 1.0, 1.0, 0.0, None, -1.0]


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    sample = cxu.load_sample()
    rows = pl.concat([sample.filter(pl.col("source") == s).head(2) for s in cxu.SOURCES]).head(8)
    return rows.with_columns(
        pl.Series("view", ["PA", "AP", "PA", None, "AP", "PA", "PA", "AP"]),
        pl.Series("age", [71.0, 45.5, 60.0, 33.0, 80.0, 52.0, 19.0, 66.0]),
        pl.Series("Cardiomegaly", CARDIOMEGALY, dtype=pl.Float32),
        pl.Series("Edema", EDEMA, dtype=pl.Float32),
    )


@pytest.fixture(scope="module")
def roots(table, tmp_path_factory):
    return write_demo_images(table, tmp_path_factory.mktemp("images"))


def _expected(values, uncertain, missing):
    labels, mask = [], []
    for v in values:
        if v is None:
            labels.append(0.0 if missing == "ignore" else missing)
            mask.append(missing != "ignore")
        elif v == -1.0:
            labels.append({"ignore": 0.0, "keep": -1.0}.get(uncertain, uncertain))
            mask.append(uncertain != "ignore")
        else:
            labels.append(v)
            mask.append(True)
    return labels, mask


@pytest.mark.parametrize(
    ("policy", "uncertain", "missing"),
    [(None, "ignore", "ignore"), ({"uncertain": 1.0}, 1.0, "ignore"), ({"uncertain": 0.0, "missing": 0.0}, 0.0, 0.0),
     ({"uncertain": "keep", "missing": 1.0}, "keep", 1.0)],
)
def test_labels_follow_the_policy_in_both_datasets(table, roots, policy, uncertain, missing):
    options = {"size": 16, "fields": ("view", "age"), "labels": ("Cardiomegaly", "Edema"), "label_policy": policy}
    mapped = CheXmaskUDataset(table, roots, **options)
    streamed = list(CheXmaskUIterableDataset(table, roots, block_rows=3, **options))
    card, card_mask = _expected(CARDIOMEGALY, uncertain, missing)
    edema, edema_mask = _expected(EDEMA, uncertain, missing)
    for i in range(8):
        for sample in (mapped[i], streamed[i]):
            assert sample["labels"].dtype == torch.float32 and sample["label_mask"].dtype == torch.bool
            assert sample["labels"].tolist() == [card[i], edema[i]]
            assert sample["label_mask"].tolist() == [card_mask[i], edema_mask[i]]
            assert sample["view"] == table["view"][i] and sample["age"] == table["age"][i]
            assert not torch.isnan(sample["labels"]).any()


def test_labels_batch_and_stream_from_a_lazy_scan(table, roots, tmp_path):
    path = tmp_path / "t.parquet"
    table.write_parquet(path)
    dataset = CheXmaskUIterableDataset(pl.scan_parquet(path), roots, size=16, block_rows=4, fields=("age",),
                                       labels=("Cardiomegaly",), label_policy={"uncertain": 1.0, "missing": 0.0})
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=8)))
    assert batch["labels"].shape == (8, 1) and batch["label_mask"].all()
    expected = [1.0 if v == -1.0 else 0.0 if v is None else v for v in CARDIOMEGALY]
    assert batch["labels"][:, 0].tolist() == expected
    np.testing.assert_allclose(batch["age"].numpy(), table["age"].to_numpy())


def test_absent_columns_and_bad_label_values_are_named(table, roots):
    with pytest.raises(InputError, match=r"labels=\['Cardiomegaly', 'Pneumonia'\] names columns the table lacks: \['Pneumonia'\].*attach_metadata"):
        CheXmaskUDataset(table, roots, size=16, labels=("Cardiomegaly", "Pneumonia"))
    with pytest.raises(InputError, match=r"fields=.*lacks: \['sex'\].*attach_metadata"):
        CheXmaskUIterableDataset(table, roots, size=16, fields=("sex",))
    odd = table.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(2.0).otherwise(pl.col("Edema")).alias("Edema"))
    with pytest.raises(RecordError, match=r"label column 'Edema' holds 2.0 at row 5 .*1, 0, -1 \(uncertain\) or null"):
        CheXmaskUDataset(odd, roots, size=16, labels=("Edema",))
    with pytest.raises(RecordError, match="at row 5"):  # a lazy scan too: when the dataset is built
        CheXmaskUIterableDataset(odd.lazy(), roots, size=16, labels=("Edema",), block_rows=4)
    words = table.with_columns(pl.lit("yes").alias("Edema"))
    with pytest.raises(InputError, match="must be numeric"):
        CheXmaskUDataset(words, roots, size=16, labels=("Edema",))
