"""Checkpoint registry, download, sha256-verified cache, and the checkpoint file format.

Registry
    A JSON list of entries, by default ``avsync/checkpoints/registry.json`` (package data).
    Set ``AVSYNC_REGISTRY=/path/to/registry.json`` (or pass ``registry=`` to the
    functions below) to use another one. Each entry::

        {"name": "alignnet-motion",        # what users type: --checkpoint alignnet-motion
         "backend": "alignnet",            # the backend that can load it
         "url": "https://.../alignnet-motion.pt",  # null when only bundled / mirrored
         "sha256": "<64 hex digits>",      # of the file, checked on every use
         "size": 1234567,                  # bytes
         "card": "model_cards/alignnet-motion.md", # model card, relative to the repo root
         "description": "one line",
         "data": "what it was trained on",
         "bundled": "alignnet-motion.pt"}  # file inside avsync/checkpoints/, or null

Cache
    Downloaded checkpoints live in ``<cache root>/models/<name>.pt`` where the cache root is
    ``$AVSYNC_CACHE``, else ``$XDG_CACHE_HOME/avsync``, else ``~/.cache/avsync``. A cached
    file is sha256-verified every time it is resolved; a bad one is reported on stderr,
    deleted and downloaded again.

Mirror
    ``AVSYNC_MODEL_URL`` replaces the entries' URLs: either a base URL (the file name of the
    entry's URL, or ``<name>.pt``, is appended) or a local directory / ``file://`` URL holding
    the files (for machines without network access).

Checkpoint format
    A ``torch.save``'d dict, loaded only with ``torch.load(..., weights_only=True)`` so a
    checkpoint can never run code::

        {"format": 1,                      # version of this layout
         "backend": "alignnet",            # backend name
         "dims": {...},                    # model dimensions: enough to rebuild the module
         "config": {...},                  # training configuration (for the model card)
         "state_dict": {str: Tensor},      # module.state_dict()
         "metrics": {...}}                 # measured numbers (validation loss, accuracy, ...)

    ``dims``, ``config`` and ``metrics`` hold only plain values (str, int, float, bool, None,
    lists and dicts of them); :func:`save_checkpoint` converts dataclasses, tuples, paths and
    numpy scalars.

Test model
    :data:`TINY_TEST_MODEL` (``"tiny-test"``) never downloads: learned backends asked for it
    build small random weights from a fixed seed, so end-to-end tests stay offline.

Registering a trained checkpoint: :func:`register_checkpoint`, or ``avsync models register``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from avsync.cache import cache_dir
from avsync.errors import ModelError
from avsync.outputs import write_atomic, write_json

TINY_TEST_MODEL = "tiny-test"
"""Checkpoint name that learned backends honour by building seeded random weights offline."""

CHECKPOINT_FORMAT = 1
"""Version of the checkpoint dict layout written by :func:`save_checkpoint`."""

CHECKPOINT_KEYS = ("backend", "dims", "config", "state_dict", "metrics")
"""Keys every checkpoint must have."""

CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"
"""Package data directory holding ``registry.json`` and bundled checkpoints."""

DEFAULT_REGISTRY = CHECKPOINTS_DIR / "registry.json"

PUBLISHED_MODE = 0o644
"""Permissions of the files the hub writes (checkpoints, registry): world-readable."""

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")

ProgressFn = Callable[[str, float, "float | None"], None]


# --------------------------------------------------------------------------------------------
# Locations


def is_tiny(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` is the built-in offline test model :data:`TINY_TEST_MODEL`."""
    return str(name) == TINY_TEST_MODEL


def registry_path(registry: str | os.PathLike[str] | None = None) -> Path:
    """Location of the registry: ``registry``, else ``$AVSYNC_REGISTRY``, else the package's."""
    if registry is not None:
        return Path(registry)
    env = os.environ.get("AVSYNC_REGISTRY")
    return Path(env) if env else DEFAULT_REGISTRY


def models_dir() -> Path:
    """Directory of downloaded checkpoints: ``<cache root>/models`` (not created here).

    The cache root is :func:`avsync.cache.cache_dir`: ``$AVSYNC_CACHE``, else
    ``$XDG_CACHE_HOME/avsync``, else ``~/.cache/avsync``.
    """
    return cache_dir() / "models"


# --------------------------------------------------------------------------------------------
# Registry


def load_registry(registry: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Read and validate the registry.

    Parameters
    ----------
    registry
        Path of a registry JSON file; default :func:`registry_path`.

    Returns
    -------
    list of dict
        The entries, in file order. A missing registry file is an empty registry.

    Raises
    ------
    ModelError
        The file is not valid JSON or an entry lacks a field.
    """
    path = registry_path(registry)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ModelError(f"cannot read model registry {path}: {e.strerror or e}") from None
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelError(f"model registry {path} is not valid JSON: {e}") from None
    if not isinstance(entries, list):
        raise ModelError(f"model registry {path} must be a JSON list of entries")
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        _check_entry(entry, f"model registry {path}, entry {i}", seen)
    return entries


def _check_entry(entry: Any, where: str, seen: set[str]) -> None:
    """Validate one registry entry (names must not repeat ``seen``); fill the optional keys."""
    if not isinstance(entry, dict):
        raise ModelError(f"{where}: not an object")
    for key in ("name", "backend", "sha256", "size"):
        if key not in entry:
            raise ModelError(f"{where}: missing '{key}'")
    if not _SHA_RE.match(str(entry["sha256"])):
        raise ModelError(f"{where} ('{entry['name']}'): sha256 must be 64 lowercase hex digits")
    if entry["name"] in seen:
        raise ModelError(f"{where}: duplicate name '{entry['name']}'")
    seen.add(entry["name"])
    for key in ("url", "card", "bundled"):
        entry.setdefault(key, None)
    for key in ("description", "data"):
        entry.setdefault(key, "")


def get_entry(name: str, registry: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The registry entry called ``name``.

    Raises
    ------
    ModelError
        No such entry (the message lists the known names).
    """
    entries = load_registry(registry)
    for entry in entries:
        if entry["name"] == name:
            return entry
    known = ", ".join(e["name"] for e in entries) or "none registered"
    raise ModelError(
        f"unknown model '{name}': not a file and not in the registry {registry_path(registry)} "
        f"(known: {known})"
    )


def model_path(name: str, registry: str | os.PathLike[str] | None = None) -> Path:
    """Where checkpoint ``name`` lives locally: its bundled file, else its cache file.

    Does not download or verify; the file may not exist yet.
    """
    entry = get_entry(name, registry)
    if entry.get("bundled"):
        bundled = _bundled_path(entry, registry)
        if bundled.is_file():
            return bundled
    return _cache_path(entry)


def _bundled_path(entry: Mapping[str, Any], registry: str | os.PathLike[str] | None) -> Path:
    # Bundled files sit next to the registry that names them (the package dir by default).
    return registry_path(registry).resolve().parent / str(entry["bundled"])


def _cache_path(entry: Mapping[str, Any]) -> Path:
    return models_dir() / f"{entry['name']}.pt"


def _file_name(entry: Mapping[str, Any]) -> str:
    url = entry.get("url")
    if url:
        base = Path(urllib.parse.urlparse(url).path).name
        if base:
            return base
    return f"{entry['name']}.pt"


def list_models(registry: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Registry entries, each with ``cached`` (bool: a local file exists, not re-hashed here)
    and ``path`` (str: where it is or would be)."""
    out = []
    for entry in load_registry(registry):
        local = model_path(entry["name"], registry)
        out.append({**entry, "cached": local.is_file(), "path": str(local)})
    return out


# --------------------------------------------------------------------------------------------
# Hashing, download


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _source(entry: Mapping[str, Any]) -> str | None:
    """URL or local path to fetch ``entry`` from: the mirror if set, else the entry's URL."""
    mirror = os.environ.get("AVSYNC_MODEL_URL", "").strip()
    if mirror:
        fname = _file_name(entry)
        if mirror.startswith("file://"):
            return str(Path(urllib.request.url2pathname(urllib.parse.urlparse(mirror).path)) / fname)
        if "://" not in mirror:
            return str(Path(mirror).expanduser() / fname)
        return mirror.rstrip("/") + "/" + urllib.parse.quote(fname)
    url = entry.get("url")
    if url and str(url).startswith("file://"):
        return urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    return url or None


def _open_source(src: str) -> tuple[Any, int | None]:
    if "://" not in src:
        f = open(src, "rb")  # noqa: SIM115 - closed by the caller
        return f, os.fstat(f.fileno()).st_size
    req = urllib.request.Request(src, headers={"User-Agent": "avsync"})
    resp = urllib.request.urlopen(req, timeout=_TIMEOUT_S)  # noqa: S310 - http(s) from registry/mirror
    length = resp.headers.get("Content-Length")
    return resp, int(length) if length and length.isdigit() else None


def _describe(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        reason = e.reason
        return str(getattr(reason, "strerror", None) or reason)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _download(entry: Mapping[str, Any], dest: Path, progress: ProgressFn | None) -> None:
    """Stream ``entry``'s file to ``dest`` via a temp file, hashing on the fly; verify; rename."""
    name = entry["name"]
    src = _source(entry)
    if not src:
        raise ModelError(
            f"no download URL for '{name}' in the registry; set AVSYNC_MODEL_URL to a mirror "
            f"or put the file at {dest}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)

    def fetch_to(tmp: str) -> None:
        try:
            got = _stream_to(src, tmp, entry.get("size") or None, progress)
        except (OSError, ValueError) as e:  # URLError, HTTPError, timeouts are OSErrors
            raise ModelError(
                f"cannot download '{name}' from {src}: {_describe(e)}; "
                f"set AVSYNC_MODEL_URL to a mirror or put the file at {dest}"
            ) from None
        if got != entry["sha256"]:
            raise ModelError(
                f"checksum mismatch for '{name}': expected {entry['sha256']}, got {got} "
                "(the download is corrupt or the registry is stale)"
            )

    write_atomic(dest, fetch_to, suffix=".part", mode=PUBLISHED_MODE)


def _stream_to(src: str, tmp: str, size: int | None, progress: ProgressFn | None) -> str:
    """Copy ``src`` (URL or local path) into file ``tmp``, synced; its sha256 (hex)."""
    h = hashlib.sha256()
    stream, total = _open_source(src)
    total = total or size
    done = 0
    if progress is not None:
        progress("download", 0, total)
    with stream, open(tmp, "wb") as out:
        while chunk := stream.read(_CHUNK):
            out.write(chunk)
            h.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress("download", done, total)
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest()


def _warn(message: str) -> None:
    sys.stderr.write(f"avsync: warning: {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------------------------
# Resolve, fetch, verify


def resolve(
    name_or_path: str | os.PathLike[str],
    *,
    progress: ProgressFn | None = None,
    registry: str | os.PathLike[str] | None = None,
) -> Path:
    """Local, verified file of a checkpoint, downloading it on first use.

    Parameters
    ----------
    name_or_path
        An existing file (returned as is, not verified), or a registry name.
    progress
        Called as ``progress("download", bytes_done, bytes_total_or_None)`` while downloading.
    registry
        Registry file; default :func:`registry_path`.

    Returns
    -------
    Path
        A bundled checkpoint (verified in place), a cached one (verified; re-downloaded when
        corrupt), or a fresh download (verified before it is renamed into the cache).

    Raises
    ------
    ModelError
        Unknown name, the tiny test model (it has no file), download failure, or a checksum
        mismatch after download (no file is left in the cache).
    """
    local = _existing_file(name_or_path)
    if local is not None:
        return local
    entry = get_entry(str(name_or_path), registry)
    bundled = _verified_bundle(entry, registry)
    if bundled is not None:
        return bundled
    dest = _cache_path(entry)
    if dest.is_file():
        if sha256_file(dest) == entry["sha256"]:
            return dest
        _warn(f"cached checkpoint {dest} fails its sha256 check (corrupt or outdated); re-downloading")
        dest.unlink(missing_ok=True)
    _download(entry, dest, progress)
    return dest


def _existing_file(name_or_path: str | os.PathLike[str]) -> Path | None:
    """``name_or_path`` as an existing file, None when it is a registry name; refuses the tiny
    model (it has no file) and what looks like a path to a missing file."""
    if isinstance(name_or_path, os.PathLike) or not is_tiny(name_or_path):
        p = Path(name_or_path).expanduser()
        if p.is_file():
            return p
    name = str(name_or_path)
    if is_tiny(name):
        raise ModelError(
            f"'{TINY_TEST_MODEL}' is the built-in random test model and has no file; "
            "learned backends build it offline"
        )
    if isinstance(name_or_path, os.PathLike) or name.endswith((".pt", ".pth")) or os.sep in name:
        raise ModelError(f"checkpoint file not found: {name}")
    return None


def _verified_bundle(entry: Mapping[str, Any], registry: str | os.PathLike[str] | None) -> Path | None:
    """The entry's bundled file when it passes its sha256; None when there is none (or it
    fails and a download source exists: warned)."""
    if not entry.get("bundled"):
        return None
    bundled = _bundled_path(entry, registry)
    if not bundled.is_file():
        return None
    got = sha256_file(bundled)
    if got == entry["sha256"]:
        return bundled
    if not _source(entry):
        raise ModelError(
            f"bundled checkpoint {bundled} fails its sha256 check (expected "
            f"{entry['sha256']}, got {got}); reinstall avsync"
        )
    _warn(f"bundled checkpoint {bundled} fails its sha256 check; downloading '{entry['name']}' instead")
    return None


def fetch(
    name: str,
    *,
    progress: ProgressFn | None = None,
    registry: str | os.PathLike[str] | None = None,
) -> Path:
    """Make registry checkpoint ``name`` available locally (download if needed); its path."""
    get_entry(name, registry)  # registry names only, never arbitrary paths
    return resolve(name, progress=progress, registry=registry)


def verify(name: str, registry: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """Check the local copy of registry checkpoint ``name`` against its sha256.

    Never downloads or deletes.

    Returns
    -------
    (ok, message)
        ``ok`` is False when the name is unknown, nothing is cached, or the hash differs;
        ``message`` is one line saying which.
    """
    try:
        entry = get_entry(name, registry)
        path = model_path(name, registry)
    except ModelError as e:
        return False, str(e)
    if not path.is_file():
        return False, f"{name}: not cached ({path}); run: avsync models fetch {name}"
    try:
        got = sha256_file(path)
    except OSError as e:
        return False, f"{name}: cannot read {path}: {e.strerror or e}"
    if got != entry["sha256"]:
        return False, f"{name}: sha256 mismatch for {path}: expected {entry['sha256']}, got {got}"
    if entry.get("size") is not None and path.stat().st_size != int(entry["size"]):
        return False, f"{name}: size {path.stat().st_size} differs from registry size {entry['size']}"
    return True, f"{name}: ok ({path})"


# --------------------------------------------------------------------------------------------
# Checkpoint files


def _plain(value: Any, where: str) -> Any:
    """Convert ``value`` to values ``torch.load(weights_only=True)`` accepts."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value), where)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalar
        return value.item()
    if hasattr(value, "tolist"):  # numpy array
        return value.tolist()
    raise ModelError(f"cannot store {where} in a checkpoint: {type(value).__name__} is not a plain value")


def build_model(
    checkpoint: str | None,
    *,
    backend: str,
    default: str,
    make: Callable[[Any], Any],
    tiny_dims: Any,
    device: str = "cpu",
    parse_dims: Callable[[Any], Any] | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """The network of a learned backend, ready for inference.

    ``checkpoint`` (or ``default`` when None) names a registry entry or a file; the tiny test
    model name builds ``make(tiny_dims)`` with seeded random weights (``torch.manual_seed(0)``)
    and never downloads. Otherwise the checkpoint is resolved and verified through the hub, its
    dims (``parse_dims(ck["dims"])`` when given) build the network and its weights are loaded.

    Returns
    -------
    (model in eval mode on ``device``, dims, checkpoint dict — empty for the tiny model)
    """
    import torch

    name = checkpoint or default
    ck: dict[str, Any] = {}
    if is_tiny(name):
        torch.manual_seed(0)
        dims = tiny_dims
        model = make(dims)
    else:
        ck = load_checkpoint(name, map_location=device, backend=backend)
        dims = parse_dims(ck["dims"]) if parse_dims is not None else ck["dims"]
        model = make(dims)
        model.load_state_dict(ck["state_dict"])
    return model.to(device).eval(), dims, ck


def save_checkpoint(
    path: str | os.PathLike[str],
    backend: str,
    dims: Mapping[str, Any] | Any,
    config: Mapping[str, Any] | Any,
    state_dict: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file in the same directory, then ``os.replace``).

    Parameters
    ----------
    path
        Destination file (``.pt``); parent directories are created.
    backend
        Backend name, e.g. ``"alignnet"``.
    dims
        Model dimensions (dict or dataclass): enough to rebuild the module.
    config
        Training configuration (dict or dataclass).
    state_dict
        ``module.state_dict()``; tensors are detached and moved to the CPU.
    metrics
        Measured numbers (dict), default empty.

    Returns
    -------
    Path
        ``path``.
    """
    import torch

    dest = Path(path)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "backend": str(backend),
        "dims": _plain(dims, "dims"),
        "config": _plain(config, "config"),
        "state_dict": {
            str(k): (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state_dict.items()
        },
        "metrics": _plain(metrics or {}, "metrics"),
    }
    dest.parent.mkdir(parents=True, exist_ok=True)

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())

    write_atomic(dest, save, mode=PUBLISHED_MODE)
    return dest


def load_checkpoint(
    name_or_path: str | os.PathLike[str],
    map_location: Any = "cpu",
    *,
    backend: str | None = None,
    progress: ProgressFn | None = None,
    registry: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Resolve (download if needed) and load a checkpoint with ``weights_only=True``.

    Parameters
    ----------
    name_or_path
        Registry name or file path (see :func:`resolve`).
    map_location
        Passed to :func:`torch.load`.
    backend
        When given, the checkpoint's ``backend`` must equal it.
    progress, registry
        As in :func:`resolve`.

    Returns
    -------
    dict
        ``{"format", "backend", "dims", "config", "state_dict", "metrics"}`` (see module doc).

    Raises
    ------
    ModelError
        Not a torch file, holds anything but tensors and plain containers (refused by
        ``weights_only``), lacks a key, or is for another backend.
    """
    path = resolve(name_or_path, progress=progress, registry=registry)
    ckpt = _torch_load(path, map_location)
    _check_checkpoint(ckpt, path, backend)
    return ckpt


def load_checkpoint_arrays(
    name_or_path: str | os.PathLike[str],
    *,
    backend: str | None = None,
    registry: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """:func:`load_checkpoint` without torch: resolved and verified the same way, read by
    :func:`avsync.nn.portable.read_checkpoint` (tensors as numpy arrays, the same refusal of
    anything but tensors and plain values)."""
    from avsync.nn.portable import read_checkpoint

    path = resolve(name_or_path, registry=registry)
    ckpt = read_checkpoint(path)
    _check_checkpoint(ckpt, path, backend)
    return ckpt


def _torch_load(path: Path, map_location: Any) -> Any:
    """``torch.load(weights_only=True)``; every failure becomes a one-line ModelError."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch reports both refused globals and plain garbage as UnpicklingError.
        text = str(e)
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if refused:
            raise ModelError(
                f"refusing to load {path}: it holds objects other than tensors and plain values "
                f"({refused.group(1)}; avsync loads checkpoints with weights_only=True)"
            ) from None
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines() or [""]
        raise ModelError(f"cannot load checkpoint {path}: not a valid torch file ({detail[0]})") from None
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ... on bad files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0]
        raise ModelError(f"cannot load checkpoint {path}: {first}") from None


def _check_checkpoint(ckpt: Any, path: Path, backend: str | None) -> None:
    """Refuse what is not an avsync checkpoint (for ``backend``, when given)."""
    if not isinstance(ckpt, dict):
        raise ModelError(f"{path} is not an avsync checkpoint (a {type(ckpt).__name__}, not a dict)")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise ModelError(f"{path} is not an avsync checkpoint: missing {', '.join(missing)}")
    for key in ("dims", "config", "state_dict", "metrics"):
        if not isinstance(ckpt[key], dict):
            raise ModelError(f"{path} is not an avsync checkpoint: '{key}' is not a dict")
    if backend is not None and ckpt["backend"] != backend:
        raise ModelError(f"{path} is a '{ckpt['backend']}' checkpoint, not '{backend}'")


# --------------------------------------------------------------------------------------------
# Registering a trained checkpoint (``avsync models register``)


def register_checkpoint(
    path: str | os.PathLike[str],
    name: str,
    backend: str,
    card: str,
    *,
    url: str | None = None,
    description: str = "",
    data: str = "",
    bundle: bool = False,
    registry: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Add or replace registry entry ``name`` for checkpoint file ``path``.

    Loads the file (it must be a valid checkpoint for ``backend``), computes its sha256 and
    size and rewrites the registry atomically. With ``bundle=True`` the file is copied next
    to the registry as ``<name>.pt`` and shipped inside the package.

    Parameters
    ----------
    path
        The checkpoint file.
    name
        Registry name (what users pass as ``--checkpoint``).
    backend
        Backend name; must match the checkpoint's ``backend``.
    card
        Model card path relative to the repository root, e.g. ``"model_cards/alignnet-motion.md"``.
    url
        Download URL, or None for bundled / mirror-only checkpoints.
    description, data
        One line each: what the model is, what it was trained on.
    bundle
        Copy the file into the package data directory.
    registry
        Registry file; default :func:`registry_path`.

    Returns
    -------
    dict
        The entry written.
    """
    src = Path(path)
    if is_tiny(name):
        raise ModelError(f"'{TINY_TEST_MODEL}' is reserved for the built-in test model")
    if not src.is_file():
        raise ModelError(f"checkpoint file not found: {src}")
    load_checkpoint(src, backend=backend)
    reg = registry_path(registry)
    entries = [e for e in load_registry(reg) if e["name"] != name]
    bundled = _bundle(src, reg.resolve().parent, name) if bundle else None
    entry = {
        "name": name,
        "backend": backend,
        "url": url,
        "sha256": sha256_file(src),
        "size": src.stat().st_size,
        "card": card,
        "description": description,
        "data": data,
        "bundled": bundled,
    }
    entries.append(entry)
    entries.sort(key=lambda e: e["name"])
    reg.parent.mkdir(parents=True, exist_ok=True)
    write_json(reg, entries, indent=2, mode=PUBLISHED_MODE)
    return entry


def _bundle(src: Path, directory: Path, name: str) -> str:
    """Copy ``src`` to ``directory/<name>.pt`` (atomically, world-readable); the file name."""
    bundled = f"{name}.pt"
    target = directory / bundled
    if src.resolve() != target:
        target.parent.mkdir(parents=True, exist_ok=True)
        def copy(tmp: str) -> None:
            shutil.copyfile(src, tmp)

        write_atomic(target, copy, mode=PUBLISHED_MODE)
    return bundled


if __name__ == "__main__":  # ``python -m avsync.hub CKPT --name ...`` = ``avsync models register CKPT ...``
    from avsync.cli import main

    sys.argv[1:1] = ["models", "register"]
    main()
