"""Cohorts: each source's metadata files, the join, patient-level splits (issue 14)."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chexmask_u_tools as cxu
from chexmask_u_tools.cohorts import METADATA_SCHEMA, MetadataWarning, detect_metadata_source, metadata_key
from chexmask_u_tools.errors import FileReadError, InputError, RecordError, SchemaError
from chexmask_u_tools.sources import CHEXPERT_LABELS, REGISTRY

# --------------------------------------------------------------------------- fixture files, as published


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    text = ",".join(f'"{c}"' if "," in c else c for c in header) + "\n"
    text += "".join(",".join(f'"{v}"' if ("," in v or '"' in v) and not v.startswith('"') else v for v in row) + "\n" for row in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


MIMIC_META_HEADER = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]  # fmt: skip


def mimic_files(folder: Path, labels: dict[str, list[str]] | None = None) -> Path:
    """Two subjects, three studies, five images; views in MIMIC's spellings; labels in every form."""
    images = [
        ("d1", "10000032", "50414267", "PA", "3056", "2544"),
        ("d2", "10000032", "50414267", "LATERAL", "3056", "2544"),
        ("d3", "10000032", "53189527", "AP", "2705", "2539"),
        ("d4", "10000764", "57375967", "AP AXIAL", "2022", "2022"),
        ("d5", "10000764", "57375967", "", "2022", "2022"),
    ]
    rows = [
        [d, s, st_, "CHEST (PA AND LAT)", v, r, c, "21800506", "213014.531", "CHEST (PA AND LAT)", "postero-anterior", "Erect"]
        for d, s, st_, v, r, c in images
    ]
    write_csv(folder / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_META_HEADER, rows)
    write_csv(
        folder / "mimic-cxr-2.0.0-split.csv.gz",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[d, st_, s, sp] for (d, s, st_, *_), sp in zip(images, ["train", "train", "train", "validate", "validate"], strict=True)],
    )
    values = labels or {"50414267": ["1.0", "0.0", "-1.0", ""], "53189527": ["", "1.0", "", "0.0"], "57375967": ["0.0", "", "", "1.0"]}
    studies = {"50414267": "10000032", "53189527": "10000032", "57375967": "10000764"}
    label_rows = [[studies[study], study, *vals, *[""] * (len(CHEXPERT_LABELS) - len(vals))] for study, vals in values.items()]
    write_csv(folder / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *CHEXPERT_LABELS], label_rows)
    return folder


CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]


def chexpert_files(folder: Path) -> Path:
    """patient00001 has three images over two studies; prefixes small, full and none; labels 1.0/0.0/-1.0/blank/1/0."""
    rest = [""] * (len(CHEXPERT_LABELS) - 4)
    train = [
        [
            "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
            "Female",
            "68",
            "Frontal",
            "AP",
            "1.0",
            "",
            "-1.0",
            "0.0",
            *rest,
        ],
        ["CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg", "Female", "68", "Lateral", "", "1", "0", "", "", *rest],
        ["CheXpert-v1.0-small/train/patient00001/study2/view1_frontal.jpg", "Female", "69", "Frontal", "PA", "", "", "", "1.0", *rest],
        ["train/patient00002/study1/view1_frontal.jpg", "Male", "87", "Frontal", "RL", "0.0", "", "", "", *rest],
        ["CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg", "Unknown", "", "Frontal", "AP", "", "", "", "", *rest],
    ]
    write_csv(folder / "train.csv", CHEXPERT_HEADER, train)
    valid = [
        [
            "CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg",
            "Male",
            "73",
            "Frontal",
            "AP",
            "0.0",
            "1.0",
            "0.0",
            "0.0",
            *["0.0"] * len(rest),
        ]
    ]
    write_csv(folder / "valid.csv", CHEXPERT_HEADER, valid)
    return folder


NIH_HEADER = [
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Sex", "View Position",
    "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]", "",
]  # fmt: skip


def nih_files(folder: Path, v2020: bool = True) -> Path:
    header = list(NIH_HEADER) if v2020 else [("Patient Gender" if c == "Patient Sex" else c) for c in NIH_HEADER]
    rows = [
        ["00000001_000.png", "Cardiomegaly", "0", "1", "58", "M", "PA", "2682", "2749", "0.143", "0.143", ""],
        ["00000001_001.png", "Cardiomegaly|Emphysema", "1", "1", "58", "M", "PA", "2894", "2729", "0.143", "0.143", ""],
        ["00000002_000.png", "No Finding", "0", "2", "81", "M", "AP", "2500", "2048", "0.168", "0.168", ""],
        ["00000003_000.png", "Hernia|Pleural_Thickening", "0", "3", "74", "F", "PA", "2500", "2048", "0.168", "0.168", ""],
    ]
    write_csv(folder / ("Data_Entry_2017_v2020.csv" if v2020 else "Data_Entry_2017.csv"), header, rows)
    (folder / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png\n")
    (folder / "test_list.txt").write_text("00000003_000.png\n")
    return folder


PADCHEST_HEADER = [
    "", "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
    "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric", "Rows_DICOM", "Columns_DICOM", "Labels",
    "Localizations",
]  # fmt: skip


def padchest_files(folder: Path, labels: list[str] | None = None) -> Path:
    labels = labels or ["\"['normal']\"", "\"['pleural effusion', ' cardiomegaly']\"", '"[]"', "", '"[\'cardiomegaly\', ""pacemaker""]"']
    base = [
        ("1_a-1-1.png", "20140930", "s1", "p1", "1937.0", "M", "POSTEROANTERIOR", "PA", "2828", "2320"),
        ("1_b-1-1.png", "20140930", "s1", "p1", "1937.0", "M", "LATERAL", "L", "2828", "2320"),
        ("2_a-2-2.png", "20150102", "s2", "p2", "1950.0", "F", "AP", "AP_horizontal", "2000", "2000"),
        ("3_a-3-3.png", "20150102", "s3", "p3", "", "F", "", "COSTAL", "2000", "2000"),
        ("4_a-4-4.png", "20160512", "s4", "", "1960.0", "", "PA", "PA", "2000", "2000"),
    ]
    rows = [
        [str(i), b[0], "0", *b[1:7], b[7], "Manual review of DICOM fields", "No", b[8], b[9], lab, '"[]"']
        for i, (b, lab) in enumerate(zip(base, labels, strict=True))
    ]
    write_csv(folder / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", PADCHEST_HEADER, rows)
    return folder


VINDR_LABELS = REGISTRY["VinDr-CXR"].metadata.labels


def vindr_files(folder: Path) -> Path:
    def row(image_id, rad, positives):
        return [image_id, *([rad] if rad is not None else []), *("1" if label in positives else "0" for label in VINDR_LABELS)]

    train = [
        row("v1", "R1", {"Cardiomegaly"}), row("v1", "R2", {"Cardiomegaly", "Nodule/Mass"}), row("v1", "R3", {"No finding"}),
        row("v2", "R4", set()), row("v2", "R5", {"Pneumothorax"}), row("v2", "R6", set()),
    ]  # fmt: skip
    write_csv(folder / "image_labels_train.csv", ["image_id", "rad_id", *VINDR_LABELS], train)
    write_csv(folder / "image_labels_test.csv", ["image_id", *VINDR_LABELS], [row("v3", None, {"Tuberculosis"})])
    return folder


# --------------------------------------------------------------------------- readers


def test_mimic_joins_split_and_study_labels(tmp_path):
    meta = cxu.read_metadata("mimic", mimic_files(tmp_path))
    assert list(meta.columns[: len(METADATA_SCHEMA)]) == list(METADATA_SCHEMA)
    assert dict(meta.select(list(METADATA_SCHEMA)).schema) == METADATA_SCHEMA
    assert meta["image_id"].to_list() == ["d1", "d2", "d3", "d4", "d5"]
    assert meta["patient_id"].to_list() == ["10000032"] * 3 + ["10000764"] * 2
    assert meta["study_id"].to_list() == ["50414267", "50414267", "53189527", "57375967", "57375967"]
    assert meta["view"].to_list() == ["PA", "LATERAL", "AP", None, None]
    assert meta["view_raw"].to_list() == ["PA", "LATERAL", "AP", "AP AXIAL", None]
    assert meta["split"].to_list() == ["train", "train", "train", "val", "val"]
    assert meta["original_height"].to_list() == [3056, 3056, 2705, 2022, 2022]
    assert meta["sex"].null_count() == meta.height and meta["age"].null_count() == meta.height
    # labels per study, copied to each image of the study, in every published form
    assert meta["label.No Finding"].to_list() == [1.0, 1.0, None, 0.0, 0.0]
    assert meta["label.Enlarged Cardiomediastinum"].to_list() == [0.0, 0.0, 1.0, None, None]
    assert meta["label.Cardiomegaly"].to_list() == [-1.0, -1.0, None, None, None]
    assert meta["label.Cardiomegaly"].dtype == pl.Float32
    assert cxu.label_columns(meta) == [f"label.{name}" for name in CHEXPERT_LABELS]


def test_mimic_labeler_choice(tmp_path):
    folder = mimic_files(tmp_path)
    (folder / "mimic-cxr-2.0.0-negbio.csv.gz").write_bytes((folder / "mimic-cxr-2.0.0-chexpert.csv.gz").read_bytes())
    with pytest.raises(InputError, match="labeler="):
        cxu.read_metadata("mimic", folder)
    assert cxu.read_metadata("mimic", folder, labeler="negbio").height == 5
    with pytest.raises(InputError, match="metadata.csv"):
        cxu.read_metadata("mimic", folder / "mimic-cxr-2.0.0-chexpert.csv.gz")


def test_chexpert_prefixes_patients_views_and_split(tmp_path):
    meta = cxu.read_metadata("CheXpert", chexpert_files(tmp_path))
    assert meta["image_id"].to_list() == [
        "train/patient00001/study1/view1_frontal.jpg",
        "train/patient00001/study1/view2_lateral.jpg",
        "train/patient00001/study2/view1_frontal.jpg",
        "train/patient00002/study1/view1_frontal.jpg",
        "train/patient00003/study1/view1_frontal.jpg",
        "valid/patient64541/study1/view1_frontal.jpg",
    ]
    assert meta["patient_id"].to_list() == ["patient00001"] * 3 + ["patient00002", "patient00003", "patient64541"]
    assert meta["study_id"][2] == "patient00001/study2"
    assert meta["view"].to_list() == ["AP", "LATERAL", "PA", None, "AP", "AP"]
    assert meta["view_raw"][3] == "RL"
    assert meta["sex"].to_list() == ["F", "F", "F", "M", None, "M"]
    assert meta["age"].to_list() == [68.0, 68.0, 69.0, 87.0, None, 73.0]
    assert meta["split"].to_list() == ["train"] * 5 + ["val"]
    assert meta["label.No Finding"].to_list() == [1.0, 1.0, None, 0.0, None, 0.0]
    assert meta["label.Cardiomegaly"].to_list() == [-1.0, None, None, None, None, 0.0]


def test_nih_pipe_labels_lists_and_sizes(tmp_path):
    for v2020 in (True, False):
        folder = nih_files(tmp_path / str(v2020), v2020=v2020)
        meta = cxu.read_metadata("ChestX-ray8", folder)
        assert meta["patient_id"].to_list() == ["1", "1", "2", "3"]
        assert meta["sex"].to_list() == ["M", "M", "M", "F"]
        assert meta["age"].to_list() == [58.0, 58.0, 81.0, 74.0]
        assert meta["view"].to_list() == ["PA", "PA", "AP", "PA"]
        assert meta["split"].to_list() == ["train", "train", "train", "test"]
        assert meta["original_width"].to_list() == [2682, 2894, 2500, 2500]
        assert meta["original_height"].to_list() == [2749, 2729, 2048, 2048]
        assert meta["label.Cardiomegaly"].to_list() == [1.0, 1.0, 0.0, 0.0]
        assert meta["label.No Finding"].to_list() == [0.0, 0.0, 1.0, 0.0]
        assert meta["label.Pleural_Thickening"].to_list() == [0.0, 0.0, 0.0, 1.0]
        assert meta["study_id"].null_count() == 4


def test_nih_unknown_finding_and_lists_alone(tmp_path):
    folder = nih_files(tmp_path)
    entries = folder / "Data_Entry_2017_v2020.csv"
    entries.write_text(entries.read_text().replace("Hernia|Pleural_Thickening", "Hernia|Pleural Thickening"))
    with pytest.raises(RecordError) as error:
        cxu.read_metadata("nih", folder)
    assert error.value.row == 3 and error.value.image_id == "00000003_000.png" and "Pleural Thickening" in str(error.value)
    with pytest.raises(InputError, match="Data_Entry"):
        cxu.read_metadata("nih", folder / "test_list.txt")


def test_padchest_list_labels_without_eval_and_age(tmp_path):
    with pytest.warns(MetadataWarning, match="1 of 5 Padchest metadata rows have no patient id"):
        meta = cxu.read_metadata("padchest", padchest_files(tmp_path))
    assert meta["view"].to_list() == ["PA", "LATERAL", "AP", None, "PA"]
    assert meta["view_raw"].to_list() == ["PA", "L", "AP_horizontal", "COSTAL", "PA"]
    assert meta["age"].to_list() == [77.0, 77.0, 65.0, None, 56.0]
    assert meta["patient_id"].to_list() == ["p1", "p1", "p2", "p3", "4_a-4-4.png"]  # fallback: its own patient
    assert meta["study_id"].to_list() == ["s1", "s1", "s2", "s3", "s4"]
    assert meta["split"].null_count() == 5
    assert meta["original_height"][0] == 2828
    assert cxu.label_columns(meta) == ["label.cardiomegaly", "label.normal", "label.pacemaker", "label.pleural effusion"]
    assert meta["label.normal"].to_list() == [1.0, 0.0, None, None, 0.0]
    assert meta["label.cardiomegaly"].to_list() == [0.0, 1.0, None, None, 1.0]
    assert meta["label.pacemaker"].to_list() == [0.0, 0.0, None, None, 1.0]


def test_padchest_labels_that_are_not_a_list(tmp_path):
    bad = ["\"['normal']\"", "normal", '"[]"', "", '"[]"']
    with pytest.raises(RecordError) as error, warnings.catch_warnings():
        warnings.simplefilter("ignore", MetadataWarning)
        cxu.read_metadata("padchest", padchest_files(tmp_path, labels=bad))
    assert error.value.row == 1 and error.value.image_id == "1_b-1-1.png" and error.value.column == "Labels"
    sneaky = ["\"[__import__('os')]\"", '"[]"', '"[]"', '"[]"', '"[]"']
    with pytest.raises(RecordError), warnings.catch_warnings():
        warnings.simplefilter("ignore", MetadataWarning)
        cxu.read_metadata("padchest", padchest_files(tmp_path / "2", labels=sneaky))


def test_vindr_readers_majority_or_any(tmp_path):
    folder = vindr_files(tmp_path)
    meta = cxu.read_metadata("vindr", folder).sort("image_id")
    assert meta["image_id"].to_list() == ["v1", "v2", "v3"]
    assert meta["patient_id"].to_list() == ["v1", "v2", "v3"]  # no patient ids: each image its own patient
    assert meta["split"].to_list() == ["train", "train", "test"]
    assert meta["label.Cardiomegaly"].to_list() == [1.0, 0.0, 0.0]  # 2 of 3
    assert meta["label.Nodule/Mass"].to_list() == [0.0, 0.0, 0.0]  # 1 of 3
    assert meta["label.Tuberculosis"].to_list() == [0.0, 0.0, 1.0]
    anyone = cxu.read_metadata("vindr", folder, readers="any").sort("image_id")
    assert anyone["label.Nodule/Mass"].to_list() == [1.0, 0.0, 0.0]
    assert anyone["label.Pneumothorax"].to_list() == [0.0, 1.0, 0.0]


def test_source_detected_from_columns(tmp_path):
    nih_files(tmp_path / "nih")
    assert detect_metadata_source(tmp_path / "nih" / "Data_Entry_2017_v2020.csv") == "ChestX-ray8"
    assert cxu.read_metadata(None, tmp_path / "nih")["source"].unique().to_list() == ["ChestX-ray8"]
    chexpert_files(tmp_path / "mixed")
    nih_files(tmp_path / "mixed")
    with pytest.raises(InputError, match="several sources"):
        cxu.read_metadata(None, tmp_path / "mixed")


# --------------------------------------------------------------------------- bad input


def test_wrong_source_file_is_refused_naming_it(tmp_path):
    entries = nih_files(tmp_path) / "Data_Entry_2017_v2020.csv"
    with pytest.raises(InputError, match=r"Data_Entry_2017_v2020\.csv has the columns of a ChestX-ray8") as error:
        cxu.read_metadata("CheXpert", entries)
    assert "source='ChestX-ray8'" in str(error.value)
    unknown = write_csv(tmp_path / "other.csv", ["a", "b"], [["1", "2"]])
    with pytest.raises(SchemaError, match="other.csv"):
        cxu.read_metadata("CheXpert", unknown)
    with pytest.raises(FileReadError):
        cxu.read_metadata("CheXpert", tmp_path / "absent.csv")
    with pytest.raises(InputError, match="no VinDr-CXR metadata file"):
        cxu.read_metadata("vindr", tmp_path)


def test_renamed_columns_are_mapped(tmp_path):
    path = chexpert_files(tmp_path) / "train.csv"
    path.write_text(path.read_text().replace("Frontal/Lateral", "View").replace("Path,", "Image,", 1))
    with pytest.raises(SchemaError, match="Path"):
        cxu.read_metadata("CheXpert", path)
    meta = cxu.read_metadata("CheXpert", path, columns={"Image": "Path", "View": "Frontal/Lateral"})
    assert meta["view"][1] == "LATERAL"


def test_duplicates_raise_or_keep_first(tmp_path):
    folder = chexpert_files(tmp_path)
    path = folder / "train.csv"
    lines = path.read_text().splitlines()
    # the same image under another prefix is the same image
    path.write_text("\n".join([*lines, lines[1].replace("CheXpert-v1.0-small/", "CheXpert-v1.0/")]) + "\n")
    with pytest.raises(RecordError, match="duplicates='first'") as error:
        cxu.read_metadata("CheXpert", path)
    assert error.value.row == 5 and error.value.image_id == "train/patient00001/study1/view1_frontal.jpg"
    with pytest.warns(MetadataWarning, match="1 Path values appear more than once"):
        meta = cxu.read_metadata("CheXpert", path, duplicates="first")
    assert meta.height == 5
    with pytest.raises(InputError, match="duplicates"):
        cxu.read_metadata("CheXpert", path, duplicates="last")


def test_missing_patient_ids_fall_back_with_a_counted_warning(tmp_path):
    folder = nih_files(tmp_path)
    entries = folder / "Data_Entry_2017_v2020.csv"
    entries.write_text(entries.read_text().replace("No Finding,0,2,", "No Finding,0,,"))
    with pytest.warns(MetadataWarning, match="1 of 4 ChestX-ray8 metadata rows have no patient id"):
        meta = cxu.read_metadata("nih", folder)
    assert meta["patient_id"].to_list() == ["1", "1", "00000002_000.png", "3"]


@pytest.mark.parametrize(
    ("edit", "fields"),
    [(lambda f: f[:3], 3), (lambda f: f[:5] + f[6:], 11), (lambda f: [*f, "extra"], 13)],
    ids=["three-fields", "one-comma-lost", "one-field-added"],
)
def test_ragged_row_is_refused_naming_file_and_line(tmp_path, edit, fields):
    # issue 22 item 4: polars padded a short row with nulls (and cut a long one), and the reader joined the garbage
    folder = nih_files(tmp_path)
    path = folder / "Data_Entry_2017_v2020.csv"
    lines = path.read_text().splitlines()
    lines[3] = ",".join(edit(lines[3].split(",")))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=f"line 4 has {fields} fields where the header has 12") as error:
        cxu.read_metadata("ChestX-ray8", path)
    assert error.value.file == str(path) and error.value.row == 2
    assert str(path) in str(error.value) and "Repair the row" in str(error.value)


def test_unnamed_trailing_column_in_no_row_is_read(tmp_path):
    folder = nih_files(tmp_path)  # the v2020 header ends in a comma: an unnamed 12th column
    path = folder / "Data_Entry_2017_v2020.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], *(line.removesuffix(",") for line in lines[1:])]) + "\n")
    assert cxu.read_metadata("ChestX-ray8", path)["patient_id"].to_list() == ["1", "1", "2", "3"]
    lines[2] = lines[2].removesuffix(",")  # in some rows only: those rows are refused
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match="line 3 has 11 fields where the header has 12"):
        cxu.read_metadata("ChestX-ray8", path)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_row_with_an_empty_id_is_refused_naming_file_and_line(tmp_path, suffix):
    # issue 22 item 4: an empty Image Index joined nothing (or, after normalising, the wrong image)
    folder = nih_files(tmp_path)
    path = folder / "Data_Entry_2017_v2020.csv"
    text = path.read_text().replace("00000002_000.png,", " ,")
    path.unlink()
    path = write_csv(tmp_path / f"entries{suffix}", [], [])
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    with pytest.raises(RecordError, match="line 4 has an empty 'Image Index'") as error:
        cxu.read_metadata("ChestX-ray8", path)
    assert (error.value.file, error.value.row, error.value.column) == (str(path), 2, "Image Index")
    assert "Repair the row or delete it" in str(error.value)
    chexpert = chexpert_files(tmp_path / "chexpert") / "train.csv"
    lines = chexpert.read_text().splitlines()
    lines[2] = "," + lines[2].split(",", 1)[1]
    chexpert.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match="line 3 has an empty 'Path'"):
        cxu.read_metadata("CheXpert", chexpert)


@pytest.mark.parametrize("value", ["2", "yes", "0.5", "1.0.0", "-2"])
def test_label_outside_the_allowed_values(tmp_path, value):
    folder = chexpert_files(tmp_path)
    path = folder / "train.csv"
    lines = path.read_text().splitlines()
    fields = lines[3].split(",")
    fields[CHEXPERT_HEADER.index("Cardiomegaly")] = value
    lines[3] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError) as error:
        cxu.read_metadata("CheXpert", path)
    assert (error.value.file, error.value.row, error.value.column) == (str(path), 2, "Cardiomegaly")
    assert error.value.image_id == "train/patient00001/study2/view1_frontal.jpg" and repr(value) in str(error.value)


def test_vindr_label_error_names_the_row(tmp_path):
    folder = vindr_files(tmp_path)
    path = folder / "image_labels_test.csv"
    path.write_text(path.read_text().replace("v3,0", "v3,x"))
    with pytest.raises(RecordError) as error:
        cxu.read_metadata("vindr", path)
    assert (error.value.row, error.value.image_id, error.value.column) == (0, "v3", VINDR_LABELS[0])


# --------------------------------------------------------------------------- join


def sample_metadata(table: pl.DataFrame) -> list[pl.DataFrame]:
    """Metadata for the sample's ids, written in each source's other spellings of the id."""
    frames = []
    for source, rows in table.group_by("source", maintain_order=True):
        ids = rows["image_id"]
        if source[0] == "CheXpert":
            ids = "CheXpert-v1.0-small/" + ids.str.replace(r"\.jpg$", "")
        elif source[0] in ("ChestX-ray8", "Padchest"):
            ids = ids.str.replace(r"\.png$", "")
        else:
            ids = ids + ".dcm"
        frames.append(
            pl.DataFrame({"source": source[0], "image_id": ids, "patient_id": [f"p{i // 2}" for i in range(len(ids))],
                          "view": "PA", "split": ["train", None] * (len(ids) // 2) + ["test"] * (len(ids) % 2),
                          "original_height": pl.Series([2048] * len(ids), dtype=pl.Int32),
                          "original_width": pl.Series([2500] * len(ids), dtype=pl.Int32)})
        )  # fmt: skip
    return frames


def test_attach_matches_every_id_spelling():
    table = cxu.load_sample()
    joined, report = cxu.attach_metadata(table, sample_metadata(table), return_report=True)
    assert joined.height == table.height and joined["patient_id"].null_count() == 0
    assert joined.select(table.columns).equals(table)  # the table's own columns are unchanged
    assert report.matched == table.height and report.size_mismatches.height == 0
    assert dict(zip(report.per_source["source"], report.per_source["matched"], strict=True)) == {s: 40 for s in cxu.SOURCES}
    assert "official_split" in joined.columns and "split" not in joined.columns


def test_attach_partial_lazy_and_inner():
    table = cxu.load_sample()
    metadata = [m for m in sample_metadata(table) if m["source"][0] == "VinDr-CXR"]
    lazy = cxu.attach_metadata(table.lazy(), metadata[0].head(10))
    assert isinstance(lazy, pl.LazyFrame)
    joined = lazy.collect()
    assert joined.height == 200 and joined["patient_id"].null_count() == 190
    _, report = cxu.attach_metadata(table, metadata, how="inner", return_report=True)
    counts = dict(zip(report.per_source["source"], report.per_source["matched"], strict=True))
    assert counts["VinDr-CXR"] == 40 and counts["CheXpert"] == 0
    assert cxu.attach_metadata(table, metadata, how="inner").height == 40


def test_attach_nothing_matching_raises_with_examples():
    table = cxu.load_sample()
    wrong = pl.DataFrame({"source": ["CheXpert"], "image_id": ["train/patient99999/study1/view1_frontal.jpg"]})
    with pytest.raises(InputError, match="no row matched") as error:
        cxu.attach_metadata(table, wrong)
    assert "patient99999" in str(error.value)
    doubled = pl.concat([sample_metadata(table)[0]] * 2)
    with pytest.raises(InputError, match="repeated"):
        cxu.attach_metadata(table, doubled)
    joined = cxu.attach_metadata(table, sample_metadata(table))
    with pytest.raises(InputError, match="already has"):
        cxu.attach_metadata(joined, sample_metadata(table))


def test_attach_reports_size_disagreements():
    table = cxu.load_sample().head(3).with_columns(
        pl.Series("frame", ["original", "original", "preprocessed"]), pl.Series("height", [2048, 999, 1024], pl.Int32),
        pl.Series("width", [2500, 2500, 1024], pl.Int32),
    )  # fmt: skip
    metadata = sample_metadata(cxu.load_sample())
    with pytest.warns(MetadataWarning, match="1 rows disagree"):
        _, report = cxu.attach_metadata(table, metadata, return_report=True)
    assert report.size_mismatches["height"].to_list() == [999]  # the 1024 preprocessed default is not compared


def test_metadata_key_normalises_both_sides():
    frame = pl.DataFrame({
        "source": ["CheXpert", "CheXpert", "CheXpert", "ChestX-ray8", "MIMIC-CXR-JPG", "Padchest"],
        "image_id": ["CheXpert-v1.0/train/patient1/study1/view1_frontal.jpg", "train\\patient1\\study1\\view1_frontal",
                     "./train/patient1/study1/view1_frontal.JPG", "00000001_000.png", "abc-def", "x_y-1-2.png"],
    })  # fmt: skip
    keys = frame.select(metadata_key()).to_series().to_list()
    assert keys == ["train/patient1/study1/view1_frontal"] * 3 + ["00000001_000", "abc-def", "x_y-1-2"]


def test_read_then_attach_end_to_end(tmp_path):
    meta = cxu.read_metadata("CheXpert", chexpert_files(tmp_path))
    table = cxu.load_sample().filter(pl.col("source") == "CheXpert").head(2)
    table = table.with_columns(
        pl.Series("image_id", ["train/patient00001/study1/view1_frontal", "valid/patient64541/study1/view1_frontal.jpg"])
    )
    joined = cxu.attach_metadata(table, meta)
    assert joined["patient_id"].to_list() == ["patient00001", "patient64541"]
    assert joined["official_split"].to_list() == ["train", "val"]
    assert joined["label.No Finding"].to_list() == [1.0, 0.0]


# --------------------------------------------------------------------------- splits


def patients_table(n_patients: int, images: int = 3, seed: int = 0) -> pl.DataFrame:
    import numpy as np

    rng = np.random.default_rng(seed)
    counts = rng.integers(1, images + 1, n_patients)
    patient = np.repeat(np.arange(n_patients), counts)
    return pl.DataFrame({
        "source": np.where(patient % 3 == 0, "CheXpert", "MIMIC-CXR-JPG"),
        "patient_id": [f"p{p}" for p in patient],
        "image_id": [f"i{k}" for k in range(len(patient))],
        "value": rng.random(len(patient)),
    })  # fmt: skip


def test_patient_split_deterministic_and_stable_under_added_rows():
    table = patients_table(500)
    first = cxu.patient_split(table, seed=3)
    assert first.select(table.columns).equals(table) and first.columns == [*table.columns, "split"]
    assert first.equals(cxu.patient_split(table, seed=3))
    assert not first["split"].equals(cxu.patient_split(table, seed=4)["split"])
    more = pl.concat(
        [
            patients_table(300, seed=9).with_columns(
                ("new" + pl.col("patient_id")).alias("patient_id"), ("new" + pl.col("image_id")).alias("image_id")
            ),
            table.head(50),
            table,
        ]
    )
    again = cxu.patient_split(more.sample(fraction=1.0, shuffle=True, seed=1), seed=3)
    old = first.select("image_id", "split").join(again.select("image_id", "split").unique(), on="image_id", suffix="_again")
    assert old.height == table.height and (old["split"] == old["split_again"]).all()
    assert cxu.check_leakage(again).height == 0


@pytest.mark.slow
def test_patient_split_fractions_within_one_percent():
    table = patients_table(30_000, images=3)
    split = cxu.patient_split(table, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    patients = split.unique(["source", "patient_id"])
    for name, target in {"train": 0.7, "val": 0.15, "test": 0.15}.items():
        assert abs((patients["split"] == name).mean() - target) < 0.01
        assert abs((split["split"] == name).mean() - target) < 0.01


@settings(max_examples=40, deadline=None)
@given(
    patients=st.lists(st.tuples(st.sampled_from(["CheXpert", "Padchest"]), st.text(min_size=0, max_size=4)), min_size=1, max_size=60),
    seed=st.integers(0, 2**40),
    fractions=st.lists(st.floats(0.05, 1.0), min_size=1, max_size=4),
)
def test_no_patient_in_two_splits(patients, seed, fractions):
    total = sum(fractions)
    named = {f"s{i}": f / total for i, f in enumerate(fractions)}
    named[f"s{len(fractions) - 1}"] += 1.0 - sum(named.values())
    table = pl.DataFrame({"source": [s for s, _ in patients], "patient_id": [p for _, p in patients]})
    split = cxu.patient_split(table, named, seed=seed)
    assert cxu.check_leakage(split).height == 0
    assert set(split["split"]) <= set(named)
    assert split.group_by("source", "patient_id").agg(pl.col("split").n_unique())["split"].max() == 1


def test_official_split_is_kept_and_filled():
    table = pl.DataFrame({
        "source": ["MIMIC-CXR-JPG"] * 4 + ["Padchest"] * 3,
        "patient_id": ["a", "a", "b", "c", "x", "y", "z"],
        "official_split": ["test", None, "val", None, None, None, None],
    })  # fmt: skip
    split = cxu.patient_split(table, seed=0, official_split=True)
    assert split["split"].to_list()[:3] == ["test", "test", "val"]  # kept, and filled within patient a
    drawn = cxu.patient_split(table, seed=0)
    assert split["split"].to_list()[3:] == drawn["split"].to_list()[3:]  # the rest: the drawn split
    with pytest.raises(InputError, match="official_split"):
        cxu.patient_split(table.drop("official_split"), official_split=True)


def test_stratified_split_exact_per_stratum():
    table = patients_table(1000, images=1).with_columns(
        pl.when(pl.col("value") < 0.3).then(pl.lit("rare")).otherwise(pl.lit("common")).alias("stratum")
    )
    split = cxu.patient_split(table, {"train": 0.5, "test": 0.5}, stratify="stratum")
    counts = split.group_by("stratum", "split").len().sort("stratum", "split")
    for stratum, rows in counts.group_by("stratum"):
        assert abs(rows["len"][0] - rows["len"][1]) <= 1, stratum
    assert cxu.check_leakage(split).height == 0


def test_split_bad_arguments():
    table = patients_table(10)
    for fractions in ({"train": 0.5, "test": 0.4}, {"train": -0.1, "test": 1.1}, {}):
        with pytest.raises(InputError, match="fraction"):
            cxu.patient_split(table, fractions)
    with pytest.raises(InputError, match="attach_metadata"):
        cxu.patient_split(table.drop("patient_id"))
    with pytest.raises(InputError, match="no patient_id"):
        cxu.patient_split(table.with_columns(pl.lit(None, pl.String).alias("patient_id")))
    with pytest.raises(InputError, match="stratify"):
        cxu.patient_split(table, stratify="nope")


def test_check_leakage_finds_shared_patients():
    table = pl.DataFrame({"source": ["CheXpert"] * 4, "patient_id": ["a", "a", "b", "b"], "split": ["train", "val", "test", None]})
    leaks = cxu.check_leakage(table)
    assert leaks.rows() == [("CheXpert", "a", ["train", "val"], 2)]
    same_name_other_source = pl.DataFrame({"source": ["CheXpert", "Padchest"], "patient_id": ["a", "a"], "split": ["train", "test"]})
    assert cxu.check_leakage(same_name_other_source).height == 0


def test_unique_patients_modes():
    table = pl.DataFrame({
        "source": ["CheXpert"] * 5, "patient_id": ["a", "a", "a", "b", "b"], "image_id": list("12345"),
        "dice_rca_mean": [0.8, 0.9, 0.9, None, None], "node_sigma_mean": [7.0, 6.0, 5.0, None, 3.0],
    })  # fmt: skip
    assert cxu.unique_patients(table)["image_id"].to_list() == ["1", "4"]
    assert cxu.unique_patients(table, "best_dice")["image_id"].to_list() == ["2", "4"]
    assert cxu.unique_patients(table, "lowest_sigma")["image_id"].to_list() == ["3", "5"]
    assert cxu.unique_patients(table.lazy(), "lowest_sigma").collect()["image_id"].to_list() == ["3", "5"]
    with pytest.raises(InputError, match="keep"):
        cxu.unique_patients(table, "random")
    with pytest.raises(InputError, match="dice_rca_mean"):
        cxu.unique_patients(table.drop("dice_rca_mean"), "best_dice")


# --------------------------------------------------------------------------- patients named by the image id (issue 22 item 17)


def test_patient_split_reads_chestxray8_and_chexpert_patients_from_the_ids(tmp_path):
    meta = [cxu.read_metadata("nih", nih_files(tmp_path / "nih")), cxu.read_metadata("chexpert", chexpert_files(tmp_path / "chexpert"))]
    table = pl.concat(m.select("source", "image_id") for m in meta)
    split = cxu.patient_split(table, {"train": 0.5, "test": 0.5}, seed=2)  # no metadata attached
    assert split["patient_id_from"].unique().to_list() == ["image_id"]
    # the same ids the metadata gives (ChestX-ray8 "Patient ID" is 1, not 00000001), so the two paths agree
    assert split["patient_id"].to_list() == pl.concat(m["patient_id"] for m in meta).to_list()
    assert cxu.check_leakage(split).height == 0 and split.select(pl.struct("patient_id").n_unique()).item() == 7
    joined = cxu.attach_metadata(table, meta)
    assert cxu.patient_split(joined, {"train": 0.5, "test": 0.5}, seed=2)["split"].equals(split["split"])
    assert cxu.unique_patients(table)["image_id"].len() == 7 and cxu.check_leakage(split.drop("patient_id")).height == 0


def test_metadata_patient_ids_stay_the_authority():
    table = pl.DataFrame({"source": "ChestX-ray8", "image_id": ["00000001_000.png", "00000001_001.png", "00000002_000.png"]})
    given = table.with_columns(pl.Series("patient_id", ["a", "a", None]))
    split = cxu.patient_split(given, seed=0)
    assert split["patient_id"].to_list() == ["a", "a", "2"] and split["patient_id_from"].to_list() == ["table", "table", "image_id"]
    every = cxu.patient_split(given.with_columns(pl.lit("z").alias("patient_id")), seed=0)
    assert "patient_id_from" not in every.columns and every["patient_id"].to_list() == ["z"] * 3  # nothing derived: unchanged
    lazy = cxu.patient_split(table.lazy(), seed=0)
    assert isinstance(lazy, pl.LazyFrame) and lazy.collect().equals(cxu.patient_split(table, seed=0))


@pytest.mark.parametrize("source", ["MIMIC-CXR-JPG", "Padchest"])
def test_sources_whose_ids_name_no_patient_ask_for_both_metadata_steps(source):
    table = cxu.load_sample().filter(pl.col("source") == source)
    for call in (lambda t: cxu.patient_split(t), lambda t: cxu.unique_patients(t)):
        with pytest.raises(InputError) as error:
            call(table)
        message = str(error.value)
        assert f"40 rows have no patient_id (40 {source}; e.g. {source} {table['image_id'][0]!r})" in message
        assert f"read_metadata({source!r}, files)" in message and "attach_metadata(table, metadata)" in message


def test_vindr_is_split_per_image_only_when_asked(tmp_path):
    table = cxu.load_sample().filter(pl.col("source") == "VinDr-CXR")
    with pytest.raises(InputError, match="40 VinDr-CXR rows have no patient id .*Pass per_image=True"):
        cxu.patient_split(table)
    with pytest.raises(InputError, match="per_image=True"):
        cxu.unique_patients(table)
    split = cxu.patient_split(table, seed=0, per_image=True)
    assert split["patient_id"].equals(split["image_id"]) and set(split["patient_id_from"]) == {"image"}
    # read_metadata writes patient_id = image_id for VinDr-CXR: still per image, still refused without per_image
    meta = cxu.read_metadata("vindr", vindr_files(tmp_path))
    rows = pl.DataFrame({"source": "VinDr-CXR", "image_id": ["v1", "v2", "v3"]})
    joined = cxu.attach_metadata(rows, meta)
    with pytest.raises(InputError, match="per_image=True"):
        cxu.patient_split(joined)
    kept = cxu.patient_split(joined, official_split=True)  # every row keeps its official split: nothing drawn per image
    assert kept["split"].to_list() == ["train", "train", "test"]
    own = joined.with_columns(pl.Series("patient_id", ["x", "x", "y"]))  # ids of your own are used as given
    assert cxu.patient_split(own)["patient_id"].to_list() == ["x", "x", "y"]
    card = cxu.describe(split)
    assert "| VinDr-CXR | none published: each image is its own patient | 40 |" in card
    assert "VinDr-CXR: no patient ids are published, so each of its 40 images counts as its own patient" in card


def test_card_says_where_the_patient_ids_came_from():
    table = cxu.load_sample()
    card = cxu.describe(cxu.patient_split(table.filter(pl.col("source").is_in(["ChestX-ray8", "CheXpert"])), seed=0))
    assert "Where the patient ids come from:" in card
    assert "| ChestX-ray8 | read from the image id | 40 |" in card and "| CheXpert | read from the image id | 40 |" in card
    given = cxu.describe(table.with_columns(pl.format("p{}", pl.int_range(pl.len())).alias("patient_id")))
    assert "| MIMIC-CXR-JPG | the table's patient_id (source metadata) | 40 |" in given
