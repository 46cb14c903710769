"""Small torch building blocks shared by the convolutional networks."""

from __future__ import annotations

import math

from torch import nn

_CONV = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d), 3: (nn.Conv3d, nn.BatchNorm3d)}


def conv_bn_relu(ndim: int, cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    """``[Conv (kernel k, 'same' padding), BatchNorm, ReLU]`` in ``ndim`` dimensions (1, 2 or 3)."""
    conv, norm = _CONV[ndim]
    return [conv(cin, cout, k, padding=k // 2), norm(cout), nn.ReLU(inplace=True)]


def grid_side(input_kind: str, visual_in: int) -> int:
    """Side of the square motion grid a picture input is (0: not a grid, e.g. lip keypoints)."""
    g = int(round(math.sqrt(visual_in)))
    return g if input_kind == "motion" and g * g == visual_in else 0
