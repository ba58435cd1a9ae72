"""load_pretrained against a Hub that is offline, unreachable, failing or missing the files.

The real huggingface_hub client runs against a closed local port (connection
refused) and a minimal local HTTP server (503 / 403 / 404 EntryNotFound
answers), pointed at through ``HF_ENDPOINT``.  Each case is its own
:class:`WeightsError` message, chained to the client's exception.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from chexmask_u_tools.errors import WeightsError  # noqa: E402
from chexmask_u_tools.model import HybridGNet  # noqa: E402
from chexmask_u_tools.model.pretrained import load_pretrained  # noqa: E402

WAYS_FORWARD = ("--weights DIR", "HF_HUB_OFFLINE=1", "HF_ENDPOINT")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _point_client_at(monkeypatch, endpoint: str) -> None:
    """What HF_ENDPOINT does at import time, redone for this process (the client reads it once)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


class _Answer(BaseHTTPRequestHandler):
    status = 503
    error_code: str | None = None
    requests: list[str] = []

    def _reply(self) -> None:
        type(self).requests.append(f"{self.command} {self.path}")
        self.send_response(self.status)
        if self.error_code:
            self.send_header("X-Error-Code", self.error_code)
            self.send_header("X-Error-Message", f"{self.error_code} (test server)")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET = _reply

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture()
def answering_server(monkeypatch) -> Iterator[type[_Answer]]:
    handler = type("Handler", (_Answer,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _point_client_at(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def test_offline_mode_and_not_cached(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError, match="offline mode is on") as info:
        load_pretrained(cache_dir=tmp_path / "empty-cache")
    message = str(info.value)
    assert all(way in message for way in WAYS_FORWARD) and str(tmp_path / "empty-cache") in message
    assert "hf download mcosarinsky/CheXmask-U" in message
    assert info.value.__cause__ is not None  # the client's cache miss


def test_no_network_fails_fast_with_one_message(tmp_path, monkeypatch, caplog):
    _point_client_at(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="cannot reach the Hugging Face Hub") as info:
        load_pretrained(cache_dir=tmp_path / "empty-cache")
    elapsed = time.perf_counter() - start
    # The bound: a refused connection is known at once; without the probe the client's
    # retries took 8-28 s.  5 s leaves room for a loaded machine.
    assert elapsed < 5.0, elapsed
    message = str(info.value)
    assert all(way in message for way in WAYS_FORWARD)
    assert "Connect" in type(info.value.__cause__).__name__  # chained: the transport's refusal
    assert not [r for r in caplog.records if "retry" in r.getMessage().lower()]


def test_server_error_is_not_called_offline(tmp_path, answering_server):
    answering_server.status = 503
    with pytest.raises(WeightsError, match="answered HTTP 503") as info:
        load_pretrained(cache_dir=tmp_path / "empty-cache")
    message = str(info.value)
    assert "offline" not in message.split("Ways forward")[0] and all(way in message for way in WAYS_FORWARD)
    assert getattr(info.value.__cause__.response, "status_code", None) == 503
    assert len(answering_server.requests) == 1, answering_server.requests  # one probe, no retries


def test_missing_file_is_its_own_message(tmp_path, answering_server):
    answering_server.status, answering_server.error_code = 404, "EntryNotFound"
    with pytest.raises(WeightsError, match=r"has none of pytorch_model.bin, model.safetensors \(HTTP 404") as info:
        load_pretrained("owner/model", "folder", cache_dir=tmp_path / "cache")
    assert "EntryNotFound" in type(info.value.__cause__).__name__
    assert any("/owner/model/resolve/main/folder/model.safetensors" in r for r in answering_server.requests)


def test_forbidden_is_final_at_once(tmp_path, answering_server):
    answering_server.status = 403
    with pytest.raises(WeightsError, match=r"refused model repo .*HTTP 403.*token") as info:
        load_pretrained(cache_dir=tmp_path / "cache")
    assert _status_of(info.value.__cause__) == 403 and len(answering_server.requests) == 1


def _status_of(error: BaseException) -> int | None:
    return getattr(getattr(error, "response", None), "status_code", None)


def _fill_cache(cache: Path) -> HybridGNet:
    torch.manual_seed(0)
    model = HybridGNet(input_size=64).eval()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--mcosarinsky--CheXmask-U"
    folder = repo / "snapshots" / commit / "v1_skip"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"inputsize": 64}))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return model


@pytest.mark.parametrize("outage", ["refused", "503"])
def test_unreachable_hub_falls_back_to_a_filled_cache(tmp_path, monkeypatch, outage, request):
    if outage == "503":
        request.getfixturevalue("answering_server").status = 503
    else:
        _point_client_at(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    model = _fill_cache(tmp_path / "cache")
    loaded = load_pretrained(cache_dir=tmp_path / "cache")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True))


@pytest.mark.slow
def test_cli_predict_with_the_hub_unreachable(tmp_path):
    from PIL import Image

    Image.new("L", (64, 64), 90).save(tmp_path / "img.png")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HUB_CACHE=str(tmp_path / "empty-cache"))
    command = [sys.executable, "-m", "chexmask_u_tools", "predict", str(tmp_path / "img.png"), "--out", str(tmp_path / "p.parquet")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one message, no retry noise, no traceback
    assert lines[0].startswith("chexmask-u predict: error: cannot reach the Hugging Face Hub")
    assert all(way in lines[0] for way in WAYS_FORWARD)
    assert not (tmp_path / "p.parquet").exists()
