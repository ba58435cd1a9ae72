"""Image path resolution for the five sources, user resolvers, traversal refusal, startup check."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import ImageError, InputError
from chexmask_u_tools.images.resolver import (
    ImageResolver,
    MissingImageError,
    check_image_id,
    check_images,
)
from chexmask_u_tools.testing.images import demo_image_path, write_demo_images


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    """One file per layout variant the resolver must find."""
    t = tmp_path
    files = {
        "chexpert": _touch(t / "chexpert" / "CheXpert-v1.0" / "train/patient00001/study1/view1_frontal.jpg"),
        "chexpert_small": _touch(t / "small" / "train/patient00002/study1/view1_frontal.jpg"),
        "mimic": _touch(t / "mimic" / "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"),
        "mimic_meta": _touch(t / "mimic_meta" / "files/p11/p11000011/s51111111/aaaa.jpg"),
        "nih_nested": _touch(t / "nih" / "images_003" / "images" / "00001234_000.png"),
        "nih_flat": _touch(t / "nih" / "images" / "00009999_001.png"),
        "padchest": _touch(t / "padchest" / "17" / "2161.png"),
        "vindr_dicom": _touch(t / "vindr" / "train" / "abc123.dicom"),
        "vindr_png": _touch(t / "vindr" / "test" / "def456.png"),
    }
    (t / "mimic_meta" / "mimic-cxr-2.0.0-metadata.csv").write_text("dicom_id,subject_id,study_id,ViewPosition\naaaa,11000011,51111111,PA\n")
    return files


def test_each_source_layout(tree, tmp_path):
    resolver = ImageResolver(
        {
            "CheXpert": [tmp_path / "chexpert", tmp_path / "small"],
            "mimic": tmp_path / "mimic",  # alias spelling
            "ChestX-Ray8": tmp_path / "nih",
            "Padchest": tmp_path / "padchest",
            "VinDr-CXR": tmp_path / "vindr",
        }
    )
    assert resolver.resolve("CheXpert", "train/patient00001/study1/view1_frontal.jpg") == tree["chexpert"]
    assert resolver.resolve("CheXpert", "train/patient00001/study1/view1_frontal") == tree["chexpert"]
    assert resolver.resolve("CheXpert", "CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg") == tree["chexpert"]
    assert resolver.resolve("CheXpert", "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg") == tree["chexpert_small"]
    assert resolver.resolve("MIMIC-CXR-JPG", "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014") == tree["mimic"]
    assert resolver.resolve("ChestX-ray8", "00001234_000.png") == tree["nih_nested"]
    assert resolver.resolve("ChestX-ray8", "00009999_001.png") == tree["nih_flat"]
    assert resolver.resolve("Padchest", "2161.png") == tree["padchest"]
    assert resolver.resolve("VinDr-CXR", "abc123") == tree["vindr_dicom"]
    assert resolver.resolve("VinDr-CXR", "def456") == tree["vindr_png"]


def test_mimic_metadata_index_is_used(tree, tmp_path):
    resolver = ImageResolver({"MIMIC-CXR-JPG": tmp_path / "mimic_meta"})
    assert resolver.resolve("MIMIC-CXR-JPG", "aaaa") == tree["mimic_meta"]
    with pytest.raises(MissingImageError) as info:
        resolver.resolve("MIMIC-CXR-JPG", "bbbb")
    assert "mimic-cxr-2.0.0-metadata.csv (1 dicom ids)" in str(info.value)


def test_missing_image_lists_every_path_tried(tree, tmp_path):
    resolver = ImageResolver({"ChestX-ray8": tmp_path / "nih", "MIMIC-CXR-JPG": tmp_path / "mimic"})
    with pytest.raises(MissingImageError) as info:
        resolver.resolve("ChestX-ray8", "00000000_000.png")
    error = info.value
    assert isinstance(error, ImageError) and error.image_id == "00000000_000.png"
    expected = [tmp_path / "nih" / p / "00000000_000.png" for p in ("", "images", "images_003", "images_003/images")]
    assert error.tried == [str(p) for p in expected]
    assert all(str(p) in str(error) for p in expected)
    with pytest.raises(MissingImageError, match=r"pXX/pXXXXXXXX/sXXXXXXXX/nope\.jpg \(index of 1 images"):
        resolver.resolve("MIMIC-CXR-JPG", "nope")
    with pytest.raises(MissingImageError, match="no image root configured"):
        resolver.resolve("Padchest", "1.png")


def test_user_resolver_overrides_and_falls_back(tree, tmp_path):
    special = _touch(tmp_path / "elsewhere" / "x.png")
    calls = []

    def resolver(source, image_id):
        calls.append((source, image_id))
        if image_id == "special":
            return special
        if image_id == "gone":
            return [tmp_path / "nowhere.png"]
        return None

    images = ImageResolver({"Padchest": tmp_path / "padchest"}, resolver=resolver)
    assert images.resolve("Padchest", "special") == special
    assert images.resolve("Padchest", "2161.png") == tree["padchest"]  # None -> built-in layouts
    with pytest.raises(MissingImageError, match="nowhere.png \\(from resolver\\)"):
        images.resolve("Padchest", "gone")
    assert ("Padchest", "special") in calls
    only_callable = ImageResolver(resolver=lambda s, i: special)
    assert only_callable.resolve("VinDr-CXR", "anything") == special


@pytest.mark.parametrize(
    "bad",
    ["../secret.png", "train/../../etc/passwd", "/etc/passwd", "C:/Windows/x.png", "a\\..\\b.png", "~/x.png", "", "a\x00b", None, 5],
)
def test_traversal_and_bad_ids_are_refused(bad, tmp_path):
    with pytest.raises(InputError):
        check_image_id(bad)
    resolver = ImageResolver(tmp_path)
    with pytest.raises(InputError):
        resolver.resolve("CheXpert", bad)
    with pytest.raises(InputError):
        demo_image_path("Padchest", bad)


@pytest.mark.parametrize(
    ("bad", "says"),
    [(".", "names no file"), ("./", "names no file"), ("\udcff.png", "unpaired surrogate"), ("a/\ud800.png", "unpaired surrogate")],
)
def test_ids_naming_no_file_or_not_text_raise_the_package_error(bad, says, tmp_path):
    # issue 22 item 10: these leaked ValueError (max() of no path parts) and UnicodeEncodeError
    with pytest.raises(InputError, match=says) as info:
        ImageResolver(tmp_path).resolve("CheXpert", bad)
    assert repr(bad) in str(info.value) and "fix the row's id" in str(info.value)
    with pytest.raises(InputError, match=says):
        check_image_id(bad)


def test_check_images_report_on_demo_tree(tmp_path):
    table = cxu.load_sample()
    subset = pl.concat([table.filter(pl.col("source") == s).head(4) for s in cxu.SOURCES])
    roots = write_demo_images(subset, tmp_path / "images")
    assert set(roots) == set(cxu.SOURCES)
    # Remove two images: the report counts them per source and shows what was tried.
    gone = []
    for source in ("VinDr-CXR", "CheXpert"):
        image_id = subset.filter(pl.col("source") == source)["image_id"][0]
        (roots[source] / demo_image_path(source, image_id)).unlink()
        gone.append(image_id)
    report = check_images(subset.lazy(), roots)
    assert (report.total, report.found, report.missing) == (20, 18, 2)
    assert report.per_source["VinDr-CXR"] == (3, 4) and report.per_source["Padchest"] == (4, 4)
    assert [p is None for p in report.paths].count(True) == 2
    assert {e[1] for e in report.examples} == set(gone)
    text = str(report)
    assert "18 of 20 rows" in text and gone[0] in text


def test_layouts_come_from_the_source_registry(tmp_path, monkeypatch):
    import dataclasses

    from chexmask_u_tools.sources import GENERIC_LAYOUT, REGISTRY, ImageLayout

    scan = _touch(tmp_path / "vindr" / "scans" / "part_2" / "abc.png")
    layout = ImageLayout(folders=("scans",), listed_folders="part", suffixes=(".png",))
    monkeypatch.setitem(REGISTRY, "VinDr-CXR", dataclasses.replace(REGISTRY["VinDr-CXR"], image_layout=layout))
    with pytest.raises(MissingImageError) as info:  # "part_2" is listed from the root, not from scans/
        ImageResolver({"VinDr-CXR": tmp_path / "vindr"}).resolve("VinDr-CXR", "abc")
    assert info.value.tried == [str(tmp_path / "vindr" / "scans" / n) for n in ("abc.png", "abc")]
    moved = _touch(tmp_path / "vindr" / "part_2" / "abc.png")
    assert ImageResolver({"VinDr-CXR": tmp_path / "vindr"}).resolve("VinDr-CXR", "abc") == moved
    assert scan.is_file()
    # A private label follows the generic layout: the id, with each of its suffixes.
    private = _touch(tmp_path / "mine" / "x1.jpeg")
    resolver = ImageResolver({"my-hospital": tmp_path / "mine"})
    assert resolver.resolve("my-hospital", "x1") == private
    with pytest.raises(MissingImageError) as info:
        resolver.resolve("my-hospital", "x2")
    assert info.value.tried == [str(tmp_path / "mine" / f"x2{s}") for s in (*GENERIC_LAYOUT.suffixes, "")]


def test_ids_too_long_for_the_file_system_are_input_errors_not_os_errors(tmp_path):
    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools.images.resolver import ImageResolver

    resolver = ImageResolver({"CheXpert": tmp_path})
    with pytest.raises(InputError, match="no file system stores names over 255 bytes"):
        resolver.locate("CheXpert", "a" * 5000)
    found, tried = resolver.locate("CheXpert", "b" * 253)  # fits alone, too long once ".jpg" is appended
    assert found is None and tried
