"""Tutorial 06: define a cohort: source metadata, PA only, quality rules, a patient-level split, a dataset card.

Run:  python tutorials/06_cohort.py [--out DIR]

CheXmask-U holds segmentations only: patients, views, official splits and
findings live in each database's own metadata files.  With real data you point
``read_metadata`` at the folders you downloaded (MIMIC-CXR-JPG's
``mimic-cxr-2.0.0-*.csv.gz``, CheXpert's ``train.csv``/``valid.csv``,
ChestX-ray8's ``Data_Entry_2017_v2020.csv`` + lists, Padchest's
``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv``, VinDr-CXR's
``image_labels_*.csv``).  Offline, this script first writes files shaped like
those (published names and headers) for the embedded sample's ids, with made-up
values: no real patient data.  Then it:

1. reads each source's files into the normalised metadata table;
2. joins them to the CheXmask-U rows and checks every row matched;
3. draws a patient-level split that keeps the official splits (MIMIC, CheXpert,
   ChestX-ray8, VinDr-CXR) and fills the rest (Padchest has none);
4. keeps PA views, Dice RCA >= 0.7 and mean node sigma below the 90th percentile;
5. writes the dataset card (Markdown + two figures);
6. feeds the training split, with a label tensor, through a torch DataLoader
   (when torch is installed).
"""

from __future__ import annotations

import argparse
import gzip
import warnings
from pathlib import Path

import numpy as np
import polars as pl

import chexmask_u_tools as cxu
from chexmask_u_tools.sources import CHEXPERT_LABELS, REGISTRY

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("tutorial_output") / "06")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(6)
table = cxu.load_sample()
ids = {source: rows["image_id"].to_list() for (source,), rows in table.group_by("source", maintain_order=True)}


def write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    """A csv (gzip-compressed for .gz names) with the given header; fields holding commas are quoted."""

    def field(value: object) -> str:
        text = "" if value is None else str(value)
        return '"' + text.replace('"', '""') + '"' if ("," in text or '"' in text) else text

    text = "\n".join(",".join(map(field, row)) for row in [header, *rows]) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode())


def labels_1_0_uncertain(n_labels: int) -> list[str]:
    """One study's labels in CheXpert's forms: 1.0, 0.0, -1.0 (uncertain) or blank (not mentioned)."""
    return [rng.choice(["1.0", "0.0", "-1.0", "", ""]) for _ in range(n_labels)]


def frontal_view() -> str:
    return str(rng.choice(["PA", "PA", "PA", "AP"]))


# 0. Metadata files shaped like each database's own, for the sample's ids.
meta_dir = args.out / "metadata"
mimic = ids["MIMIC-CXR-JPG"]
subjects = [str(10_000_000 + i // 2) for i in range(len(mimic))]  # two images per patient
studies = [str(50_000_000 + i // 2) for i in range(len(mimic))]
write(
    meta_dir / "MIMIC-CXR-JPG" / "mimic-cxr-2.0.0-metadata.csv.gz",
    [
        "dicom_id",
        "subject_id",
        "study_id",
        "PerformedProcedureStepDescription",
        "ViewPosition",
        "Rows",
        "Columns",
        "StudyDate",
        "StudyTime",
    ],
    [[d, s, st, "CHEST (PA AND LAT)", frontal_view(), 3056, 2544, 21800506, "213014.531"] for d, s, st in zip(mimic, subjects, studies, strict=True)],
)
mimic_splits = ["test" if int(s) % 10 == 0 else "validate" if int(s) % 10 == 1 else "train" for s in subjects]
write(
    meta_dir / "MIMIC-CXR-JPG" / "mimic-cxr-2.0.0-split.csv.gz",
    ["dicom_id", "study_id", "subject_id", "split"],
    [[d, st, s, sp] for d, s, st, sp in zip(mimic, subjects, studies, mimic_splits, strict=True)],
)
write(
    meta_dir / "MIMIC-CXR-JPG" / "mimic-cxr-2.0.0-chexpert.csv.gz",
    ["subject_id", "study_id", *CHEXPERT_LABELS],
    [[s, st, *labels_1_0_uncertain(len(CHEXPERT_LABELS))] for s, st in sorted(set(zip(subjects, studies, strict=True)))],
)
write(
    meta_dir / "CheXpert" / "train.csv",
    ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS],
    [
        [
            f"CheXpert-v1.0-small/{p}",
            rng.choice(["Male", "Female"]),
            rng.integers(18, 90),
            "Frontal",
            frontal_view(),
            *labels_1_0_uncertain(len(CHEXPERT_LABELS)),
        ]
        for p in ids["CheXpert"]
    ],
)
nih = ids["ChestX-ray8"]
nih_labels = REGISTRY["ChestX-ray8"].metadata.labels
write(
    meta_dir / "ChestX-ray8" / "Data_Entry_2017_v2020.csv",
    [
        "Image Index",
        "Finding Labels",
        "Follow-up #",
        "Patient ID",
        "Patient Age",
        "Patient Sex",
        "View Position",
        "OriginalImage[Width",
        "Height]",
        "OriginalImagePixelSpacing[x",
        "y]",
    ],
    [
        [
            i,
            "|".join(rng.choice(nih_labels[1:], rng.integers(1, 3), replace=False)) if rng.random() < 0.5 else "No Finding",
            int(i[9:12]),
            int(i[:8]),
            rng.integers(18, 90),
            rng.choice(["M", "F"]),
            frontal_view(),
            2500,
            2048,
            0.168,
            0.168,
        ]
        for i in nih
    ],
)
nih_test = {i for i in nih if int(i[:8]) % 5 == 0}  # the official lists are patient-wise
(meta_dir / "ChestX-ray8" / "train_val_list.txt").write_text("".join(f"{i}\n" for i in nih if i not in nih_test))
(meta_dir / "ChestX-ray8" / "test_list.txt").write_text("".join(f"{i}\n" for i in nih if i in nih_test))
padchest_findings = ["normal", "cardiomegaly", "pleural effusion", "pacemaker", "scoliosis"]
write(
    meta_dir / "Padchest" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
    [
        "",
        "ImageID",
        "ImageDir",
        "StudyDate_DICOM",
        "StudyID",
        "PatientID",
        "PatientBirth",
        "PatientSex_DICOM",
        "Projection",
        "Rows_DICOM",
        "Columns_DICOM",
        "Labels",
    ],
    [
        [
            k,
            i,
            k % 50,
            20150000 + 101 + k,
            f"study{k}",
            f"patient{k // 2}",
            1930.0 + k,
            rng.choice(["M", "F"]),
            rng.choice(["PA", "PA", "AP_horizontal"]),
            2828,
            2320,
            str([str(f) for f in rng.choice(padchest_findings, rng.integers(1, 3), replace=False)]),
        ]
        for k, i in enumerate(ids["Padchest"])
    ],
)
vindr = ids["VinDr-CXR"]
vindr_labels = REGISTRY["VinDr-CXR"].metadata.labels
write(
    meta_dir / "VinDr-CXR" / "image_labels_train.csv",
    ["image_id", "rad_id", *vindr_labels],
    [[i, f"R{r}", *(int(rng.random() < 0.1) for _ in vindr_labels)] for i in vindr[:32] for r in (1, 2, 3)],  # three radiologists each
)
write(
    meta_dir / "VinDr-CXR" / "image_labels_test.csv",
    ["image_id", *vindr_labels],
    [[i, *(int(rng.random() < 0.1) for _ in vindr_labels)] for i in vindr[32:]],
)
written = sorted(p.relative_to(meta_dir).as_posix() for p in meta_dir.rglob("*") if p.is_file())
assert len(written) == 10, written
print("metadata files:", *written, sep="\n  ")

# 1. Read each source's files (a folder is enough) into one normalised table per source.
metadata = [cxu.read_metadata(source, meta_dir / source) for source in ids]
for frame in metadata:
    assert frame.height == 40 and frame.columns[:11] == list(cxu.cohorts.METADATA_SCHEMA), frame.columns
    print(
        f"{frame['source'][0]:>14}: {frame.height} images, {frame['patient_id'].n_unique()} patients, "
        f"{len(cxu.label_columns(frame))} labels, splits {sorted(frame['split'].drop_nulls().unique().to_list())}"
    )
print(metadata[0].select("image_id", "patient_id", "view", "split", "label.Cardiomegaly").head(3))

# 2. Join on (source, normalised id): prefixes such as CheXpert-v1.0-small/ and suffixes such as .png do not matter.
joined, report = cxu.attach_metadata(table, metadata, return_report=True)
print("\n" + str(report))
assert report.matched == table.height == joined.height
assert joined.select(table.columns).equals(table)  # the CheXmask-U columns are untouched

# 3. Patient-level split: official splits kept where the source has one, 80/10/10 by patient elsewhere.
split = cxu.patient_split(joined, seed=0, official_split=True)
assert cxu.check_leakage(split).height == 0
assert split.filter(pl.col("official_split").is_not_null())["split"].equals(split["official_split"].drop_nulls())
print("\nimages per split:", dict(split["split"].value_counts().sort("split").iter_rows()))

# 4. The cohort: PA views (VinDr-CXR publishes no view, so none of its rows is PA), the parent dataset's
#    Dice advice, and mean node sigma below its 90th percentile over all rows.
sigma_p90 = float(split["node_sigma_mean"].quantile(0.9, "linear"))
filters = {"PA view": pl.col("view") == "PA"}
rules = ["dice.mean>=0.7", f"image.mean<{sigma_p90:.4f}"]
cohort, steps = cxu.select_cohort(split, filters, rules)
print(steps)
assert steps["rows_after"][-1] == cohort.height > 0
assert (cohort["view"] == "PA").all() and (cohort["dice_rca_mean"] >= 0.7).all()
assert (cohort["node_sigma_mean"] < sigma_p90).all()
one_each = cxu.unique_patients(cohort, keep="best_dice")
assert one_each.height == cohort.select(pl.struct("source", "patient_id").n_unique()).item()
print(f"{cohort.height} images of {one_each.height} patients")

# 5. The dataset card, with its two figures, ready to attach to a paper.
card_path = args.out / "card.md"
card = cxu.describe(split, rules, filters=filters, title="Tutorial 06 cohort", out=card_path)
assert card_path.read_text() == card and "Leakage check: no patient appears in more than one split." in card
for figure in ("card_dice_rca.png", "card_node_sigma.png"):
    assert (args.out / figure).stat().st_size > 0 and figure in card
print(f"\nwrote {card_path}; its first lines:\n" + "\n".join(card.splitlines()[:12]))

# 6. A DataLoader with labels: masks from the landmarks (no images here) and a label tensor built from the
#    joined columns.  Policy for this tutorial: uncertain (-1) counts as negative, unmentioned (null) is
#    masked out of the loss with `label_known`.
try:
    import torch
except ImportError:
    torch = None
if torch is None:
    print("torch is not installed: skipping the DataLoader")
else:
    from chexmask_u_tools.train.datasets import CheXmaskUDataset

    findings = ["label.Cardiomegaly", "label.No Finding"]
    train = cohort.filter(pl.col("split") == "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # labels=: each sample carries the findings as float32 `labels` and a bool `label_mask`
        # (uncertain -1 and unmentioned null are masked out by default: never NaN in a loss).
        dataset = CheXmaskUDataset(train, None, missing="masks_only", size=64, labels=findings)

    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False)
    batch = next(iter(loader))
    assert batch["masks"].shape == (min(4, len(dataset)), 3, 64, 64)
    assert batch["labels"].shape == batch["label_mask"].shape == (min(4, len(dataset)), len(findings))
    assert batch["labels"].dtype == torch.float32 and set(batch["labels"].unique().tolist()) <= {0.0, 1.0}
    print(
        f"\nDataLoader: {len(dataset)} training images; batch masks {tuple(batch['masks'].shape)}, "
        f"labels {tuple(batch['labels'].shape)} ({', '.join(findings)}), known {int(batch['label_mask'].sum())} of {batch['label_mask'].numel()}"
    )
