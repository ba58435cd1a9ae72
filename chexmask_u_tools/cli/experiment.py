"""``chexmask-u experiment ood|corruption|node-error``: the paper's uncertainty experiments."""

from __future__ import annotations

import argparse
from pathlib import Path

from chexmask_u_tools.cli._args import add_column_argument, column_mapping


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="reproduce the paper's uncertainty experiments (OOD ROC-AUC, corruption, node error)",
        description="Reproduce the CheXmask-U uncertainty experiments on your own data.",
    )
    kinds = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)

    ood = kinds.add_parser(
        "ood",
        help="ROC-AUC of mean/max node sigma and mean latent sigma for flagging low-quality rows",
        description="OOD label: DICE_COLUMN < THRESHOLD (the paper: Dice RCA (Max) < 0.7).",
    )
    ood.add_argument("table", metavar="TABLE", help="any input: 'sample', a file, a folder, a cache or a Hub id")
    add_column_argument(ood)
    ood.add_argument(
        "--scores", default="node_sigma_mean,node_sigma_max,latent_sigma_mean",
        help="comma list of scores (default: mean and max node sigma, mean latent sigma)",
    )
    ood.add_argument(
        "--missing", choices=["raise", "drop"], default="raise",
        help="rows without the std or latents a score needs: raise (default) or leave them out of that score",
    )
    ood.add_argument(
        "--dice-column", "--dice", default="dice_rca_max",
        help="canonical Dice column of the OOD label: dice_rca_max (default) or dice_rca_mean",
    )
    ood.add_argument("--threshold", type=float, default=0.7, help="rows below it are OOD (default 0.7)")
    ood.add_argument("--roc", type=Path, default=None, help="also draw the ROC curves to this figure")
    ood.set_defaults(func=run_ood)

    corruption = kinds.add_parser(
        "corruption",
        help="both uncertainty measures versus corruption severity for a set of images (needs the [torch] extra)",
        description=(
            "Corrupt each image (in the model's 1024 input frame) at each severity and record mean node sigma "
            "and mean latent sigma. Severities: noise std on 0..255, occlusion square side (px), blur sigma (px)."
        ),
    )
    corruption.add_argument("images", metavar="IMAGES_DIR_OR_LIST", help="image directory, text file of paths, or one image")
    corruption.add_argument("--kind", choices=["noise", "occlusion", "blur"], default="noise")
    corruption.add_argument("--severities", default=None, help="comma list (default noise 0,25,50,100,150,190; occlusion 0,50,100,150; blur 0,2,4,8)")
    corruption.add_argument(
        "--weights", default=None,
        help="local weights or Hub id (default: the published mcosarinsky/CheXmask-U v1_skip); 'random' for untrained "
        "weights (testing only, as in `chexmask-u predict --weights random`)",
    )
    corruption.add_argument("--samples", type=int, default=50, help="latent samples per image (default 50)")
    corruption.add_argument("--nodes", type=int, default=10, help="occlusion: landmarks occluded per image (default 10)")
    corruption.add_argument("--seed", type=int, default=0)
    corruption.add_argument("--out", type=Path, required=True, help="results table (.csv or .parquet)")
    corruption.add_argument("--plot", type=Path, default=None, help="also draw the box plot to this figure")
    corruption.set_defaults(func=run_corruption)

    node = kinds.add_parser(
        "node-error",
        help="correlation of node error (vs ground-truth landmarks) with node sigma",
        description="Join predictions and ground truth on image_id and frame; Pearson and Spearman over all nodes.",
    )
    node.add_argument("predictions", metavar="PRED_TABLE", help="table with landmarks and landmark std (e.g. from predict)")
    node.add_argument("--truth", required=True, help="table with ground-truth landmarks for the same image ids")
    node.set_defaults(func=run_node_error)


_DEFAULT_SEVERITIES = {"noise": "0,25,50,100,150,190", "occlusion": "0,50,100,150", "blur": "0,2,4,8"}


def run_ood(args: argparse.Namespace) -> int:
    import polars as pl

    from chexmask_u_tools.analysis.experiments import DEFAULT_OOD_SCORES, ood_scores
    from chexmask_u_tools.cli._format import print_table
    from chexmask_u_tools.cli.plot import load_table
    from chexmask_u_tools.errors import InputError
    from chexmask_u_tools.select.uncertainty import require_uncertainty

    names = [name.strip() for name in args.scores.split(",") if name.strip()]
    unknown = [name for name in names if name not in DEFAULT_OOD_SCORES]
    if unknown or not names:
        raise InputError(f"--scores: unknown score(s) {unknown}; choose from {list(DEFAULT_OOD_SCORES)}")
    if args.dice_column not in ("dice_rca_max", "dice_rca_mean"):
        raise InputError(f"--dice-column must be dice_rca_max or dice_rca_mean, got {args.dice_column!r}")
    table = load_table(args.table, columns=column_mapping(args))
    needs = {"std": ("node_sigma_mean", "node_sigma_max"), "latent": ("latent_sigma_mean",)}
    # A score can be suggested only when the table has its data for some row.
    has_data = {
        "std": "landmarks_std" in table.columns and table["landmarks_std"].null_count() < table.height,
        "latent": "latent_sigma" in table.columns and table["latent_sigma"].null_count() < table.height,
    }
    for kind, needed_by in needs.items():
        scores = [name for name in names if name in needed_by]
        if scores:
            others = [
                name for name in names
                if name not in needed_by and any(name in needs[other] and has_data[other] for other in needs)
            ]
            fix = "pass --missing drop to score only the rows that have it" + (
                f", or --scores {','.join(others)}" if others else ""
            )
            # Only a check: with --missing drop each score leaves out its own rows (reported as n_dropped).
            require_uncertainty(
                table, kind, missing=args.missing, what=f"experiment ood (score {', '.join(scores)})", fix=fix
            )
    result = ood_scores(
        table, scores={name: DEFAULT_OOD_SCORES[name] for name in names},
        dice_column=args.dice_column, threshold=args.threshold,
    )
    print(f"OOD = {args.dice_column} < {args.threshold:g}; higher score = more OOD")
    print_table(result)
    if args.roc is not None:
        from chexmask_u_tools.analysis.plots import plot_roc

        usable = [r["score"] for r in result.iter_rows(named=True) if r["auc"] is not None]
        values = table.select(
            (pl.col(args.dice_column) < args.threshold).alias("__label"),
            *(DEFAULT_OOD_SCORES[name].cast(pl.Float64).alias(name) for name in usable),
        ).drop_nulls().drop_nans()
        plot_roc(values["__label"].to_numpy(), {name: values[name].to_numpy() for name in usable}, path=args.roc)
        print(f"wrote {args.roc}")
    return 0


def _parse_severities(text: str) -> list[float]:
    from chexmask_u_tools.errors import InputError

    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--severities must be a comma list of numbers, got {text!r}") from None
    if not values:
        raise InputError("--severities is empty")
    return values


def run_corruption(args: argparse.Namespace) -> int:
    from chexmask_u_tools.cli.predict import require_torch

    require_torch()
    import polars as pl

    from chexmask_u_tools.analysis.experiments import uncertainty_vs_corruption
    from chexmask_u_tools.cli._format import print_table
    from chexmask_u_tools.images.read import list_images
    from chexmask_u_tools.model.pretrained import RANDOM_WEIGHTS, load_weights

    severities = _parse_severities(args.severities or _DEFAULT_SEVERITIES[args.kind])
    items = list_images(args.images)
    model = load_weights(args.weights, random_seed=args.seed)
    if args.weights == RANDOM_WEIGHTS:
        # Same rule as `predict --weights random`: accepted, and said loudly.
        print(f"random weights (seed {args.seed}): the numbers show the machinery, not the paper's results")
    result = uncertainty_vs_corruption(
        model, [path for _, path in items], severities, args.kind, n_samples=args.samples, seed=args.seed,
        occluded_nodes=args.nodes, image_ids=[image_id for image_id, _ in items],
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    if args.out.suffix.lower() == ".parquet":
        result.write_parquet(tmp)
    else:
        result.write_csv(tmp)
    tmp.replace(args.out)
    print(f"median over {len(items)} image(s) per {args.kind} severity:")
    print_table(result.group_by("severity", maintain_order=True).agg(pl.col("node_sigma_mean", "latent_sigma_mean").median()))
    print(f"wrote {args.out}")
    if args.plot is not None:
        from chexmask_u_tools.analysis.plots import plot_uncertainty_vs_corruption

        plot_uncertainty_vs_corruption(result, path=args.plot)
        print(f"wrote {args.plot}")
    return 0


def run_node_error(args: argparse.Namespace) -> int:
    import numpy as np

    from chexmask_u_tools.analysis.stats import node_error_vs_sigma
    from chexmask_u_tools.cli.plot import load_table
    from chexmask_u_tools.errors import InputError

    pred = load_table(args.predictions)
    truth = load_table(args.truth)
    joined = pred.select("image_id", "frame", "landmarks", "landmarks_std").join(
        truth.select("image_id", "frame", truth_landmarks="landmarks"), on=["image_id", "frame"], how="inner"
    ).drop_nulls()
    if joined.height == 0:
        raise InputError("no image id (and frame) with predicted std has ground-truth landmarks")
    result = node_error_vs_sigma(
        np.stack(joined["landmarks"].to_numpy()), np.stack(joined["landmarks_std"].to_numpy()),
        np.stack(joined["truth_landmarks"].to_numpy()),
    )
    print(f"{joined.height} images, {result.n} nodes: Pearson r = {result.pearson:.3f}, Spearman rho = {result.spearman:.3f}")
    return 0
