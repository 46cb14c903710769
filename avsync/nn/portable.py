"""Inference without torch: a checkpoint reader and SyncNet's forward pass in numpy.

The classical detect-offset path asks the lip SyncNet for a second opinion on talking faces
(:func:`avsync.offset.second_opinion`); importing torch for it would cost about a second per
run, more than the whole network takes. So this module reads the hub's checkpoint file
itself and runs the network's eval-mode forward in numpy. Nothing here imports torch.

Checkpoint reader
    A ``torch.save`` file is a zip archive: ``<prefix>/data.pkl`` (the pickled object) and
    one raw little-endian buffer per tensor storage under ``<prefix>/data/<key>``. The pickle
    is read with an unpickler that knows only plain containers, the storage types and
    ``torch._utils._rebuild_tensor_v2`` (rebuilt as numpy views of those buffers); any other
    global is refused, as ``torch.load(weights_only=True)`` refuses it.

SyncNet forward
    The same layers as :class:`avsync.nn.syncnet.SyncNetModel` in eval mode (batch norm
    folded with its running statistics); ``tests/test_portable.py`` checks it against the
    torch module to float32 rounding. Only the keypoint picture stream (1-D convolutions over
    the frames; ``input_kind`` lips / lipshape) is written out: the motion-grid stream is
    used through torch only.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from avsync.errors import ModelError

__all__ = ["read_checkpoint", "SyncNetNumpy"]

_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _Storage:
    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *_: Any) -> np.ndarray:
    """A tensor as a numpy copy of its storage view (strides in elements)."""
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    return np.array(view)


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(f)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _Storage(_DTYPES[name])
        raise pickle.UnpicklingError(f"refused global {module}.{name}")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise pickle.UnpicklingError("unknown persistent id")
        raw = self.archive.read(f"{self.prefix}/data/{pid[2]}")
        return np.frombuffer(raw, dtype=np.dtype(pid[1].dtype).newbyteorder("<"))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file as plain Python with numpy arrays for its tensors.

    Raises
    ------
    ModelError
        Not a zip-format torch file, or it holds anything but tensors and plain values.
    """
    try:
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl")]
            if len(pkl) != 1:
                raise ModelError(f"cannot load checkpoint {path}: not a torch zip file")
            order = z.read(f"{pkl[0][: -len('data.pkl')]}byteorder").decode() if any(
                n.endswith("/byteorder") for n in z.namelist()) else "little"
            if order.strip() != "little":
                raise ModelError(f"cannot load checkpoint {path}: big-endian tensors")
            with z.open(pkl[0]) as f:
                out = _Unpickler(f, z, pkl[0][: -len("/data.pkl")]).load()
    except (zipfile.BadZipFile, OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError) as e:
        raise ModelError(f"cannot load checkpoint {path}: {e}") from None
    if not isinstance(out, dict):
        raise ModelError(f"{path} is not an avsync checkpoint")
    return out


# ------------------------------------------------------------------------------------------
# layers (eval mode)


def _bn(x: np.ndarray, sd: dict[str, np.ndarray], name: str, axis: int = 1) -> np.ndarray:
    shape = [1] * x.ndim
    shape[axis] = -1
    scale = sd[f"{name}.weight"] / np.sqrt(sd[f"{name}.running_var"] + 1e-5)
    shift = sd[f"{name}.bias"] - sd[f"{name}.running_mean"] * scale
    return x * scale.reshape(shape) + shift.reshape(shape)


def _conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B, C, L) * (O, C, k), 'same' padding (k odd) → (B, O, L)."""
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2)))
    bsz, c, n = x.shape
    cols = np.lib.stride_tricks.sliding_window_view(xp, k, axis=2)  # (B, C, L, k)
    cols = cols.transpose(0, 2, 1, 3).reshape(bsz * n, c * k)
    out = cols @ w.reshape(len(w), -1).T + b
    return out.reshape(bsz, n, -1).transpose(0, 2, 1)


def _conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B, C, H, W) * (O, C, k, k), 'same' padding (k odd) → (B, O, H, W)."""
    k = w.shape[2]
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    bsz, c, h, wd = x.shape
    cols = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))  # (B, C, H, W, k, k)
    cols = cols.transpose(0, 2, 3, 1, 4, 5).reshape(bsz * h * wd, c * k * k)
    out = cols @ w.reshape(len(w), -1).T + b
    return out.reshape(bsz, h, wd, -1).transpose(0, 3, 1, 2)


def _maxpool(x: np.ndarray, kh: int, kw: int) -> np.ndarray:
    b, c, h, w = x.shape
    h2, w2 = h // kh, w // kw
    return x[:, :, : h2 * kh, : w2 * kw].reshape(b, c, h2, kh, w2, kw).max(axis=(3, 5))


def _adaptive_avg(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """torch's AdaptiveAvgPool2d: bin i spans floor(i·in/out) … ceil((i+1)·in/out)."""
    h, w = x.shape[2:]
    out = np.empty(x.shape[:2] + (oh, ow), x.dtype)
    for i in range(oh):
        h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def _linear(x: np.ndarray, sd: dict[str, np.ndarray], name: str) -> np.ndarray:
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


class SyncNetNumpy:
    """The keypoint SyncNet of a checkpoint (``{"dims", "state_dict"}`` as
    :func:`read_checkpoint` returns it), eval-mode forward in numpy (float32).

    Raises
    ------
    ModelError
        A motion-grid checkpoint (not written out here) or missing weights.
    """

    def __init__(self, ck: dict[str, Any]) -> None:
        dims, sd = ck.get("dims") or {}, ck.get("state_dict") or {}
        if dims.get("input_kind") not in ("lips", "lipshape"):
            raise ModelError(f"the numpy SyncNet reads keypoint checkpoints only, not '{dims.get('input_kind')}'")
        self.dims = dims
        self.sd = {k: np.asarray(v, np.float32) for k, v in sd.items() if not k.endswith("num_batches_tracked")}
        need = [f"{s}.{i}.weight" for s, ids in (("vconv", (0, 3, 6)), ("aconv", (0, 4, 8))) for i in ids]
        missing = [k for k in need + ["vfc.0.weight", "vfc.2.weight", "afc.0.weight", "afc.2.weight"]
                   if k not in self.sd]
        if missing:
            raise ModelError(f"SyncNet checkpoint lacks {', '.join(missing)}")

    def embed_visual(self, v: np.ndarray) -> np.ndarray:
        """(B, frames, visual_in) → (B, embed), L2-normalised."""
        sd = self.sd
        x = np.asarray(v, np.float32).transpose(0, 2, 1)
        for conv, bn in ((0, 1), (3, 4), (6, 7)):
            x = _relu(_bn(_conv1d(x, sd[f"vconv.{conv}.weight"], sd[f"vconv.{conv}.bias"]), sd, f"vconv.{bn}"))
        x = _relu(_linear(x.reshape(len(x), -1), sd, "vfc.0"))
        return _normalise(_linear(x, sd, "vfc.2")).astype(np.float32)

    def embed_audio(self, a: np.ndarray) -> np.ndarray:
        """(B, frames, sub · bands) → (B, embed), L2-normalised."""
        sd, d = self.sd, self.dims
        x = np.asarray(a, np.float32).reshape(len(a), 1, d["frames"] * d["sub"], d["bands"])
        x = _maxpool(_relu(_bn(_conv2d(x, sd["aconv.0.weight"], sd["aconv.0.bias"]), sd, "aconv.1")), 1, 2)
        x = _maxpool(_relu(_bn(_conv2d(x, sd["aconv.4.weight"], sd["aconv.4.bias"]), sd, "aconv.5")), 2, 2)
        x = _adaptive_avg(_relu(_bn(_conv2d(x, sd["aconv.8.weight"], sd["aconv.8.bias"]), sd, "aconv.9")), 5, 4)
        x = _relu(_linear(x.reshape(len(x), -1), sd, "afc.0"))
        return _normalise(_linear(x, sd, "afc.2")).astype(np.float32)
