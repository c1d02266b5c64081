"""V-JEPA2-style latent predictor: past tokens + learned mask tokens -> future tokens.

Layout and arithmetic follow transformers' ``VJEPA2Predictor`` (itself upstream
facebookresearch/vjepa2): an input projection ``D -> width``, one learned mask token shared
by every future position (positions come from 3D RoPE over (tubelet, row, column)), pre-LN
blocks (attention + MLP, drop-path), a final LayerNorm and an output projection
``width -> D``. Parameter names match the upstream ones so ``init_from_vjepa2`` copies them
one to one, and the RoPE reproduces upstream's exactly (its pairing of channels included),
so a copied predictor computes what the pretrained one computes.

Attention is full over ``[past ; future mask tokens]``: every input is from the past and the
mask tokens carry no future information, so nothing leaks.

The forward takes an optional ``inject(x, block_index) -> x`` called before every block:
the guidance hook (FiLM, cross-attention). The predictor itself knows nothing of guidance.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LN_EPS = 1e-6  # V-JEPA2's LayerNorm epsilon

Inject = Callable[[Tensor, int], Tensor]


def grid_side(n_patches: int) -> int:
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise ValueError(f"n_patches={n_patches} is not a square grid (side*side); 3D RoPE needs one")
    return side


def init_weights(module: nn.Module) -> None:
    """Truncated-normal(0.02) linears with zero bias, unit LayerNorms (V-JEPA2's init)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class Rope3D(nn.Module):
    """V-JEPA2's rotary embedding over (tubelet, row, column) of a token grid.

    Each axis rotates ``2 * ((head_dim // 3) // 2)`` channels of every head (time first),
    the remainder passes unchanged, exactly as ``VJEPA2RopeAttention``."""

    def __init__(self, head_dim: int, n_tubelets: int, side: int, extra_times: tuple[int, ...] = ()) -> None:
        """``extra_times``: tubelet index of each token appended after the grid (state tokens),
        rotated by that time only; row and column channels stay unrotated (V-JEPA2-AC's
        treatment of its action/state tokens)."""
        super().__init__()
        self.axis_dim = 2 * ((head_dim // 3) // 2)
        n = n_tubelets * side * side
        ids = torch.arange(n)
        t, rest = ids // (side * side), ids % (side * side)
        angles = [self._angles(pos, self.axis_dim) for pos in (t, rest // side, rest % side)]
        if extra_times:
            extra = torch.tensor(extra_times)
            zero = torch.zeros_like(extra)
            angles = [torch.cat([a, self._angles(pos, self.axis_dim)]) for a, pos in zip(angles, (extra, zero, zero))]
        angle = torch.cat(angles, dim=-1)  # [N, 3 * axis_dim]
        self.register_buffer("cos", angle.cos(), persistent=False)
        self.register_buffer("sin", angle.sin(), persistent=False)

    @staticmethod
    def _angles(pos: Tensor, dim: int) -> Tensor:
        omega = torch.arange(dim // 2, dtype=torch.float32) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        freq = pos.to(torch.float32)[:, None] * omega
        # Upstream repeats the half-size table (not interleaves it) while rotating adjacent
        # channel pairs; kept as is so pretrained weights see the rotation they were trained with.
        return freq.repeat(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, heads, N, head_dim]."""
        r = 3 * self.axis_dim
        if r == 0:
            return x
        xr, rest = x[..., :r], x[..., r:]
        pairs = xr.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
        return torch.cat([xr * cos + rotated * sin, rest], dim=-1)


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval or at rate 0)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"predictor width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, rope: Rope3D | None) -> Tensor:
        B, N, W = x.shape
        q, k, v = (lin(x).view(B, N, self.heads, -1).transpose(1, 2) for lin in (self.query, self.key, self.value))
        if rope is not None:
            q, k = rope(q), rope(k)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, W)))


class MLP(nn.Module):
    def __init__(self, width: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x))))


class Block(nn.Module):
    """Pre-LN transformer block, named like ``VJEPA2Layer``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attention = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = MLP(width, mlp_ratio, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, rope: Rope3D | None) -> Tensor:
        x = x + self.drop_path(self.attention(self.norm1(x), rope))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Predictor(nn.Module):
    """Predicts ``[B, Tf, P, D]`` future latents from ``[B, Tp, P, D]`` past latents."""

    def __init__(
        self,
        latent_dim: int,
        width: int,
        depth: int,
        heads: int,
        n_tubelets_past: int,
        n_tubelets_future: int,
        n_patches: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        use_rope: bool = True,
        n_extra: int = 0,
    ) -> None:
        """``n_extra`` tokens (one per past tubelet, e.g. state tokens) may be appended after the
        grid on every call; they take part in attention but are not predicted."""
        super().__init__()
        if depth < 1:
            raise ValueError(f"predictor depth must be >= 1, got {depth}")
        self.latent_dim, self.width, self.depth, self.heads = latent_dim, width, depth, heads
        self.n_past, self.n_future, self.n_patches = n_tubelets_past, n_tubelets_future, n_patches
        side = grid_side(n_patches)
        n_tokens = (n_tubelets_past + n_tubelets_future) * n_patches
        self.embed = nn.Linear(latent_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))  # zero-init, as V-JEPA2
        if n_extra not in (0, n_tubelets_past):
            raise ValueError(f"extra predictor tokens are one per past tubelet ({n_tubelets_past}), got {n_extra}")
        self.n_extra = n_extra
        extra_times = tuple(range(n_extra))
        self.rope = Rope3D(width // heads, n_tubelets_past + n_tubelets_future, side, extra_times) if use_rope else None
        self.pos_embed = None if use_rope else nn.Parameter(torch.zeros(1, n_tokens, width))
        # Drop-path grows linearly with depth, as in V-JEPA2.
        rates = [drop_path * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout, r) for r in rates)
        self.norm = nn.LayerNorm(width, eps=LN_EPS)
        self.proj = nn.Linear(width, latent_dim)
        self.apply(init_weights)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, past_latents: Tensor, inject: Inject | None = None, extra: Tensor | None = None) -> Tensor:
        """``extra`` [B, n_extra, width]: tokens appended after the grid (already at width)."""
        B, Tp, P, D = past_latents.shape
        if (Tp, P, D) != (self.n_past, self.n_patches, self.latent_dim):
            raise ValueError(
                f"past_latents has shape {tuple(past_latents.shape)}; the predictor was built for "
                f"[B, {self.n_past}, {self.n_patches}, {self.latent_dim}]"
            )
        context = self.embed(past_latents.reshape(B, Tp * P, D))
        targets = self.mask_token.expand(B, self.n_future * P, -1).to(context.dtype)
        x = torch.cat([context, targets], dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        if (0 if extra is None else extra.shape[1]) != self.n_extra:
            raise ValueError(f"the predictor was built for {self.n_extra} extra tokens, got {None if extra is None else tuple(extra.shape)}")
        if extra is not None:
            x = torch.cat([x, extra.to(x.dtype)], dim=1)
        for b, block in enumerate(self.blocks):
            if inject is not None:
                x = inject(x, b)
            x = block(x, self.rope)
        x = self.proj(self.norm(x[:, Tp * P : (Tp + self.n_future) * P]))
        return x.reshape(B, self.n_future, P, D)


# -- initialisation from a pretrained V-JEPA2 predictor ---------------------------------


def copy_vjepa2_predictor(predictor: Predictor, source: nn.Module, mask_index: int = 1) -> dict[str, Any]:
    """Copy every shape-compatible weight of a transformers ``VJEPA2Predictor`` into ``predictor``.

    Blocks are copied up to the shallower depth. ``mask_index`` picks which of upstream's
    mask tokens becomes ours (1 is upstream's default for the prediction target).
    Returns ``{"copied": [our names], "skipped": {our name: reason}}``."""
    cfg = source.config
    if cfg.pred_hidden_size != predictor.width:
        raise ValueError(
            f"V-JEPA2 predictor width (pred_hidden_size={cfg.pred_hidden_size}) differs from "
            f"model.pred_width={predictor.width}; set pred_width to match to initialise from it"
        )
    if cfg.pred_num_attention_heads != predictor.heads:
        warnings.warn(
            f"V-JEPA2 predictor has {cfg.pred_num_attention_heads} heads, ours {predictor.heads}: weights "
            "are copied but attention splits (and RoPE channels) differ from what they were trained with",
            stacklevel=2,
        )
    src = source.state_dict()
    pairs: dict[str, str] = {
        "embed.weight": "embeddings.predictor_embeddings.weight",
        "embed.bias": "embeddings.predictor_embeddings.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
        "proj.weight": "proj.weight",
        "proj.bias": "proj.bias",
    }
    block_params = [
        "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
        "attention.query.weight", "attention.query.bias", "attention.key.weight", "attention.key.bias",
        "attention.value.weight", "attention.value.bias", "attention.proj.weight", "attention.proj.bias",
        "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
    ]  # fmt: skip
    for i in range(predictor.depth):
        for name in block_params:
            pairs[f"blocks.{i}.{name}"] = f"layer.{i}.{name}"
    ours = predictor.state_dict()
    copied: list[str] = []
    skipped: dict[str, str] = {}
    with torch.no_grad():
        for mine, theirs in pairs.items():
            if theirs not in src:
                skipped[mine] = f"no {theirs} in the source (depth {cfg.pred_num_hidden_layers})"
                continue
            if src[theirs].shape != ours[mine].shape:
                skipped[mine] = f"shape {tuple(src[theirs].shape)} != ours {tuple(ours[mine].shape)}"
                continue
            ours[mine].copy_(src[theirs])
            copied.append(mine)
        tokens = src["embeddings.mask_tokens"]  # [n, 1, 1, width]
        predictor.mask_token.copy_(tokens[mask_index % tokens.shape[0]].reshape(1, 1, -1))
        copied.append("mask_token")
    return {"copied": copied, "skipped": skipped}


def init_from_vjepa2(predictor: Predictor, source: str, revision: str | None = None) -> dict[str, Any]:
    """Load a V-JEPA2 checkpoint (hub id or local folder) and copy its predictor into ours.

    The only place in the model code that touches files or the hub."""
    from transformers import VJEPA2Model

    hf = VJEPA2Model.from_pretrained(source, revision=revision)
    return copy_vjepa2_predictor(predictor, hf.predictor)
