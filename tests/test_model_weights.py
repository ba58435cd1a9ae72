"""Loading HybridGNet weights: file formats, key prefixes, Hub layout and cache, strict checking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from chexmask_u_tools.errors import WeightsError  # noqa: E402
from chexmask_u_tools.model import HybridGNet  # noqa: E402
from chexmask_u_tools.model.pretrained import load_pretrained, load_weights, read_state_dict  # noqa: E402

SIZE = 64  # small input: same key set as the published model, smaller fc heads


@pytest.fixture(scope="module")
def source_model() -> HybridGNet:
    torch.manual_seed(0)
    return HybridGNet(input_size=SIZE).eval()


def _write(folder: Path, model: HybridGNet, fmt: str, prefix: bool, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state = {("model." if prefix else "") + k: v.clone() for k, v in model.state_dict().items()}
    (folder / "config.json").write_text(json.dumps({"latents": 64, "inputsize": SIZE, "K": 6, "extra_key": 1}))
    if fmt == "safetensors":
        from safetensors.torch import save_file

        file = folder / (name or "model.safetensors")
        save_file(state, str(file))
    else:
        file = folder / (name or "pytorch_model.bin")
        torch.save(state, file)
    return file


def _same(a: HybridGNet, b: HybridGNet) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
@pytest.mark.parametrize("prefix", [False, True])
def test_round_trip_hub_layout_directory(tmp_path, source_model, fmt, prefix):
    _write(tmp_path / "v1_skip", source_model, fmt, prefix)
    loaded = load_pretrained(path=tmp_path)  # repo root; the subfolder is found
    assert loaded.input_size == SIZE and not loaded.training
    _same(loaded, source_model)
    x = torch.rand(1, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source_model(x), rtol=0, atol=0)


def test_round_trip_single_file_and_roi_override(tmp_path, source_model):
    file = _write(tmp_path, source_model, "bin", True, name="weights.pt")
    loaded = load_pretrained(path=file, roi_align="nominal")
    assert loaded.roi_align == "nominal"
    _same(loaded, source_model)
    assert load_weights(str(file)).roi_align == "torchvision"


def test_config_is_honoured(tmp_path):
    model = HybridGNet(input_size=SIZE, skip_connections=False)
    folder = tmp_path / "noskip"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"inputsize": SIZE, "skip_connections": False}))
    loaded = load_pretrained(path=folder)
    assert not loaded.skip_connections
    _same(loaded, model)
    (folder / "config.json").write_text(json.dumps({"inputsize": SIZE}))  # says skip: keys no longer fit
    with pytest.raises(WeightsError, match="missing keys"):
        load_pretrained(path=folder)


def test_strict_loading_lists_bad_keys(tmp_path, source_model):
    state = {k: v.clone() for k, v in source_model.state_dict().items()}
    del state["dec_lin.bias"]
    state["encoder.extra.weight"] = torch.zeros(3)
    state["graphConv_up3.bias"] = torch.zeros(5)
    (tmp_path / "config.json").write_text(json.dumps({"inputsize": SIZE}))
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError) as info:
        load_pretrained(path=tmp_path)
    message = str(info.value)
    assert "missing keys (1): dec_lin.bias" in message
    assert "unexpected keys (1): encoder.extra.weight" in message
    assert "graphConv_up3.bias: (5,) vs (32,)" in message


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        ({"inputsize": 100000}, r"'inputsize' = 100000 is outside the accepted range \[32, 4096\]"),
        ({"inputsize": 1000}, r"'inputsize' = 1000 is not a multiple of 32"),
        ({"latents": 10**9}, r"'latents' = 1000000000 is outside the accepted range \[1, 1024\]"),
        ({"K": 0}, r"'K' = 0 is outside the accepted range \[1, 32\]"),
        ({"filters": [2, 32, 32, 10**7, 16, 16, 16]}, r"'filters' = 10000000 is outside the accepted range \[1, 1024\]"),
        ({"filters": [2, 32]}, r"'filters' must be a list of 7 integers"),
        ({"inputsize": "1024"}, r"'inputsize' must be an integer in the accepted range \[32, 4096\]"),
        ({"latents": 64.5}, r"'latents' must be an integer"),
        ({"skip_connections": "yes"}, r"'skip_connections' must be true or false"),
    ],
)
def test_absurd_config_values_are_refused_before_allocating(tmp_path, config, pattern):
    # inputsize 100000 used to try to allocate 320 GB for the encoder heads and leak RuntimeError.
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "pytorch_model.bin").write_bytes(b"never read: the config is checked first")
    with pytest.raises(WeightsError, match=pattern) as info:
        load_pretrained(path=tmp_path)
    assert str(tmp_path / "config.json") in str(info.value)


def test_rejects_non_tensor_pickles_and_garbage(tmp_path):
    import datetime

    # weights_only=True refuses any object outside its tensor allow-list.
    torch.save({"a": datetime.date(2020, 1, 1)}, tmp_path / "evil.bin")
    with pytest.raises(WeightsError):
        read_state_dict(tmp_path / "evil.bin")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(WeightsError):
        read_state_dict(tmp_path / "junk.safetensors")
    torch.save([torch.zeros(1)], tmp_path / "list.bin")
    with pytest.raises(WeightsError, match="plain state_dict"):
        read_state_dict(tmp_path / "list.bin")
    with pytest.raises(WeightsError):
        load_pretrained(path=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no weights file"):
        load_pretrained(path=tmp_path / "empty")


def test_hub_cache_is_used_offline(tmp_path, source_model):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--mcosarinsky--CheXmask-U"
    _write(repo / "snapshots" / commit / "v1_skip", source_model, "bin", True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    loaded = load_pretrained(cache_dir=tmp_path / "cache", local_files_only=True)
    _same(loaded, source_model)
    via_spec = load_weights("mcosarinsky/CheXmask-U", cache_dir=tmp_path / "cache", local_files_only=True)
    _same(via_spec, source_model)


def test_offline_and_not_cached_names_the_cache(tmp_path):
    with pytest.raises(WeightsError, match="offline mode is on") as info:
        load_pretrained(cache_dir=tmp_path / "empty-cache", local_files_only=True)
    message = str(info.value)
    assert str(tmp_path / "empty-cache") in message and "hf download mcosarinsky/CheXmask-U" in message


def test_bad_weight_specs(tmp_path):
    with pytest.raises(WeightsError):
        load_weights("not-a-path-nor-id")
    with pytest.raises(WeightsError):
        load_weights("owner/../etc")


@pytest.mark.parametrize("content", ["text", "pickle-with-object", "random-bytes"])
def test_unreadable_weights_name_the_accepted_formats(tmp_path, content):
    import datetime

    file = tmp_path / "fake.bin"
    if content == "text":
        file.write_text("hello, these are not weights")
    elif content == "pickle-with-object":
        torch.save({"a": datetime.date(2020, 1, 1)}, file)
    else:
        file.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(WeightsError) as info:
        load_weights(str(file))
    message = str(info.value)
    assert "Accepted weights: a .safetensors file, or a .bin/.pt/.pth" in message and "weights_only=True" in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "\n" not in message
    if content == "pickle-with-object":
        assert "datetime.date" in message  # the reason survives, torch's advice does not


def test_random_weights_spec():
    from chexmask_u_tools.model.pretrained import random_model

    before = torch.random.get_rng_state()
    model = load_weights("random", random_seed=3, roi_align="nominal")
    assert torch.equal(before, torch.random.get_rng_state())  # the caller's random state is untouched
    assert model.roi_align == "nominal" and not model.training
    assert torch.equal(model.dec_lin.weight, random_model(3).dec_lin.weight)
    assert not torch.equal(model.dec_lin.weight, random_model(4).dec_lin.weight)
