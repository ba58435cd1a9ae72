"""The package's shape: the public names of 0.1 still resolve, and no module reaches into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import chexmask_u_tools as cxu

PACKAGE = Path(cxu.__file__).parent

# Every public name that ``dir(chexmask_u_tools)`` listed in 0.1.0, before the re-layering.
PUBLIC_NAMES_0_1 = """
CANONICAL_SCHEMA CheXmaskUError FRAMES FileReadError HubError HubRepo HybridGNet ImageError ImageResolver InputError
LocalMirror MissingImageError N_LATENT N_NODES ORGANS ORGAN_SIZES ORGAN_SLICES PointsParseError RLEError RecordError Rule
SOURCES SampleWeighting SchemaError SkippedRowsWarning WeightsError add_summaries analysis annotations apply_filters
apply_rules band_mask build_cache cache check_images convert_table_frame corruptions crop_black_border detect_layout
dice_rule discover errors filter_criteria filter_report filtering find_cache format_points frame_scale frames
gaussian_blur gaussian_noise geometry heart_lung_overlap hub image_rule images label_map latent_rule latent_sigma_mean
layout list_images load_pretrained load_sample mask_shape mask_shape_exprs node_error_vs_sigma node_rule node_sigma
node_sigma_max node_sigma_mean node_sigma_quantile node_weights occlude ood_scores open_cache organ_areas
organ_polygons organ_rule organ_sigma_mean organ_validity pad_to_square parse_numbers parse_points parse_rule parsing
paths pixel_weight_map plots predict raster rasterize rasterize_organs rasterize_organs_torch rasterize_torch
read_image read_table read_tables released ring_adjacency ring_edges rle rle_decode rle_decode_many rle_encode
rle_encode_many roc_auc roi_sample rule_report rules sample sample_dir sample_files sample_masks sample_probability
sample_weights scale_points scan_table schema soft soft_mask soft_mask_organs soft_pixel_weights split_organs
std_to_original_frame std_to_preprocessed_frame summary_by_source table to_original_frame to_preprocessed_frame
to_released truncate_points uncertainty uncertainty_band uncertainty_vs_corruption weights write_released
""".split()


def test_every_public_name_of_0_1_resolves():
    listed = set(dir(cxu))
    missing = [name for name in PUBLIC_NAMES_0_1 if name not in listed or not hasattr(cxu, name)]
    assert missing == []


def _python_files() -> list[Path]:
    roots = [PACKAGE, PACKAGE.parent / "tests", PACKAGE.parent / "scripts", PACKAGE.parent / "tutorials"]
    return [path for root in roots if root.is_dir() for path in sorted(root.rglob("*.py"))]


def test_no_module_imports_another_modules_private_names():
    offences = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chexmask_u_tools"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
                offences += [f"{path.name}:{node.lineno} {name}" for name in private]
            if isinstance(node, ast.ImportFrom) and node.level:
                offences.append(f"{path.name}:{node.lineno} relative import")
    assert offences == []


def test_test_files_do_not_import_each_other():
    tests = {path.stem for path in (PACKAGE.parent / "tests").glob("test_*.py")}
    offences = []
    for path in (PACKAGE.parent / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in getattr(node, "names", [])] if isinstance(node, ast.Import) else []
            offences += [f"{path.name}:{node.lineno} {name}" for name in names if name in tests]
    assert offences == []


def test_passing_test_runs_leave_no_temporary_folders():
    """pytest keeps the tmp_path folders of failed runs only (about 300 MB per run otherwise)."""
    import tomllib

    options = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
    assert options.get("tmp_path_retention_policy") == "failed"
