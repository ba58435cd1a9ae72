"""Loading the published HybridGNet weights (Hub model repo, local directory or file).

The published model lives in the Hugging Face MODEL repo ``mcosarinsky/CheXmask-U``
(same id as the dataset repo, so ``repo_type="model"`` is always passed), subfolder
``v1_skip``: ``config.json`` plus ``pytorch_model.bin`` (a plain tensor state_dict;
``model.safetensors`` is read too when present).  Pickles are only ever read with
``torch.load(weights_only=True)``, which refuses arbitrary objects.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from chexmask_u_tools.errors import HubError, WeightsError
from chexmask_u_tools.model.hybridgnet import DEFAULT_CONFIG, HybridGNet

DEFAULT_REPO_ID = "mcosarinsky/CheXmask-U"
DEFAULT_SUBFOLDER = "v1_skip"
WEIGHT_FILES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
"""File names tried, in order, inside a local directory."""
HUB_WEIGHT_FILES: tuple[str, ...] = ("pytorch_model.bin", "model.safetensors")
"""File names tried, in order, in a Hub repo folder (the published one has the first)."""
_PREFIX = "model."  # the Hub wrapper's attribute name
_MAX_LISTED = 12


def read_state_dict(file: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a tensor state_dict from ``.safetensors`` or a torch pickle (``.bin``/``.pt``/``.pth``).

    Keys prefixed with ``model.`` (the Hub wrapper's layout) are returned without it.

    Raises
    ------
    WeightsError
        Unreadable file, non-tensor content, or keys that collide once the prefix is removed.
    """
    file = Path(file)
    if not file.is_file():
        raise WeightsError(f"weights file not found: {file}")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(file), device=str(map_location))
        else:
            raw = torch.load(file, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError) as error:
        raise WeightsError(f"cannot read weights from {file}: {error}") from error
    except Exception as error:  # safetensors raises its own SafetensorError type
        if type(error).__name__ == "SafetensorError":
            raise WeightsError(f"cannot read weights from {file}: {error}") from error
        raise
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()):
        raise WeightsError(f"{file} does not hold a plain state_dict of named tensors")
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        name = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
        if name in state:
            raise WeightsError(f"{file}: key {key!r} collides with {name!r} once the {_PREFIX!r} prefix is removed")
        state[name] = value
    return state


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], origin: str = "weights") -> None:
    """Load ``state`` into ``model`` after checking names and shapes; any mismatch is a :class:`WeightsError`.

    The message lists the missing keys, the unexpected keys and the keys whose shape
    differs (``name: file shape vs model shape``).
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes ({len(wrong)}, file vs model): {_listing(wrong)}")
        raise WeightsError(f"{origin} do not fit the HybridGNet architecture: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _read_config(file: Path | None) -> dict[str, Any]:
    if file is None:
        return dict(DEFAULT_CONFIG)
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(f"cannot read model config {file}: {error}") from error
    if not isinstance(config, dict):
        raise WeightsError(f"model config {file} is not a JSON object")
    return {**DEFAULT_CONFIG, **config}


def _local_files(path: Path, subfolder: str | None) -> tuple[Path, Path | None]:
    if path.is_file():
        config = path.parent / "config.json"
        return path, config if config.is_file() else None
    if not path.is_dir():
        raise WeightsError(f"weights path does not exist: {path}")
    folder = path / subfolder if subfolder and (path / subfolder).is_dir() else path
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            config = folder / "config.json"
            return folder / name, config if config.is_file() else None
    raise WeightsError(f"no weights file ({' or '.join(WEIGHT_FILES)}) in {folder}")


def _hub_errors() -> tuple[type[BaseException], type[BaseException]]:
    try:
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:  # huggingface_hub < 0.24
        from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError
    return LocalEntryNotFoundError, EntryNotFoundError


def _hub_files(
    repo_id: str, subfolder: str | None, revision: str | None, cache_dir: str | os.PathLike | None, local_files_only: bool
) -> tuple[Path, Path | None]:
    from huggingface_hub import constants, hf_hub_download

    local_missing, entry_missing = _hub_errors()
    where = f"{repo_id}/{subfolder}" if subfolder else repo_id
    offline = False

    def fetch(name: str) -> Path | None:
        nonlocal offline
        try:
            return Path(
                hf_hub_download(
                    repo_id,
                    name,
                    subfolder=subfolder or None,
                    repo_type="model",
                    revision=revision,
                    cache_dir=cache_dir,
                    local_files_only=local_files_only or offline,
                )
            )
        except local_missing:
            offline = True  # unreachable: later files come from the cache or not at all
            return None
        except entry_missing:
            return None
        except Exception as error:  # network, auth, unknown repo or revision
            raise HubError(f"cannot download {name} from model repo {where!r}: {error}") from error

    weights = None
    for name in HUB_WEIGHT_FILES:
        weights = fetch(name)
        if weights is not None:
            break
    if weights is None:
        if offline:
            cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
            raise HubError(
                f"the weights of model repo {where!r} are not in the local Hugging Face cache {cache} and the Hub "
                "cannot be reached (no network, or offline mode: HF_HUB_OFFLINE=1 or local_files_only=True). Fill the cache on a "
                f"machine with network access with `hf download {repo_id} --repo-type model --include "
                f"'{subfolder + '/*' if subfolder else '*'}'` (set HF_HUB_CACHE to share it), or pass a local "
                "directory or file holding config.json and pytorch_model.bin."
            )
        raise HubError(f"model repo {where!r} has none of {', '.join(HUB_WEIGHT_FILES)}")
    return weights, fetch("config.json")


def load_pretrained(
    repo_id: str = DEFAULT_REPO_ID,
    subfolder: str | None = DEFAULT_SUBFOLDER,
    revision: str | None = None,
    *,
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    map_location: str | torch.device = "cpu",
    roi_align: str | None = None,
) -> HybridGNet:
    """The published HybridGNet, ready for inference (eval mode, on ``map_location``).

    Parameters
    ----------
    repo_id, subfolder, revision:
        Hugging Face MODEL repo, folder inside it and git revision (branch, tag or
        commit; default the main branch).  Downloads go through ``hf_hub_download``
        and its cache (``cache_dir``, default ``HF_HUB_CACHE``); with
        ``local_files_only=True`` or ``HF_HUB_OFFLINE=1`` only the cache is used.
    path:
        Local alternative to the Hub: a weights file (``.bin``/``.pt``/``.pth`` or
        ``.safetensors``; a ``config.json`` beside it is read), or a directory holding
        them directly or inside ``subfolder`` (a copy of the Hub repo layout).
    map_location:
        Device the weights are read onto and the model is moved to.
    roi_align:
        Override the skip blocks' sampling rule (``"torchvision"`` or ``"nominal"``);
        default: config.json's value, else ``"torchvision"``.

    Raises
    ------
    WeightsError
        Unreadable weights or config, or weights that do not fit (missing,
        unexpected, wrong-shape keys, all listed).
    HubError
        The Hub cannot serve the files (offline and not cached: the message names the
        cache directory and the command that fills it).
    """
    if path is not None:
        weights_file, config_file = _local_files(Path(path), subfolder)
    else:
        weights_file, config_file = _hub_files(repo_id, subfolder, revision, cache_dir, local_files_only)
    config = _read_config(config_file)
    overrides = {} if roi_align is None else {"roi_align": roi_align}
    try:
        model = HybridGNet.from_config(config, **overrides)
    except (TypeError, ValueError) as error:  # InputError is a ValueError: a key outside CONFIG_RANGES
        raise WeightsError(f"model config {config_file or '(defaults)'} does not describe a HybridGNet: {error}") from error
    load_state_dict_strict(model, read_state_dict(weights_file, map_location), origin=f"weights {weights_file}")
    return model.to(map_location).eval()


def load_weights(spec: str | None, **kwargs: Any) -> HybridGNet:
    """Resolve a command-line weights spec: an existing local path, else ``owner/name[/subfolder][@revision]`` on the Hub.

    ``None`` means the published model; the published repo id alone means its ``v1_skip`` folder.  Keyword arguments go to :func:`load_pretrained`.
    """
    if spec is None:
        return load_pretrained(**kwargs)
    if os.path.exists(spec):
        return load_pretrained(path=spec, **kwargs)
    name, _, revision = spec.partition("@")
    parts = name.strip("/").split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        raise WeightsError(f"--weights {spec!r} is neither an existing path nor a Hub id 'owner/name[/subfolder][@revision]'")
    repo_id = "/".join(parts[:2])
    subfolder = "/".join(parts[2:]) or (DEFAULT_SUBFOLDER if repo_id == DEFAULT_REPO_ID else None)
    return load_pretrained(repo_id, subfolder, revision or None, **kwargs)
