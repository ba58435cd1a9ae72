"""Loading the published HybridGNet weights (Hub model repo, local directory or file).

The published model lives in the Hugging Face MODEL repo ``mcosarinsky/CheXmask-U``
(same id as the dataset repo, so ``repo_type="model"`` is always passed), subfolder
``v1_skip``: ``config.json`` plus ``pytorch_model.bin`` (a plain tensor state_dict;
``model.safetensors`` is read too when present).  Pickles are only ever read with
``torch.load(weights_only=True)``, which refuses arbitrary objects.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import torch

from chexmask_u_tools.errors import WeightsError
from chexmask_u_tools.model.hybridgnet import DEFAULT_CONFIG, HybridGNet

DEFAULT_REPO_ID = "mcosarinsky/CheXmask-U"
DEFAULT_SUBFOLDER = "v1_skip"
WEIGHT_FILES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
"""File names tried, in order, inside a local directory."""
HUB_WEIGHT_FILES: tuple[str, ...] = ("pytorch_model.bin", "model.safetensors")
"""File names tried, in order, in a Hub repo folder (the published one has the first)."""
_PREFIX = "model."  # the Hub wrapper's attribute name
_MAX_LISTED = 12


ACCEPTED_FORMATS = (
    "Accepted weights: a .safetensors file, or a .bin/.pt/.pth written by torch.save(model.state_dict()) "
    "(tensors only, read with weights_only=True). Files that need arbitrary Python objects to load are "
    "refused whatever their source."
)


def _load_reason(error: BaseException) -> str:
    """The loader's reason in one line, without torch's advice to load unsafely."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1]
        detail = detail.split("Please use", 1)[0].split("Check the documentation", 1)[0]
        return "unsupported pickle content: " + " ".join(detail.split()).rstrip(". ")
    if "weights_only" in text or not text.strip():
        return type(error).__name__
    return f"{type(error).__name__}: {' '.join(text.split())[:200]}"


def read_state_dict(file: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a tensor state_dict from ``.safetensors`` or a torch pickle (``.bin``/``.pt``/``.pth``).

    Keys prefixed with ``model.`` (the Hub wrapper's layout) are returned without it.

    Raises
    ------
    WeightsError
        Unreadable file (the message lists :data:`ACCEPTED_FORMATS`), non-tensor content,
        or keys that collide once the prefix is removed.
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
    except Exception as error:  # noqa: BLE001 - torch and safetensors raise many types for a bad file
        known = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError)
        if not isinstance(error, known) and type(error).__name__ != "SafetensorError":
            raise
        raise WeightsError(
            f"cannot read weights from {file}: it is neither a safetensors file nor a torch state_dict of plain "
            f"tensors that loads with weights_only=True ({_load_reason(error)}). {ACCEPTED_FORMATS}"
        ) from error
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


HUB_PROBE_TIMEOUT = 3.0
"""Seconds the one reachability check (a HEAD of the weights file, no retries) may take
before the Hub counts as unreachable.  Only then does loading fall back to the cache."""


def _hub_errors() -> tuple[type[BaseException], type[BaseException]]:
    try:
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:  # huggingface_hub < 0.24
        from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError
    return LocalEntryNotFoundError, EntryNotFoundError


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _remote_missing(error: BaseException) -> bool:
    """A 404 for the file itself (EntryNotFound), as opposed to the repo or the revision."""
    local_missing, entry_missing = _hub_errors()
    return isinstance(error, entry_missing) and not isinstance(error, local_missing)


class _HubProblem(NamedTuple):
    kind: str
    """"offline", "network", "server" or "final" (an answer that retrying cannot change)."""
    error: BaseException


def _classify(error: BaseException) -> _HubProblem:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled):
        return _HubProblem("offline", error)
    if isinstance(error, HfHubHTTPError):
        status = _status(error)
        return _HubProblem("server" if status is not None and (status >= 500 or status == 429) else "final", error)
    return _HubProblem("network", error)  # refused, DNS, timeout, TLS: the client's transport errors


def _probe(url: str) -> _HubProblem | None:
    """One HEAD of ``url``, no retries, :data:`HUB_PROBE_TIMEOUT` s: None if the Hub answered usefully."""
    import inspect

    from huggingface_hub import get_hf_file_metadata

    options: dict[str, Any] = {"timeout": HUB_PROBE_TIMEOUT}
    if "retry_on_errors" in inspect.signature(get_hf_file_metadata).parameters:
        options["retry_on_errors"] = False
    try:
        get_hf_file_metadata(url, **options)
    except Exception as error:  # noqa: BLE001 - classified below; nothing is swallowed
        if _remote_missing(error):
            return None  # the Hub answered: this file name is absent (the caller tries the others)
        return _classify(error)
    return None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _ways_forward(repo_id: str, subfolder: str | None, cache: Path) -> str:
    include = f"{subfolder}/*" if subfolder else "*"
    return (
        "Ways forward: (1) a local weights folder holding config.json and pytorch_model.bin "
        "(command line: --weights DIR; Python: load_pretrained(path=DIR)); "
        f"(2) fill the Hugging Face cache {cache} on a machine with network access "
        f"(`hf download {repo_id} --repo-type model --include '{include}'`, HF_HUB_CACHE to share it), "
        "then run with HF_HUB_OFFLINE=1; "
        "(3) a local Hub mirror: HF_ENDPOINT=http://your-mirror."
    )


def _hub_files(
    repo_id: str, subfolder: str | None, revision: str | None, cache_dir: str | os.PathLike | None, local_files_only: bool
) -> tuple[Path, Path | None]:
    """Weights and config from the Hub or its cache; four failures, four messages (each chained).

    * offline mode (``HF_HUB_OFFLINE=1`` or ``local_files_only``) and not cached;
    * no network (refused, DNS, timeout) and not cached: found by one short probe
      (:data:`HUB_PROBE_TIMEOUT`, no retries), so it fails in seconds, quietly;
    * a server error (HTTP 5xx, 429) and not cached;
    * the Hub answered that the files are not there (404 EntryNotFound).

    An unknown repo, revision or a refused token is raised at once with its own message.
    """
    from huggingface_hub import constants, hf_hub_download, hf_hub_url

    where = f"{repo_id}/{subfolder}" if subfolder else repo_id
    at = f" at revision {revision!r}" if revision else ""
    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    endpoint = constants.ENDPOINT
    problem: _HubProblem | None = None
    if local_files_only or constants.is_offline_mode():
        problem = _HubProblem("offline", LookupError("offline mode"))  # replaced by the cache miss below
    else:
        first = f"{subfolder}/{HUB_WEIGHT_FILES[0]}" if subfolder else HUB_WEIGHT_FILES[0]
        problem = _probe(hf_hub_url(repo_id, first, repo_type="model", revision=revision))

    missing: BaseException | None = None  # the Hub's last 404 for a weights file name
    cache_miss: BaseException | None = None  # the client's "not in the cache" error

    def fetch(name: str, cached_only: bool) -> Path | None:
        nonlocal missing, cache_miss
        try:
            return Path(
                hf_hub_download(
                    repo_id,
                    name,
                    subfolder=subfolder or None,
                    repo_type="model",
                    revision=revision,
                    cache_dir=cache_dir,
                    local_files_only=cached_only,
                )
            )
        except Exception as error:  # noqa: BLE001 - classified below
            local_missing, _ = _hub_errors()
            if isinstance(error, local_missing) and cached_only:
                cache_miss = error
                return None
            if _remote_missing(error):
                missing = error
                return None
            # huggingface_hub wraps transport and 5xx errors in LocalEntryNotFoundError; judge by the cause.
            fail(_classify(error.__cause__ if isinstance(error, local_missing) and error.__cause__ else error), name)
            raise  # not reached: fail() raises

    def fail(found: _HubProblem, name: str | None = None) -> NoReturn:
        error = found.error
        if found.kind == "offline":
            raise WeightsError(
                f"offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True) and the weights of model repo "
                f"{where!r}{at} are not in the local Hugging Face cache {cache}. {_ways_forward(repo_id, subfolder, cache)}"
            ) from error
        if found.kind == "network":
            raise WeightsError(
                f"cannot reach the Hugging Face Hub at {endpoint} ({type(error).__name__}: {_one_line(error)}; no network, "
                f"a firewall or a wrong HF_ENDPOINT) and the weights of model repo {where!r}{at} are not in the "
                f"local cache {cache}. {_ways_forward(repo_id, subfolder, cache)}"
            ) from error
        if found.kind == "server":
            raise WeightsError(
                f"the Hugging Face Hub at {endpoint} answered HTTP {_status(error)} (a server error, not your network) "
                f"for model repo {where!r}{at}, and its weights are not in the local cache {cache}. Try again later. "
                f"{_ways_forward(repo_id, subfolder, cache)}"
            ) from error
        status = _status(error)
        raise WeightsError(
            f"the Hugging Face Hub at {endpoint} refused model repo {where!r}{at}"
            + (f" while fetching {name}" if name else "")
            + f" (HTTP {status}: {_one_line(error)}). Check the repo id, folder and revision (--weights owner/name[/folder][@revision]) "
            "and, for a private or gated repo, your token (hf auth login or HF_TOKEN)."
        ) from error

    cached_only = problem is not None
    if problem is not None and problem.kind == "final":
        fail(problem)
    weights = None
    for name in HUB_WEIGHT_FILES:
        weights = fetch(name, cached_only)
        if weights is not None:
            break
    if weights is None:
        if problem is not None:
            fail(problem if problem.kind != "offline" or cache_miss is None else _HubProblem("offline", cache_miss))
        raise WeightsError(
            f"model repo {where!r}{at} on {endpoint} has none of {', '.join(HUB_WEIGHT_FILES)} (HTTP 404 EntryNotFound): "
            "check the folder and revision (--weights owner/name[/folder][@revision]), or pass a local weights "
            "folder (--weights DIR)"
        ) from missing
    return weights, fetch("config.json", cached_only)


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
        Unreadable weights or config (a config value outside
        :data:`~chexmask_u_tools.model.hybridgnet.CONFIG_RANGES`), weights that do not
        fit (missing, unexpected, wrong-shape keys, all listed), or weights the Hub
        cannot serve and the cache does not hold.  The last has four distinct messages,
        each chained (``raise ... from``) to the client's exception: offline mode; no
        network (found by one short probe of :data:`HUB_PROBE_TIMEOUT` seconds without
        retries, so it fails fast and quietly); a server error (5xx); the files absent
        from the repo (404).  The first three name the ways forward: a local weights
        folder (``path=``, ``--weights DIR``), a filled cache with ``HF_HUB_OFFLINE=1``,
        or a mirror through ``HF_ENDPOINT``.  When the Hub is unreachable but the
        cache holds the files, the cache is used.
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
    model.weights_origin = _weights_origin(weights_file, None if path is not None else (repo_id, subfolder, revision))
    return model.to(map_location).eval()


def _weights_origin(weights_file: Path, hub: tuple[str, str | None, str | None] | None) -> dict[str, str]:
    """What :func:`~chexmask_u_tools.model.predict.prediction_provenance` records of loaded weights."""
    digest = hashlib.sha256()
    with open(weights_file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    origin = {"file": str(weights_file), "sha256": digest.hexdigest()}
    if hub is not None:
        repo_id, subfolder, revision = hub
        # hf_hub_download keeps files under snapshots/<commit>/: the commit the revision resolved to.
        parts = Path(weights_file).parts
        commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None
        origin = {"hub": "/".join(filter(None, (repo_id, subfolder))), "revision": revision or "main",
                  **({"commit": commit} if commit else {}), **origin}
    return origin


RANDOM_WEIGHTS = "random"
"""The weights spec for an untrained model (``--weights random``): for testing the machinery
only.  A local path of that name is written ``./random``."""


def random_model(seed: int = 0, **config: Any) -> HybridGNet:
    """An untrained :class:`HybridGNet` (eval mode) whose weights depend only on ``seed``.

    The global torch random state is left as it was.  Its landmarks and uncertainties
    mean nothing: it exercises the pipeline without the published weights.

    Examples
    --------
    >>> a, b = random_model(seed=1, input_size=64), random_model(seed=1, input_size=64)
    >>> bool(torch.equal(a.dec_lin.weight, b.dec_lin.weight)), a.training
    (True, False)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HybridGNet(**config).eval()
    model.weights_origin = {"random": "untrained weights, for testing only", "seed": str(seed)}
    return model


def load_weights(spec: str | None, *, random_seed: int = 0, **kwargs: Any) -> HybridGNet:
    """Resolve a command-line weights spec: an existing local path, else ``owner/name[/subfolder][@revision]`` on the Hub.

    ``None`` means the published model; the published repo id alone means its ``v1_skip``
    folder; :data:`RANDOM_WEIGHTS` (``"random"``) an untrained model from
    :func:`random_model` (``random_seed``; the caller warns the user).  Keyword
    arguments go to :func:`load_pretrained`.
    """
    if spec is None:
        return load_pretrained(**kwargs)
    if spec == RANDOM_WEIGHTS:
        overrides = {"roi_align": kwargs["roi_align"]} if kwargs.get("roi_align") else {}
        return random_model(random_seed, **overrides).to(kwargs.get("map_location", "cpu"))
    if os.path.exists(spec):
        return load_pretrained(path=spec, **kwargs)
    name, _, revision = spec.partition("@")
    parts = name.strip("/").split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        raise WeightsError(
            f"--weights {spec!r} is neither an existing path, a Hub id 'owner/name[/subfolder][@revision]', "
            f"nor {RANDOM_WEIGHTS!r} (untrained weights, for testing)"
        )
    repo_id = "/".join(parts[:2])
    subfolder = "/".join(parts[2:]) or (DEFAULT_SUBFOLDER if repo_id == DEFAULT_REPO_ID else None)
    return load_pretrained(repo_id, subfolder, revision or None, **kwargs)
