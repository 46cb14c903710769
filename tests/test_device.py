"""--device resolution, both CUDA branches via monkeypatching."""

from __future__ import annotations

import pytest
import torch

from avsync.device import resolve_device
from avsync.errors import InputError


def _cuda(monkeypatch, available: bool, count: int = 1) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count if available else 0)


def test_auto_picks_cuda_when_available(monkeypatch):
    _cuda(monkeypatch, True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device(" CUDA ") == "cuda"
    assert resolve_device("cpu") == "cpu"


def test_auto_falls_back_to_cpu(monkeypatch):
    _cuda(monkeypatch, False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device() == "cpu"


def test_cuda_without_device_is_input_error(monkeypatch):
    _cuda(monkeypatch, False)
    with pytest.raises(InputError) as ei:
        resolve_device("cuda")
    assert str(ei.value) == (
        "--device cuda requested but no CUDA device is available (torch.cuda.is_available() is False)"
    )
    with pytest.raises(InputError, match="no CUDA device"):
        resolve_device("cuda:0")


def test_cuda_index(monkeypatch):
    _cuda(monkeypatch, True, count=2)
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(InputError, match=r"only 2 CUDA device\(s\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "cuda:-1", "", "mps0"])
def test_invalid_specs(bad, monkeypatch):
    _cuda(monkeypatch, True)
    with pytest.raises(InputError, match="invalid --device"):
        resolve_device(bad)
