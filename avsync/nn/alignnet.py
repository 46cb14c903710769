"""AlignNet (Wang et al., "AlignNet: A Unifying Approach to Audio-Visual Alignment", WACV 2020).

Dense correspondence between a (possibly non-uniformly distorted) visual sequence and an
audio sequence, both sampled at the video frame rate. For every video frame ``m`` the
network predicts the audio position ``a(m)`` it belongs to, normalised to (−1, 1) over the
audio window (−1 = first audio frame, +1 = last).

Structure (one forward pass)::

    visual (B, T, P*c) ─ spatial attention (one weight per point, tied L/R) ─ 1-D conv pyramid ─┐
    audio  (B, T, 128) ─ temporal attention (audio self-attention → per-step gate) ─ pyramid ───┤
                                                                                                 │
    for level 4 (coarsest, T/24) … level 1 (T/3):                                                │
        c_prev = upsample(coarser correspondence)   (identity at the coarsest level)            │
        sample the audio features at c_prev + d·step, d ∈ [−D, D]    (warp + band)              │
        affinity = softmax_d(<visual_m, audio_{c_prev(m)+d}> / τ)                               │
        c = c_prev + step · (Σ_d d·affinity + refine(affinity, visual))  ∈ [−1, 1]              │
    output: level-1 correspondence linearly upsampled to T

Loss: Σ_l λ_l L1(c_l, target_l) + μ Σ_l λ_l mean(relu(c_l[t] − c_l[t+1])) (monotonic hinge).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from avsync.nn.inputs import GRID, grid_pairs, tie_from_pairs


@dataclass(frozen=True)
class AlignNetDims:
    """Everything needed to rebuild an :class:`AlignNet` (stored in its checkpoint)."""

    n_points: int = 64  # spatial-attention units: keypoints, or motion-grid cells
    per_point: int = 2  # input channels per point (grid: energy, Δenergy; keypoints: vx, vy, ax, ay)
    point_tie: tuple[int, ...] = ()  # index of the shared weight of each point (L/R pairs tied); () = untied
    audio_in: int = 128  # log-mel bins
    channels: tuple[int, ...] = (128, 64, 32, 16)  # pyramid channels, finest level first
    strides: tuple[int, ...] = (3, 2, 2, 2)  # temporal downscale of each level
    band: int = 4  # affinity search radius per level, in that level's samples
    attn_dim: int = 32  # width of the audio self-attention
    spatial_attention: bool = True  # learned per-point weights (ablation: off)
    temporal_attention: bool = True  # audio-conditioned per-step re-weighting (ablation: off)
    pyramid: bool = True  # coarse-to-fine; False = a single level (the finest) from identity
    input_kind: str = "motion"  # motion | pose | lips (documentation; set by the backend)
    extra: dict = field(default_factory=dict)

    @property
    def visual_in(self) -> int:
        return self.n_points * self.per_point

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["strides"] = list(self.strides)
        d["point_tie"] = list(self.point_tie)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AlignNetDims:
        d = dict(d)
        for k in ("channels", "strides", "point_tie"):
            if k in d:
                d[k] = tuple(d[k])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


TINY_ALIGNNET = AlignNetDims(point_tie=tie_from_pairs(GRID * GRID, grid_pairs()))  # the offline test model


class SpatialAttention(nn.Module):
    """One learned, positive weight per point (mean 1), shared between tied (left/right) points."""

    def __init__(self, n_points: int, per_point: int, tie: tuple[int, ...]) -> None:
        super().__init__()
        tie_t = torch.tensor(tie if tie else range(n_points), dtype=torch.long)
        if tie_t.numel() != n_points:
            raise ValueError(f"point_tie has {tie_t.numel()} entries for {n_points} points")
        self.register_buffer("tie", tie_t, persistent=False)
        self.logits = nn.Parameter(torch.zeros(int(tie_t.max()) + 1))
        self.n_points, self.per_point = n_points, per_point

    def weights(self) -> torch.Tensor:
        """Per-point weights, shape (P,), mean 1."""
        w = torch.softmax(self.logits[self.tie], 0)
        return w * self.n_points

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, P*c)
        b, t, _ = x.shape
        x = x.view(b, t, self.n_points, self.per_point) * self.weights()[None, None, :, None]
        return x.reshape(b, t, -1)


class TemporalAttention(nn.Module):
    """Self-attention over the audio sequence producing a gate in (0, 2) per time step that
    re-weights the audio features (steps the audio says matter are amplified)."""

    def __init__(self, audio_in: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv1d(audio_in, dim, 3, padding=1)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.gate = nn.Linear(2 * dim, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # a (B, T, F)
        h = F.leaky_relu(self.proj(a.transpose(1, 2)), 0.1).transpose(1, 2)  # (B, T, d)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(1, 2) * self.scale, dim=-1)  # (B, T, T)
        ctx = att @ v
        g = 2.0 * torch.sigmoid(self.gate(torch.cat([h, ctx], -1)))  # (B, T, 1), 1 at init
        return a * g, g[..., 0]


class Pyramid(nn.Module):
    """1-D convolution pyramid: level l has ``channels[l]`` channels at T / prod(strides[:l+1])."""

    def __init__(self, c_in: int, channels: tuple[int, ...], strides: tuple[int, ...]) -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        prev = c_in
        for c, s in zip(channels, strides, strict=True):
            k = 2 * s + 1
            self.levels.append(nn.Sequential(
                nn.Conv1d(prev, c, k, stride=s, padding=k // 2),
                nn.LeakyReLU(0.1),
                nn.Conv1d(c, c, 3, padding=1),
                nn.LeakyReLU(0.1),
            ))
            prev = c

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # x (B, C, T) → [(B, C_l, T_l)]
        out = []
        for level in self.levels:
            x = level(x)
            out.append(x)
        return out


def resample_1d(x: torch.Tensor, n: int) -> torch.Tensor:
    """Linear resampling of (B, T) or (B, C, T) to length ``n`` with end points kept
    (normalised coordinates are preserved)."""
    squeeze = x.dim() == 2
    if squeeze:
        x = x[:, None]
    one = x.shape[-1] == 1
    y = x.expand(*x.shape[:-1], n) if one else F.interpolate(x, size=n, mode="linear", align_corners=True)
    return y[:, 0] if squeeze else y


def sample_at(feat: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Sample ``feat`` (B, C, Ta) at normalised positions ``pos`` (B, K, T) in [−1, 1]
    (linear interpolation, borders held). Returns (B, C, K, T)."""
    b, k, t = pos.shape
    grid = torch.stack([pos, torch.zeros_like(pos)], dim=-1)  # (B, K, T, 2): x = pos, y = 0
    return F.grid_sample(feat[:, :, None, :], grid, mode="bilinear", padding_mode="border", align_corners=True)


def identity_corr(b: int, t: int, device: torch.device) -> torch.Tensor:
    """The identity correspondence, (B, T), in normalised coordinates."""
    if t == 1:
        return torch.zeros(b, 1, device=device)
    return torch.linspace(-1.0, 1.0, t, device=device).expand(b, t)


class Estimator(nn.Module):
    """Banded affinity between visual and (warped) audio features and the correspondence update."""

    def __init__(self, channels: int, band: int) -> None:
        super().__init__()
        self.band = band
        n = 2 * band + 1
        self.log_temp = nn.Parameter(torch.full((), 1.5))  # sharper start: gradients reach the features
        self.refine = nn.Sequential(
            nn.Conv1d(n + channels + 1, 32, 5, padding=2),
            nn.LeakyReLU(0.1),
            nn.Conv1d(32, 1, 5, padding=2),
        )
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)
        self.register_buffer("offsets", torch.arange(-band, band + 1, dtype=torch.float32), persistent=False)

    def forward(self, v: torch.Tensor, a: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """v (B, C, Tv), a (B, C, Ta), c_prev (B, Tv) → (corr (B, Tv), affinity (B, 2D+1, Tv))."""
        ta = a.shape[-1]
        step = 2.0 / max(ta - 1, 1)
        pos = c_prev[:, None, :] + self.offsets[None, :, None] * step  # (B, K, Tv)
        aw = sample_at(a, pos.clamp(-1.0, 1.0))  # (B, C, K, Tv)
        logits = (aw * v[:, :, None, :]).sum(1) * (torch.exp(self.log_temp) / math.sqrt(v.shape[1]))
        # candidates beyond the window see the edge feature (border); they are not masked so
        # that a flat affinity keeps c_prev (no pull towards the window centre)
        aff = torch.softmax(logits, dim=1)  # (B, K, Tv): normalised over audio positions
        expect = (aff * self.offsets[None, :, None]).sum(1)  # (B, Tv), in samples
        delta = self.refine(torch.cat([aff, v, expect[:, None]], 1))[:, 0]
        corr = (c_prev + step * (expect + delta)).clamp(-1.0, 1.0)
        return corr, aff


class AlignNet(nn.Module):
    """See the module docstring. ``forward(visual (B, T, P*c), audio (B, T, F))``."""

    def __init__(self, dims: AlignNetDims) -> None:
        super().__init__()
        self.dims = dims
        self.spatial = SpatialAttention(dims.n_points, dims.per_point, dims.point_tie) if dims.spatial_attention \
            else None
        self.temporal = TemporalAttention(dims.audio_in, dims.attn_dim) if dims.temporal_attention else None
        self.vpyr = Pyramid(dims.visual_in, dims.channels, dims.strides)
        self.apyr = Pyramid(dims.audio_in, dims.channels, dims.strides)
        self.est = nn.ModuleList(Estimator(c, dims.band) for c in dims.channels)

    @property
    def min_length(self) -> int:
        """Shortest input the pyramid handles (every level at least 2 samples)."""
        return 2 * math.prod(self.dims.strides)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> dict[str, object]:
        """Predict the correspondence.

        Parameters
        ----------
        visual : Tensor, shape (B, Tv, P*c)
        audio : Tensor, shape (B, Ta, F)

        Returns
        -------
        dict
            ``corr`` (B, Tv): audio position of every video frame in (−1, 1);
            ``levels``: list of (B, T_l) per level, finest first; ``affinity``: the finest
            level's (B, 2D+1, T_1) soft affinity; ``gate`` (B, Ta) temporal attention (or None).
        """
        b, tv, _ = visual.shape
        if self.spatial is not None:
            visual = self.spatial(visual)
        gate = None
        if self.temporal is not None:
            audio, gate = self.temporal(audio)
        vl = self.vpyr(visual.transpose(1, 2))
        al = self.apyr(audio.transpose(1, 2))
        n = len(vl)
        levels: list[torch.Tensor | None] = [None] * n
        affs: list[torch.Tensor | None] = [None] * n
        priors: list[torch.Tensor | None] = [None] * n
        prev = None
        order = range(n - 1, -1, -1) if self.dims.pyramid else [0]
        for lvl in order:
            t_l = vl[lvl].shape[-1]
            c_prev = identity_corr(b, t_l, visual.device) if prev is None else resample_1d(prev, t_l)
            corr, aff = self.est[lvl](vl[lvl], al[lvl], c_prev)
            levels[lvl], affs[lvl], priors[lvl] = corr, aff, c_prev
            prev = corr
        final = resample_1d(levels[0], tv)
        return {"corr": final, "levels": [x for x in levels if x is not None], "affinity": affs[0], "gate": gate,
                "affinities": [x for x in affs if x is not None], "priors": [x for x in priors if x is not None],
                "audio_lengths": [x.shape[-1] for x in al]}


def monotonic_hinge(corr: torch.Tensor) -> torch.Tensor:
    """Mean of relu(c[t] − c[t+1]) over a (B, T) correspondence: zero iff non-decreasing."""
    if corr.shape[-1] < 2:
        return corr.sum() * 0.0
    return F.relu(corr[..., :-1] - corr[..., 1:]).mean()


def affinity_ce(aff: torch.Tensor, prior: torch.Tensor, target: torch.Tensor, ta: int) -> torch.Tensor:
    """Cross-entropy of a banded affinity (B, 2D+1, T) against the true offset from the prior
    (both (B, T), normalised), the true offset spread over its two nearest bins."""
    band = (aff.shape[1] - 1) // 2
    d = ((target - prior) * (ta - 1) / 2.0).clamp(-band, band) + band  # in bins, [0, 2D]
    lo = d.floor().clamp(0, 2 * band)
    w_hi = d - lo
    hi = (lo + 1).clamp(max=2 * band)
    logp = torch.log(aff.clamp_min(1e-8))
    ce = -((1 - w_hi) * logp.gather(1, lo.long()[:, None])[:, 0] + w_hi * logp.gather(1, hi.long()[:, None])[:, 0])
    return ce.mean()


def alignnet_loss(
    out: dict, target: torch.Tensor, weights: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125), mu: float = 1.0,
    ce: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ_l λ_l L1(c_l, target_l) + μ Σ_l λ_l hinge(c_l) [+ ce Σ_l λ_l CE(affinity_l)].

    The finest level is compared at the input length (its upsampled output ``corr``);
    coarser levels against the target resampled to their length. The optional affinity
    cross-entropy (not in the paper; ``ce=0`` disables it) supervises each level's soft
    affinity with the true audio position, which speeds up learning on small budgets.

    Parameters
    ----------
    out : dict
        :meth:`AlignNet.forward` output.
    target : Tensor, shape (B, T)
        Normalised audio position of every video frame.
    """
    total = target.new_zeros(())
    l1_sum = target.new_zeros(())
    hinge_sum = target.new_zeros(())
    ce_sum = target.new_zeros(())
    levels = out["levels"]
    for i, c in enumerate(levels):
        lam = weights[i] if i < len(weights) else weights[-1]
        if ce and "affinities" in out:
            tl = resample_1d(target, c.shape[-1])
            ce_l = affinity_ce(out["affinities"][i], out["priors"][i], tl, out["audio_lengths"][i])
            total = total + ce * lam * ce_l
            ce_sum = ce_sum + lam * ce_l
        if i == 0:
            c = out["corr"]
        tgt = resample_1d(target, c.shape[-1])
        l1 = (c - tgt).abs().mean()
        h = monotonic_hinge(c)
        total = total + lam * (l1 + mu * h)
        l1_sum = l1_sum + lam * l1
        hinge_sum = hinge_sum + lam * h
    return total, {"l1": float(l1_sum.detach()), "hinge": float(hinge_sum.detach()), "ce": float(ce_sum.detach())}

