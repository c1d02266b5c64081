"""Guidance injection into the predictor blocks, gated so training starts at identity.

Both modes turn per-sample guidance into an ``inject(x, block) -> x`` hook that the predictor
calls before each block:

- ``FiLMInjection`` (the reference's default): per block an MLP
  ``LN -> film_hidden -> GELU -> 2*width`` on that block's level signature, split into gamma
  and beta, both scaled by ``tanh(g_b)`` (``g_b`` = 0 at init); ``x <- x*(1+gamma)+beta`` on
  every token of the sample.
- ``CrossAttnInjection``: per block a gated cross-attention sub-layer
  ``x <- x + tanh(g_b) * CrossAttn(LN(x), LN(tokens of the block's level), mask)``.

Initialisation (``ModelConfig.injection_init``), both starting exactly at the identity, so a
guided model equals the same weights run without guidance (``0 * finite == 0``, and no NaN can
arise: samples without a single guidance token attend to nothing and contribute zeros):

- ``zero_out`` (default, adaLN-Zero style): gates open (``g = 1``), the last layer of each
  modulation MLP (FiLM) or the output projection (cross-attention) at zero. The first backward
  pass already gives that layer a gradient, so the guidance path trains from step 0.
- ``zero_gate`` (the reference code's): gates at zero, MLPs at their random init. The gradient
  reaches the gates only; tanh(0) = 0 blocks it from the MLPs until the gates have moved, and
  with a zero-initialised readout nothing moves at all (docs/reference.md §7). Guidance is never pooled across
the batch: every sample is modulated by its own signature or tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .predictor import LN_EPS, Inject, init_weights

InjectionInit = Literal["zero_out", "zero_gate"]


def _gates(depth: int, init: InjectionInit) -> nn.Parameter:
    if init not in ("zero_out", "zero_gate"):
        raise ValueError(f"unknown injection_init {init!r}; expected 'zero_out' or 'zero_gate'")
    return nn.Parameter(torch.full((depth,), 1.0 if init == "zero_out" else 0.0))


class FiLMInjection(nn.Module):
    def __init__(self, depth: int, signature_dim: int, hidden: int, width: int,
                 init: InjectionInit = "zero_out") -> None:
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(signature_dim, eps=LN_EPS),
                nn.Linear(signature_dim, hidden),
                nn.GELU(),
                nn.Linear(hidden, 2 * width),
            )
            for _ in range(depth)
        )
        self.gates = _gates(depth, init)
        self.mlps.apply(init_weights)
        if init == "zero_out":
            for mlp in self.mlps:
                nn.init.zeros_(mlp[-1].weight)

    def forward(self, signatures: Tensor, block_levels: Sequence[int]) -> Inject:
        """signatures: [B, n_levels, signature_dim] -> the per-block hook."""
        mods = []
        for b, mlp in enumerate(self.mlps):
            gamma, beta = mlp(signatures[:, block_levels[b]]).chunk(2, dim=-1)
            gate = torch.tanh(self.gates[b])
            mods.append(((gate * gamma)[:, None], (gate * beta)[:, None]))

        def inject(x: Tensor, b: int) -> Tensor:
            gamma, beta = mods[b]
            return x * (1 + gamma.to(x.dtype)) + beta.to(x.dtype)

        return inject


class GuidanceCrossAttention(nn.Module):
    """Predictor tokens (queries) attend to guidance tokens (keys/values) of one level."""

    def __init__(self, width: int, guidance_dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"predictor width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.LayerNorm(width, eps=LN_EPS)
        # Thinker hidden states carry a few huge outlier channels; normalising the keys keeps
        # the logits in range whatever layer they come from.
        self.norm_kv = nn.LayerNorm(guidance_dim, eps=LN_EPS)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(guidance_dim, width)
        self.value = nn.Linear(guidance_dim, width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """x [B, Nq, W], tokens [B, Nk, G], mask [B, Nk] bool (True = real token)."""
        B, Nq, W = x.shape
        kv = self.norm_kv(tokens.to(x.dtype))
        q = self.query(self.norm(x)).view(B, Nq, self.heads, -1).transpose(1, 2)
        k = self.key(kv).view(B, kv.shape[1], self.heads, -1).transpose(1, 2)
        v = self.value(kv).view(B, kv.shape[1], self.heads, -1).transpose(1, 2)
        has_any = mask.any(dim=1)
        # A sample without tokens would softmax over nothing (NaN); let it attend to its
        # padding and zero the result instead.
        attend = (mask | ~has_any[:, None])[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend, dropout_p=self.dropout if self.training else 0.0
        )
        out = self.proj(out.transpose(1, 2).reshape(B, Nq, W))
        return out * has_any[:, None, None].to(out.dtype)


class CrossAttnInjection(nn.Module):
    def __init__(self, depth: int, guidance_dim: int, width: int, heads: int, dropout: float = 0.0,
                 init: InjectionInit = "zero_out") -> None:
        super().__init__()
        self.layers = nn.ModuleList(GuidanceCrossAttention(width, guidance_dim, heads, dropout) for _ in range(depth))
        self.gates = _gates(depth, init)
        self.layers.apply(init_weights)
        if init == "zero_out":
            for layer in self.layers:
                nn.init.zeros_(layer.proj.weight)

    def forward(self, tokens: Tensor, mask: Tensor, block_levels: Sequence[int]) -> Inject:
        """tokens: [B, n_levels, N, G], mask [B, N] -> the per-block hook."""

        def inject(x: Tensor, b: int) -> Tensor:
            out = self.layers[b](x, tokens[:, block_levels[b]], mask)
            return x + torch.tanh(self.gates[b]).to(x.dtype) * out

        return inject
