"""``chexmask-u view``: a local web page to browse a table by its uncertainty and to predict your own images.

Needs the [viewer] extra (Gradio); the Predict tab also needs [torch].  The app
lives in :mod:`chexmask_u_tools.cli.viewer`, which nothing else imports.
"""

from __future__ import annotations

import argparse
import signal
import sys

from chexmask_u_tools.cli._args import add_column_argument, column_mapping

_EPILOG = """\
examples:
  chexmask-u view sample
  chexmask-u view mcosarinsky/CheXmask-U --images CheXpert=/data/CheXpert-v1.0 --metadata /data/CheXpert-v1.0
  chexmask-u view ./cache/all --weights ./v1_skip --port 8080

Open the printed address in a browser.  Type rules as for --rule (one per line),
pick a row to see its contours coloured by per-node sigma over its image, copy
the equivalent command, export the kept rows, or upload X-rays in the Predict tab.
The page is served on 127.0.0.1 (this machine only) unless --host says otherwise;
--share opens a public gradio.live link (it needs internet and anyone with the
link can use the page, including exports inside --export-dir).
"""

VIEWER_EXTRA = "this command needs the [viewer] extra: pip install 'chexmask-u-tools[viewer]'"


def register(subparsers: argparse._SubParsersAction) -> None:
    from chexmask_u_tools.hub.inputs import INPUT_SPEC_HELP

    parser = subparsers.add_parser(
        "view",
        help="browse a table by its uncertainty, and predict your own images, in a local web page",
        description=(
            "Serve a local web page over LOCATION: rules in the toolkit's language with the count kept, a histogram "
            "and a page of rows; a row's contours coloured by per-node sigma over its image (--images) or a blank "
            "canvas; the equivalent command line and Python; export of the kept rows; and a Predict tab running the "
            "model on uploaded images (--weights).  A Hub id or a mirror folder is converted into its parquet cache "
            "first, as 'chexmask-u cache' does (also offline, with HF_HUB_OFFLINE=1)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("location", nargs="?", default="mcosarinsky/CheXmask-U", metavar="LOCATION", help=INPUT_SPEC_HELP + " (default: the Hub dataset mcosarinsky/CheXmask-U)")
    add_column_argument(parser)
    parser.add_argument(
        "--images", action="append", default=[], metavar="SOURCE=DIR", help="the image root of a source (repeatable)"
    )
    parser.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="[SOURCE=]PATH",
        help="a source's metadata folder or file, for rules such as 'view in PA,AP' (repeatable)",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="weights of the Predict tab, as for 'chexmask-u predict' (default: the published model; 'random': untrained)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    parser.add_argument("--export-dir", default=".", metavar="DIR", help="the folder exports are written inside (default: here)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of a Hub repo")
    parser.add_argument("--cache-dir", default=None, help="cache root (default: $CHEXMASK_U_CACHE or ~/.cache/chexmask-u-tools)")
    parser.add_argument("--samples", type=int, default=50, help="latent samples per predicted image (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the predictions (and of --weights random)")
    parser.add_argument("--dtype", choices=("fp32", "tf32", "bf16", "fp64"), default="fp32", help="as for 'chexmask-u predict'")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: a GPU if any, else cpu)")
    parser.add_argument("--max-upload-mb", type=int, default=100, help="largest uploaded file, MB (default 100)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar while a cache is built")
    parser.set_defaults(func=run)


def image_roots(values: list[str]) -> dict[str, str]:
    """``["SOURCE=DIR", ...]`` -> ``{"SOURCE": "DIR"}``; a malformed value names ``--images``.

    Examples
    --------
    >>> image_roots(["CheXpert=/data/chexpert"])
    {'CheXpert': '/data/chexpert'}
    """
    from chexmask_u_tools.errors import InputError

    roots: dict[str, str] = {}
    for value in values:
        source, equals, folder = value.partition("=")
        if not equals or not source.strip() or not folder.strip():
            raise InputError(f"--images {value!r}: expected SOURCE=DIR, e.g. --images CheXpert=/data/CheXpert-v1.0")
        if source.strip() in roots:
            raise InputError(f"--images: the source {source.strip()!r} is given twice")
        roots[source.strip()] = folder.strip()
    return roots


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    import importlib.util

    from chexmask_u_tools.errors import CheXmaskUError

    if importlib.util.find_spec("gradio") is None:
        raise CheXmaskUError(VIEWER_EXTRA)
    from chexmask_u_tools.cli.viewer.app import Workspace, serve
    from chexmask_u_tools.cli.viewer.data import ViewerData
    from chexmask_u_tools.cli.viewer.predict import Predictor

    # A terminated server stops like an interrupted one: its private folder is removed.
    signal.signal(signal.SIGTERM, _interrupt)
    roots = image_roots(args.images)
    predictor = Predictor(args.weights, dtype=args.dtype, samples=args.samples, seed=args.seed, device=args.device)
    workspace = Workspace()
    try:
        data = ViewerData.open(
            args.location,
            images=roots,
            metadata=args.metadata,
            revision=args.revision,
            cache_dir=args.cache_dir,
            columns=column_mapping(args),
            progress=not args.no_progress,
            say=lambda text: print(text, flush=True),
        )
        serve(
            data,
            predictor,
            workspace,
            host=args.host,
            port=args.port,
            share=args.share,
            export_dir=args.export_dir,
            max_upload_mb=args.max_upload_mb,
            say=lambda text: print(text, file=sys.stderr, flush=True),
        )
    except KeyboardInterrupt:
        pass
    finally:
        workspace.close()
    return 0
