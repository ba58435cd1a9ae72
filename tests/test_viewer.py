"""``chexmask-u view`` (issue 23): the app launched on a free local port, driven with gradio_client and a real Chromium.

One app per module (the ``site`` fixture): ``python -m chexmask_u_tools view CACHE`` over a small cache built
here, with synthetic images for every row, NIH metadata for the ChestX-ray8 rows, random weights in float64.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
from PIL import Image
from polars.testing import assert_frame_equal

import chexmask_u_tools as cxu
from chexmask_u_tools.cli import main
from chexmask_u_tools.cli.view import VIEWER_EXTRA, image_roots
from chexmask_u_tools.cli.viewer.carry import cli_command, export_rows, export_target, python_snippet
from chexmask_u_tools.cli.viewer.data import ViewerData
from chexmask_u_tools.cli.viewer.render import overlay_png, overlay_size
from chexmask_u_tools.errors import CheXmaskUError, InputError
from chexmask_u_tools.images.resolver import check_image_id
from chexmask_u_tools.testing import write_demo_images

gradio_client = pytest.importorskip("gradio_client", reason="the viewer tests need the [viewer] extra (gradio)")
pytest.importorskip("gradio", reason="the viewer tests need the [viewer] extra (gradio)")

SEED, SAMPLES, MAX_UPLOAD_MB = 0, 4, 2
NIH_HEADER = [
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Sex", "View Position",
    "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]", "",
]  # fmt: skip
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@dataclass
class Site:
    url: str
    cache: Path
    table: pl.DataFrame
    nih: Path
    images: Path
    work: Path
    log: Path


def _mirror(root: Path) -> Path:
    """Ten sample rows per source; Padchest without std (the parent CheXmask layout); six VinDr rows in a 900 x 700 original frame."""
    sample = cxu.load_sample()
    for source in cxu.SOURCES:
        rows = sample.filter(pl.col("source") == source).head(10)
        variant = "chexmask" if source == "Padchest" else "chexmask-u"
        cxu.write_released(rows, _made(root / "Preprocessed" / f"{source}.csv"), variant)
    vindr = sample.filter(pl.col("source") == "VinDr-CXR").slice(10, 6)
    original = cxu.convert_table_frame(vindr, "original", original_height=900, original_width=700)
    cxu.write_released(original, _made(root / "OriginalResolution" / "VinDr-CXR.csv"))
    return root


def _made(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _nih_metadata(table: pl.DataFrame, folder: Path) -> Path:
    ids = table.filter(pl.col("source") == "ChestX-ray8")["image_id"].to_list()
    lines = [",".join(NIH_HEADER)]
    for k, image_id in enumerate(ids):
        view = "PA" if k % 3 else "AP"
        lines.append(f"{image_id},No Finding,0,{k + 1},{40 + k},{'MF'[k % 2]},{view},1024,1024,0.143,0.143,")
    folder.mkdir(parents=True)
    (folder / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    work = tmp_path_factory.mktemp("viewer")
    cache = cxu.build_cache(_mirror(work / "mirror"), work / "cache", n_shards=3, progress=False)
    table = cxu.open_cache(cache).collect()
    roots = write_demo_images(table, work / "images")
    nih = _nih_metadata(table, work / "nih")
    (work / "exports").mkdir()
    port = _free_port()
    command = [
        sys.executable, "-m", "chexmask_u_tools", "view", str(cache), "--port", str(port),
        "--weights", "random", "--dtype", "fp64", "--samples", str(SAMPLES), "--seed", str(SEED),
        "--export-dir", str(work / "exports"), "--metadata", f"ChestX-ray8={nih}", "--max-upload-mb", str(MAX_UPLOAD_MB),
        *[f"--images={source}={root}" for source, root in roots.items()],
    ]  # fmt: skip
    log = work / "server.log"
    url = f"http://127.0.0.1:{port}/"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=work)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"the viewer exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the viewer did not answer within 120 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield Site(url, Path(cache), table, nih, work / "images", work, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # Terminated like an interrupted server: it removed its private folder.
    assert not list(Path(tempfile.gettempdir()).glob(f"chexmask-u-view-{process.pid}-*")), log.read_text()


@pytest.fixture(scope="module")
def client(site, tmp_path_factory):
    return gradio_client.Client(site.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture(scope="module")
def data(site) -> ViewerData:
    return ViewerData.open(site.cache, metadata=[f"ChestX-ray8={site.nih}"])


def _with_metadata(site: Site) -> pl.DataFrame:
    return cxu.attach_metadata(site.table, [cxu.read_metadata("ChestX-ray8", site.nih)])


# --------------------------------------------------------------------------- /browse


@pytest.mark.parametrize(
    "rules",
    [
        "",
        "image.mean<8;missing=keep",
        "dice.mean>=0.7\norgan.heart.mean<=10;missing=drop",
        "image.q0.9<=12;missing=drop",  # per-node data: read from the cache part by part
        "node.heart.frac0.1<=9:drop_organ;missing=keep\nsource in CheXpert,Padchest",
        "view in PA;missing=drop\nage>=42;missing=keep",  # metadata joined with --metadata
    ],
)
def test_browse_counts_equal_apply_rules(site, client, rules):
    answer = client.predict(rules, 5, api_name="/browse")
    expected = cxu.apply_rules(_with_metadata(site), [line for line in rules.splitlines() if line])
    assert (answer["kept"], answer["total"]) == (expected.height, site.table.height)
    assert [row["image_id"] for row in answer["rows"]] == expected["image_id"].head(5).to_list()
    assert answer["rows"] == [] or set(answer["rows"][0]) >= {"source", "image_id", "node_sigma_mean", "dice_rca_mean", "view"}


def test_browse_rows_carry_the_index_values(site, client):
    answer = client.predict("source in ChestX-ray8", 3, api_name="/browse")
    expected = site.table.filter(pl.col("source") == "ChestX-ray8").head(3)
    for row, (mean, dice) in zip(answer["rows"], expected.select("node_sigma_mean", "dice_rca_mean").rows()):
        assert row["node_sigma_mean"] == pytest.approx(mean) and row["dice_rca_mean"] == pytest.approx(dice)


# --------------------------------------------------------------------------- /show


def _png(path: str) -> Image.Image:
    image = Image.open(path)
    assert image.format == "PNG"
    return image


@pytest.mark.parametrize("source, frame", [("CheXpert", "preprocessed"), ("Padchest", "preprocessed"), ("VinDr-CXR", "original")])
def test_show_returns_a_png_of_the_frame_size(site, client, source, frame):
    row = site.table.filter((pl.col("source") == source) & (pl.col("frame") == frame)).row(0, named=True)
    image = _png(client.predict(source, row["image_id"], api_name="/show"))
    expected = (900, 700) if frame == "original" else (1024, 1024)
    assert (image.height, image.width) == expected == overlay_size(frame, row["height"], row["width"])


def test_show_draws_the_image_from_its_root(site, client):
    row = site.table.filter(pl.col("source") == "ChestX-ray8").row(0, named=True)
    served = np.asarray(_png(client.predict("ChestX-ray8", row["image_id"], api_name="/show")).convert("L"), dtype=float)
    blank = np.asarray(Image.open(io.BytesIO(overlay_png({**row, "landmarks": np.asarray(row["landmarks"])}))).convert("L"), dtype=float)
    # The synthetic X-ray (dark lungs, bright heart) under the contours, not the flat blank canvas.
    assert served.shape == blank.shape and served[200:800, 100:700].std() > 2 * blank[200:800, 100:700].std()


# --------------------------------------------------------------------------- errors


def _message(call) -> str:
    with pytest.raises(gradio_client.exceptions.AppError) as caught:
        call()
    return str(caught.value)


def test_bad_rules_and_hostile_ids_come_back_as_the_package_errors(site, client):
    for rules in ("image.mean<<6", "organ.hart.mean<=9", "view in XX", "image.mean<8"):
        with pytest.raises(CheXmaskUError) as expected:
            cxu.apply_rules(_with_metadata(site), rules.splitlines())
        assert _message(lambda: client.predict(rules, 5, api_name="/browse")) == str(expected.value)
    for hostile in ("../../etc/passwd", "/etc/passwd", "a\x00b", "..\\..\\boot.ini"):
        with pytest.raises(InputError) as expected:
            check_image_id(hostile)
        assert _message(lambda: client.predict("CheXpert", hostile, api_name="/show")) == str(expected.value)
    assert "no CheXpert row has image id 'nope.jpg'" in _message(lambda: client.predict("CheXpert", "nope.jpg", api_name="/show"))
    assert "source 'Nowhere' is not in" in _message(lambda: client.predict("Nowhere", "x.png", api_name="/show"))
    assert "limit must be a whole number" in _message(lambda: client.predict("", -1, api_name="/browse"))
    # ... and the server goes on serving.
    assert client.predict("image.mean<8;missing=keep", 1, api_name="/browse")["total"] == site.table.height


# --------------------------------------------------------------------------- /predict


@pytest.mark.slow
def test_predict_with_random_float64_weights_equals_predict(site, client, tmp_path):
    pytest.importorskip("torch", reason="the Predict tab needs the [torch] extra")
    import pyarrow.parquet as pq

    from chexmask_u_tools.model import random_model

    source = next(site.images.glob("ChestX-ray8/**/*.png"))
    image = shutil.copy(source, tmp_path / "my_xray.png")
    overlay, rows_file = client.predict(gradio_client.handle_file(str(image)), api_name="/predict")
    expected = cxu.predict(image, random_model(SEED).double(), dtype="fp64", n_samples=SAMPLES, seed=SEED)
    assert_frame_equal(pl.read_parquet(rows_file), expected, check_exact=True)
    provenance = pq.read_schema(rows_file).metadata[b"chexmask_u.provenance"].decode()
    assert '"weights": "random"' in provenance and '"dtype": "fp64"' in provenance and '"samples": "' in provenance
    height, width = Image.open(image).size[::-1]
    assert _png(overlay).size == (width, height)
    hostile = tmp_path / "list.txt"
    hostile.write_text(f"{source}\n")  # predict would read a text file as a list of paths
    assert "is not an image file" in _message(lambda: client.predict(gradio_client.handle_file(str(hostile)), api_name="/predict"))


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels and holds no image data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def test_uploads_are_bounded(site, client, tmp_path):
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header(12000, 12000))  # 1.44e8 pixels > MAX_PIXELS: refused from the header, before decoding
    message = _message(lambda: client.predict(gradio_client.handle_file(str(huge)), api_name="/predict"))
    assert "huge.png: image size 12000x12000" in message and "outside the accepted range" in message
    assert "chexmask-u-view-" not in message  # the server's own folders are not told
    heavy = tmp_path / "heavy.png"
    heavy.write_bytes(_png_header(64, 64) + bytes(MAX_UPLOAD_MB * 2**20 + 1))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client reads the server's limit
        client.predict(gradio_client.handle_file(str(heavy)), api_name="/predict")
    answer = httpx.post(site.url + "gradio_api/upload", files={"files": ("heavy.png", heavy.read_bytes(), "image/png")})
    assert answer.status_code == 413  # ... and the server refuses it anyway


def test_a_mirror_is_viewed_through_its_cache(site, tmp_path):
    said: list[str] = []
    first = ViewerData.open(site.work / "mirror", cache_dir=tmp_path, say=said.append)
    again = ViewerData.open(site.work / "mirror", cache_dir=tmp_path, say=said.append)
    assert first.index.height == again.index.height == site.table.height
    assert len(first.parts) > 1 and all(start >= 0 for start, _ in again.parts)  # shards of a cache, not the CSVs
    assert_frame_equal(first.index.drop("viewer_row"), site.table.select(first.index.drop("viewer_row").columns))


# --------------------------------------------------------------------------- what the server serves


def test_files_outside_the_roots_get_nothing(site, client):
    secret = site.work / "secret.txt"
    secret.write_text("not for the web")
    image = next(site.images.glob("CheXpert/**/*.jpg"))
    overlay = client.predict("CheXpert", site.table.filter(pl.col("source") == "CheXpert")["image_id"][0], api_name="/show")
    assert Path(overlay).stat().st_size > 0  # the client fetched our own rendering
    for path in (secret, image, site.cache / "manifest.json", Path("/etc/passwd"), site.nih / "Data_Entry_2017_v2020.csv"):
        for route in ("gradio_api/file=", "file=", "gradio_api/file=/tmp/../"):
            answer = httpx.get(site.url + route + str(path).lstrip("/" if route.endswith("../") else ""))
            assert answer.status_code in (403, 404) and b"not for the web" not in answer.content and b"root:" not in answer.content
    for remote in ("http://example.com/x.png", "https://127.0.0.1/", "//example.com/x.png"):
        assert httpx.get(site.url + "gradio_api/file=" + remote).status_code == 403


# --------------------------------------------------------------------------- carrying a selection out


def test_export_writes_what_filter_writes_and_refuses_an_existing_file(site, data, tmp_path):
    browse = data.browse("image.mean<9;missing=drop\ndice.mean>=0.7", sources=["CheXpert", "MIMIC-CXR-JPG"])
    target = export_target("kept.parquet", tmp_path)
    assert export_rows(data, browse, target) == browse.kept.height > 0
    words = shlex.split(cli_command(ViewerData.open(site.cache), browse))
    assert words[:2] == ["chexmask-u", "filter"]
    assert main([*words[1:-1], str(tmp_path / "by_filter.parquet")]) == 0
    assert_frame_equal(pl.read_parquet(target), pl.read_parquet(tmp_path / "by_filter.parquet"))
    with pytest.raises(InputError, match="exists; tick 'overwrite'"):
        export_target("kept.parquet", tmp_path)
    assert export_target("kept.parquet", tmp_path, overwrite=True) == target
    csv = export_target("kept.csv", tmp_path)
    export_rows(data, browse, csv)
    assert_frame_equal(cxu.read_table(csv).drop("source"), pl.read_parquet(target).drop("source"), check_dtypes=False)
    for outside in ("../kept.parquet", "/etc/kept.parquet", "kept.txt", "", "no/such/folder/kept.parquet"):
        with pytest.raises(InputError):
            export_target(outside, tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_the_commands_build_the_same_rows(site, data, tmp_path):
    browse = data.browse("view in PA,AP;missing=drop\nimage.mean<9", sources=["ChestX-ray8"])
    words = shlex.split(cli_command(data, browse))
    assert words[:2] == ["chexmask-u", "export"] and "--metadata" in words
    assert main([*words[1:-1], str(tmp_path / "kept")]) == 0
    exported = pl.read_parquet(tmp_path / "kept" / "subset.parquet")
    assert exported["image_id"].to_list() == browse.kept["image_id"].to_list()
    namespace: dict = {}
    exec(python_snippet(data, browse, "random", 3), namespace)  # our own generated code, not data
    assert namespace["kept"]["image_id"].to_list() == browse.page("random", seed=3, size=10**6)["image_id"].to_list()


# --------------------------------------------------------------------------- the command


def test_missing_weights_show_the_loaders_message_and_predict_nothing(tmp_path):
    pytest.importorskip("torch", reason="the Predict tab needs the [torch] extra")
    from chexmask_u_tools.cli.viewer.predict import Predictor

    predictor = Predictor("./no/such/weights")
    with pytest.raises(CheXmaskUError, match="neither an existing path") as caught:
        predictor.model()
    assert predictor.banner().startswith("⛔ **No weights: Predict is off.**") and str(caught.value) in predictor.banner()
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(image)
    with pytest.raises(CheXmaskUError, match="neither an existing path"):
        predictor.predict([image])
    assert "RANDOM WEIGHTS" in Predictor("random").banner()


def test_the_random_weights_spec_is_the_models():
    pytest.importorskip("torch", reason="the model needs the [torch] extra")
    from chexmask_u_tools.cli.viewer.predict import RANDOM_WEIGHTS
    from chexmask_u_tools.model.pretrained import RANDOM_WEIGHTS as MODEL_RANDOM_WEIGHTS

    assert RANDOM_WEIGHTS == MODEL_RANDOM_WEIGHTS


def test_soft_masks_and_rows_without_std(site, data):
    row = data.row("CheXpert", site.table.filter(pl.col("source") == "CheXpert")["image_id"][0])
    soft = Image.open(io.BytesIO(overlay_png(row, soft=True)))
    assert soft.size == (1024, 1024)
    bare = data.row("Padchest", site.table.filter(pl.col("source") == "Padchest")["image_id"][0])
    assert bare["landmarks_std"] is None
    assert Image.open(io.BytesIO(overlay_png(bare))).size == (1024, 1024)  # contours in the organ colours
    with pytest.raises(InputError, match="no per-node std, so no soft mask"):
        overlay_png(bare, soft=True)


def test_a_killed_viewers_folder_is_removed_by_the_next(tmp_path, monkeypatch):
    from chexmask_u_tools.cli.viewer.app import Workspace

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead = tmp_path / f"{Workspace.PREFIX}{ended.stdout.strip()}-abc"
    alive = tmp_path / f"{Workspace.PREFIX}{os.getpid()}-def"
    for folder in (dead, alive):
        (folder / "views").mkdir(parents=True)
    Workspace.remove_stale()
    assert not dead.exists() and alive.exists()


def test_import_and_help_never_load_gradio():
    probe = "import sys, chexmask_u_tools as cxu, chexmask_u_tools.cli as cli; cli.build_parser(); print('gradio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_defaults_are_local_and_private(monkeypatch, capsys):
    from chexmask_u_tools.cli import build_parser

    args = build_parser().parse_args(["view", "sample"])
    assert (args.host, args.share, args.export_dir) == ("127.0.0.1", False, ".")
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "gradio" else object())
    assert main(["view", "sample"]) == 1
    assert VIEWER_EXTRA in capsys.readouterr().err
    with pytest.raises(InputError, match="expected SOURCE=DIR"):
        image_roots(["CheXpert"])


# --------------------------------------------------------------------------- the page, in a real browser


def _chromium() -> str | None:
    for name in (os.environ.get("CHEXMASK_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.slow
def test_the_page_in_chromium(site, tmp_path):
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium installed (apt-get install chromium); Playwright's own browser download is not used")
    from playwright.sync_api import sync_playwright

    shot = Path(os.environ.get("CHEXMASK_VIEWER_SCREENSHOT") or tmp_path / "viewer.png")
    elsewhere: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: None if r.url.startswith((site.url, "data:", "blob:")) else elsewhere.append(r.url))
            page.goto(site.url)
            page.wait_for_selector("#rows [role=gridcell]", timeout=60_000)
            page.fill("#rules textarea", "image.mean<8;missing=drop")
            page.click("#apply")
            kept = cxu.apply_rules(site.table, ["image.mean<8;missing=drop"]).height
            page.wait_for_function(f"document.querySelector('#status').innerText.includes('kept {kept} of')", timeout=30_000)
            first = page.locator("#rows [role=gridcell]").nth(1)
            picked_id = first.inner_text().strip()
            first.click()
            page.wait_for_function(
                "() => { const i = document.querySelector('#overlay img'); return i && i.complete && i.naturalWidth > 0; }",
                timeout=30_000,
            )
            assert page.input_value("#picked-id textarea, #picked-id input") == picked_id
            assert "node_sigma_mean" in page.inner_text("#values")
            shot.parent.mkdir(parents=True, exist_ok=True)
            # The page down to the overlay and the row's values (the export form below is left out).
            bottom = page.evaluate(
                "Math.max(...['#overlay', '#values'].map(s => document.querySelector(s).getBoundingClientRect().bottom + window.scrollY))"
            )
            page.screenshot(path=str(shot), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": bottom + 16})
        finally:
            browser.close()
    assert elsewhere == []  # nothing but the viewer itself was asked for anything
    Image.open(shot).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(shot, optimize=True)  # small enough to commit
