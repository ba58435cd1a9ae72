"""The Gradio app of ``chexmask-u view``: the page, its named API endpoints, and serving it safely.

Gradio is imported inside the functions of this module (and nowhere else in
the package), so ``import chexmask_u_tools`` and ``chexmask-u --help`` never
pay for it.

Named endpoints (``gradio_client``: ``Client(url).predict(..., api_name="/browse")``):

``/browse(rules: str, limit: int = 50) -> dict``
    ``{"kept": int, "total": int, "rows": [...]}``: the rows the rules (one per
    line) keep, counted as ``apply_rules`` counts them, and the first ``limit``
    of them in table order (at most :data:`MAX_API_ROWS`), each a dict of the
    index columns (source, image_id, frame, height, width, dice_rca_mean,
    dice_rca_max, node_sigma_mean, ... and the joined metadata).
``/show(source: str, image_id: str) -> PNG``
    The row's overlay, a PNG of the size of its frame (see
    :func:`~chexmask_u_tools.cli.viewer.render.overlay_png`).
``/predict(image: file) -> (PNG, parquet)``
    The overlay of the prediction (original frame) and the canonical rows,
    with the provenance in the parquet file's metadata.

A package error (bad rule, unknown or unsafe id, no weights ...) comes back as
an error carrying the package's message; the server goes on serving.

Safety: the server binds to 127.0.0.1 unless told otherwise and never opens a
share link unless asked (``--share``).  Gradio serves only its own temporary
folder, private to this process (``GRADIO_TEMP_DIR``), where the viewer writes
the pictures and files it returns; images under the roots reach the page only
as rendered overlays.  The input, the image roots, the metadata files, the
export folder and the working directory are also listed in ``blocked_paths``,
and ``/file=`` requests for a URL (which Gradio would fetch and relay) are
refused.  Uploads are bounded in size (``max_file_size``), count and pixels
(see :mod:`chexmask_u_tools.cli.viewer.predict`).  Rules go through the
toolkit's parser; nothing the page sends is evaluated.
"""

from __future__ import annotations

import functools
import hashlib
import html
import importlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from chexmask_u_tools._atomic import atomic_write_bytes, process_alive
from chexmask_u_tools.cli.viewer.carry import cli_command, export_rows, export_target, python_snippet
from chexmask_u_tools.cli.viewer.data import INDEX_COLUMNS, ROW_COLUMN, SORTS, Browse, ViewerData, metadata_spec
from chexmask_u_tools.cli.viewer.predict import Predictor
from chexmask_u_tools.cli.viewer.render import histogram_png, overlay_png, row_image
from chexmask_u_tools.errors import CheXmaskUError, InputError

__all__ = ["MAX_API_ROWS", "MAX_PAGE_ROWS", "Workspace", "build_app", "serve"]

MAX_PAGE_ROWS = 500
"""Rows one page of the Browse table may show."""

MAX_API_ROWS = 10_000
"""Rows ``/browse`` returns at most."""

DEFAULT_MAX_UPLOAD_MB = 100
"""Default ``--max-upload-mb``: the largest file an upload may be (a 16-bit DICOM is tens of MB)."""

_SHOWN = ("source", "image_id", "frame", "node_sigma_mean", "node_sigma_max", "sigma_right_lung", "sigma_left_lung",
          "sigma_heart", "latent_sigma_mean", "dice_rca_mean", "dice_rca_max")


class Workspace:
    """The process's private folder for Gradio (``GRADIO_TEMP_DIR``) and Gradio imported in the background.

    Create it first thing: the import of Gradio (seconds) then overlaps
    opening the data.  :meth:`close` removes the folder; the folders of viewers
    that were killed (``chexmask-u-view-<pid>-*`` of a process no longer
    running) are removed when the next one starts.
    """

    PREFIX = "chexmask-u-view-"

    def __init__(self) -> None:
        self.remove_stale()
        self.folder = Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-")).resolve()
        # Before Gradio is imported: no analytics, no version check, files only in our folder.
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        os.environ["GRADIO_TEMP_DIR"] = str(self.folder)
        self._import = threading.Thread(target=importlib.import_module, args=("gradio",), daemon=True)
        self._import.start()

    @classmethod
    def remove_stale(cls) -> None:
        """Remove the folders of viewers no longer running (killed before they could remove their own)."""
        for folder in Path(tempfile.gettempdir()).glob(f"{cls.PREFIX}*-*"):
            pid = folder.name[len(cls.PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)

    def gradio(self):
        """The imported ``gradio`` module."""
        self._import.join()
        import gradio

        return gradio

    def file(self, data: bytes, name: str) -> str:
        """Write ``data`` under the folder (named by its hash) and return the path Gradio will serve."""
        digest = hashlib.sha256(data).hexdigest()[:24]
        target = self.folder / "views" / digest / name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data, fsync=False)
        return str(target)

    def new_folder(self, kind: str) -> Path:
        folder = self.folder / kind / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _said(message: str) -> str:
    """A package error as Markdown for the page (escaped: messages quote what the user typed)."""
    return f"⛔ {html.escape(message)}"


def _raising(gr, fn: Callable) -> Callable:
    """``fn`` for an API endpoint: a package error becomes ``gr.Error`` with the package's message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CheXmaskUError as error:
            raise gr.Error(str(error), duration=None, title="chexmask-u", print_exception=False) from None

    return wrapper


def _numeric_columns(data: ViewerData) -> list[str]:
    return [
        name
        for name, dtype in data.index.schema.items()
        if dtype.is_numeric() and name not in (ROW_COLUMN, "height", "width")
    ]


def _histogram_column(browse: Browse, choice: str, numeric: list[str]) -> str:
    if choice and choice != "auto":
        return choice
    present = set(numeric)
    for rule in browse.rules:
        column = rule.reads(present)
        if column in present:
            return column
    return "node_sigma_mean"


def _display(rows: pl.DataFrame) -> Any:
    shown = [c for c in _SHOWN if c in rows.columns] + [c for c in rows.columns if c not in INDEX_COLUMNS and c != ROW_COLUMN]
    rounded = [pl.col(c).cast(pl.Float64).round(3) if rows.schema[c].is_float() else pl.col(c) for c in shown]
    return rows.select(rounded).to_pandas()


def _values_markdown(row: dict[str, Any], note: str | None) -> str:
    """The row's values as a Markdown table (empty fields counted, not listed: most metadata is per source)."""
    lines = ["| value | |", "|---|---|"]
    empty = 0
    for name, value in row.items():
        if name in ("landmarks", "landmarks_std", ROW_COLUMN):
            continue
        if value is None:
            empty += 1
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"| {html.escape(name)} | {html.escape(shown)} |")
    if empty:
        lines.append(f"\n{empty} empty fields not shown")
    if note:
        lines.append(f"\n{html.escape(note)}")
    return "\n".join(lines)


def build_app(data: ViewerData, predictor: Predictor, workspace: Workspace, *, export_dir: str | os.PathLike = "."):
    """The ``gr.Blocks`` of the viewer over ``data`` (see the module docstring for its endpoints)."""
    gr = workspace.gradio()
    export_dir = Path(export_dir).resolve()
    numeric = _numeric_columns(data)

    def looked_at(browse: Browse) -> pl.DataFrame:
        return data.index if not browse.sources else data.index.filter(pl.col("source").is_in(list(browse.sources)))

    def overlay_of(source: str, image_id: str, soft: bool = False) -> tuple[str, dict[str, Any], str | None]:
        row = data.row(source, image_id)
        image, note = row_image(row, data.images)
        png = overlay_png(row, image=image, soft=soft, note=note)
        return workspace.file(png, "overlay.png"), row, note

    # ------------------------------------------------------------------ page handlers
    def refresh(rules: str, sources: list[str] | None, sort: str, seed: float | None, statistic: str, page: float | None, size: float | None):
        try:
            browse = data.browse(rules, sources)
            rows = browse.page(sort, seed=int(seed or 0), page=int(page or 1), size=min(MAX_PAGE_ROWS, int(size or 25)))
            column = _histogram_column(browse, statistic, numeric)
            total = looked_at(browse)
            picture = histogram_png(column, total[column].to_numpy(), browse.kept[column].to_numpy(), browse.thresholds(column))
        except CheXmaskUError as error:
            return _said(str(error)), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        share = 100.0 * browse.kept.height / browse.total if browse.total else 0.0
        status = f"**kept {browse.kept.height:,} of {browse.total:,} rows** ({share:.1f}%)"
        if not browse.rules:
            status += ": no rule yet; type rules, one per line"
        return (
            status,
            workspace.file(picture, "histogram.png"),
            _display(rows),
            cli_command(data, browse),
            python_snippet(data, browse, sort, int(seed or 0)),
        )

    def picked(event):
        values = event.row_value
        return str(values[0]), str(values[1])

    picked.__annotations__["event"] = gr.SelectData  # how Gradio knows to pass the selection

    def show_row(source: str, image_id: str, soft: bool):
        if not source or not image_id:
            return gr.skip(), "select a row of the table, or type a source and an image id"
        try:
            path, row, note = overlay_of(source, image_id, soft)
        except CheXmaskUError as error:
            return None, _said(str(error))
        return path, _values_markdown(row, note)

    def export(rules: str, sources: list[str] | None, path: str, overwrite: bool):
        try:
            browse = data.browse(rules, sources)
            target = export_target(path, export_dir, overwrite=overwrite)
            written = export_rows(data, browse, target)
        except CheXmaskUError as error:
            return _said(str(error))
        return f"wrote {written:,} rows to `{html.escape(str(target))}`"

    def predict_files(files: list[str] | None):
        try:
            prediction = predictor.predict(files or [])
        except CheXmaskUError as error:
            return _said(str(error)), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        folder = workspace.new_folder("predictions")
        parquet, csv = prediction.write(folder)
        gallery = [(workspace.file(png, "overlay.png"), image_id) for image_id, png in prediction.overlays]
        summary = prediction.rows.select("image_id", "frame", "height", "width", "node_sigma_mean", "latent_sigma_mean")
        failed = "".join(f"\n\n⛔ {html.escape(i)}: {html.escape(r)}" for i, r in prediction.failed)
        return predictor.banner() + failed, gallery, summary.to_pandas(), [str(parquet), str(csv)], prediction.provenance

    # ------------------------------------------------------------------ API endpoints
    def browse_api(rules: str, limit: int = 50) -> dict:
        """The kept count, the total, and the first `limit` kept rows (table order) as dicts."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_API_ROWS:
            raise InputError(f"limit must be a whole number from 0 to {MAX_API_ROWS}, got {limit!r}")
        browse = data.browse(rules)
        rows = browse.kept.head(limit).drop(ROW_COLUMN)
        return {"kept": browse.kept.height, "total": browse.total, "rows": rows.to_dicts()}

    def show_api(source: str, image_id: str) -> str:
        return overlay_of(source, image_id)[0]

    def predict_api(image: str | None):
        prediction = predictor.predict([image] if image else [])
        parquet, _ = prediction.write(workspace.new_folder("predictions"))
        return workspace.file(prediction.overlays[0][1], "overlay.png"), str(parquet)

    # ------------------------------------------------------------------ the page
    from chexmask_u_tools.images.read import IMAGE_SUFFIXES

    rows_total = f"{data.index.height:,} rows"
    title = f"# chexmask-u view\n`{html.escape(data.spec)}`: {rows_total} of {', '.join(data.sources)}"
    if data.metadata:
        title += f"; metadata joined from {', '.join(html.escape(m) for m in data.metadata)}"
    roots = sorted(data.images.roots) if data.images is not None else []
    title += f"; images of {', '.join(roots)}" if roots else "; no image roots (blank canvases)"
    with gr.Blocks(title="chexmask-u view", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(title)
        with gr.Tab("Browse"):
            with gr.Row():
                rules = gr.Textbox(
                    label="Rules, one per line (the language of --rule and apply_rules)",
                    lines=3,
                    placeholder="image.mean<6\norgan.heart.mean<=10\ndice.mean>=0.7;missing=keep\nview in PA,AP",
                    elem_id="rules",
                )
                with gr.Column():
                    sources = gr.Dropdown(choices=data.sources, multiselect=True, label="Sources (none: all)")
                    sort = gr.Radio(choices=[(label, key) for key, label in SORTS.items()], value="sigma", label="Order")
                    seed = gr.Number(value=0, precision=0, label="Seed of the random order")
            with gr.Row():
                apply = gr.Button("Apply rules", variant="primary", elem_id="apply")
                statistic = gr.Dropdown(choices=["auto", *numeric], value="auto", label="Histogram of")
                page = gr.Number(value=1, precision=0, minimum=1, label="Page")
                size = gr.Number(value=25, precision=0, minimum=1, maximum=MAX_PAGE_ROWS, label="Rows per page")
            status = gr.Markdown(elem_id="status")
            histogram = gr.Image(label="Histogram (threshold dashed)", type="filepath", format="png", interactive=False, height=280)
            table = gr.Dataframe(label="Rows: click one to see it", interactive=False, elem_id="rows", max_height=420)
            with gr.Row():
                with gr.Column(scale=3):
                    overlay = gr.Image(label="Overlay", type="filepath", format="png", interactive=False, elem_id="overlay")
                with gr.Column(scale=2):
                    picked_source = gr.Textbox(label="Source", elem_id="picked-source")
                    picked_id = gr.Textbox(label="Image id", elem_id="picked-id")
                    soft = gr.Checkbox(label="soft masks (per-pixel probability) instead of σ-coloured nodes")
                    show = gr.Button("Show")
                    values = gr.Markdown(elem_id="values")
            with gr.Accordion("Carry it out", open=True):
                command = gr.Code(language="shell", label="The same rows from the command line", interactive=False)
                snippet = gr.Code(language="python", label="The same rows in Python", interactive=False)
                with gr.Row():
                    out_path = gr.Textbox(label=f"Export the kept rows to (.parquet or .csv, inside {export_dir})", value="kept.parquet")
                    overwrite = gr.Checkbox(label="overwrite")
                    export_button = gr.Button("Export")
                exported = gr.Markdown()
        with gr.Tab("Predict"):
            banner = gr.Markdown(predictor.banner(), elem_id="banner")
            uploads = gr.File(file_count="multiple", file_types=list(IMAGE_SUFFIXES), label="Chest X-ray images", type="filepath")
            run = gr.Button("Predict", variant="primary")
            gallery = gr.Gallery(label="Predicted contours (nodes coloured by σ), original frame", columns=2)
            summary = gr.Dataframe(label="Rows", interactive=False)
            downloads = gr.File(label="Rows: parquet (canonical, provenance in its metadata) and CSV (released layout)", file_count="multiple")
            provenance = gr.JSON(label="Provenance")
        with gr.Row(visible=False):
            api_source, api_id = gr.Textbox(), gr.Textbox()
            api_overlay = gr.Image(type="filepath", format="png")
            api_image = gr.File(file_count="single", type="filepath")
            api_rows = gr.File()
            api_show, api_predict = gr.Button(), gr.Button()

        private = {"api_visibility": "private"}
        controls = [rules, sources, sort, seed, statistic, page, size]
        browse_outputs = [status, histogram, table, command, snippet]
        apply.click(refresh, controls, browse_outputs, **private)
        rules.submit(refresh, controls, browse_outputs, **private)
        for control in (sources, sort, seed, statistic, page, size):
            control.change(refresh, controls, browse_outputs, **private)
        demo.load(refresh, controls, browse_outputs, **private)
        demo.load(predictor.banner, None, banner, **private)
        table.select(picked, None, [picked_source, picked_id], **private).then(
            show_row, [picked_source, picked_id, soft], [overlay, values], **private
        )
        show.click(show_row, [picked_source, picked_id, soft], [overlay, values], **private)
        soft.change(show_row, [picked_source, picked_id, soft], [overlay, values], **private)
        export_button.click(export, [rules, sources, out_path, overwrite], exported, **private)
        run.click(predict_files, uploads, [banner, gallery, summary, downloads, provenance], concurrency_id="model", concurrency_limit=1, **private)

        gr.api(_raising(gr, browse_api), api_name="browse")
        api_show.click(_raising(gr, show_api), [api_source, api_id], api_overlay, api_name="show")
        api_predict.click(
            _raising(gr, predict_api), api_image, [api_overlay, api_rows], api_name="predict", concurrency_id="model", concurrency_limit=1
        )
    return demo


def _blocked_paths(data: ViewerData, export_dir: Path, workspace: Workspace) -> list[str]:
    """Everything the viewer reads or writes, which Gradio must never serve as a file (its own folder excepted)."""
    paths = [Path.cwd(), export_dir]
    if data.spec != "sample" and Path(data.spec).exists():
        paths.append(Path(data.spec))
    if data.images is not None:
        paths += [root for roots in data.images.roots.values() for root in roots] + list(data.images.default_roots)
    paths += [Path(metadata_spec(spec)[1]) for spec in data.metadata]
    resolved = [p.resolve() for p in paths]
    # A blocked folder holding our own folder would block the overlays too (a working directory of /tmp).
    return sorted({str(p) for p in resolved if p != workspace.folder and p not in workspace.folder.parents})


class _RefuseRemoteFiles:
    """ASGI middleware: ``/file=<URL>`` requests, which Gradio would fetch and relay, get 403."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") == "http" and "/file=" in scope.get("path", ""):
            target = scope["path"].split("/file=", 1)[1]
            if "://" in target or target.startswith("//"):
                from starlette.responses import PlainTextResponse

                await PlainTextResponse("the viewer serves no remote files", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def serve(
    data: ViewerData,
    predictor: Predictor,
    workspace: Workspace,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    export_dir: str | os.PathLike = ".",
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
    block: bool = True,
    say: Callable[[str], None] = print,
):
    """Build the app, serve it on ``host:port`` and (``block=True``) run until interrupted.

    Returns the launched ``gr.Blocks`` (when ``block=False``: call ``close()``
    on it, then ``workspace.close()``).
    """
    if max_upload_mb < 1:
        raise InputError(f"--max-upload-mb must be at least 1, got {max_upload_mb}")
    gr = workspace.gradio()
    from starlette.middleware import Middleware

    export_dir = Path(export_dir).resolve()
    if not export_dir.is_dir():
        raise InputError(f"--export-dir {export_dir} is not a folder")
    demo = build_app(data, predictor, workspace, export_dir=export_dir)
    demo.queue(default_concurrency_limit=2)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            inbrowser=False,
            prevent_thread_lock=True,
            quiet=True,
            show_error=False,
            allowed_paths=[],
            blocked_paths=_blocked_paths(data, export_dir, workspace),
            max_file_size=f"{int(max_upload_mb)}mb",
            ssr_mode=False,
            mcp_server=False,
            pwa=False,
            enable_monitoring=False,
            footer_links=["api"],
            theme=theme,
            app_kwargs={"middleware": [Middleware(_RefuseRemoteFiles)]},
        )
    except OSError as error:
        raise InputError(f"cannot serve on {host}:{port} ({error}); pass another --port") from error
    predictor.start()
    if share or host not in ("127.0.0.1", "localhost", "::1"):
        say(
            f"chexmask-u view: warning: served beyond this machine ({'a public share link' if share else host}): anyone who "
            f"reaches it can read {data.spec}, its images as overlays, and write exports inside {export_dir}"
        )
    say(f"chexmask-u view: {data.spec} ({data.index.height:,} rows) at {demo.local_url}" + (f" and {demo.share_url}" if share else ""))
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
            workspace.close()
    return demo
