"""The guidance pyramid: which stored thinker layers feed which predictor block, and how.

The thinker cache stores, per window, hidden states of ``L`` decoder layers for two token
streams ("prefill": every prompt token; "generated": the thinking tokens). This module turns
them into per-sample guidance for the predictor:

- a *layer selector* picks the pyramid levels (indices into the stored layers, not VLM
  layer ids): ``"all"``, ``"last"``, ``"mid"`` or an explicit list;
- per stream one bias-free ``Linear(H -> guidance_dim)``, shared across levels;
- FiLM path: masked token mean per stream, projected, combined into the signature
  ``[o; n; |o-n|; o*n]`` (``4 * guidance_dim``). Because the projection is linear and
  bias-free, projecting the mean equals the mean of the projections, so the cached per-layer
  means are enough (``means`` mode) and give the same signature as the tokens (``tokens``
  mode, computed the reference code's way: project every token, then masked mean);
- cross-attention path: the projected tokens of both streams, concatenated with their masks.

Single stream (``streams="prefill"`` or ``"generated"``): the missing stream's slot is
zeros, so the signature keeps its layout (``[o; 0; |o|; 0]``); the missing stream has no
projection at all. Zeros were chosen over duplicating the present stream because they keep
"this stream is absent" explicit instead of faking a perfect prefill/generated agreement.

Level-to-block mapping: block ``b`` of a depth-``d`` predictor uses level
``floor(b * n_levels / d)``; with ``d == n_levels`` that is the reference's "level i feeds
block i"; with more blocks than levels consecutive blocks share a level; with more levels than
blocks some levels are skipped (a warning says which).

Pooling (``ModelConfig.pooling``, applied by the dataset, which reads the cache): ``all`` is
the reference's all-token mean (``guid_{s}_mean`` [B, L, H]); ``vision`` keeps only the
prefill's vision tokens and ``frame_groups`` keeps one vision mean per thinker frame group
(``guid_{s}_pool`` [B, L, K, H], K slots). With K slots the signature is
``[o_1; ...; o_K; n; |o - n|; o * n]`` where ``o`` is the mean of the projected slots, so
K = 1 is exactly the reference signature.

Normalisation: the whole-token means of a thinker are dominated by what every sample shares
(template, scene); the per-sample part that carries a cue is 5-20x smaller (REFERENCE.md
section 7). ``set_normalization`` stores per (stored layer, slot, channel) mean and std of
the pooled guidance over the TRAIN split (never batch statistics: a sample's guidance must
not depend on the other samples in its batch); they are buffers, so they travel in the
checkpoint, and the projections see standardised inputs.

Constant guidance (``constant=True``, the ``jepa_matched`` baseline): the pooled guidance of
every window is replaced by one fixed input per stream, stored layer and slot (a seeded
standard-normal buffer, the scale of standardised guidance, saved in the checkpoint). Every
module and trainable parameter stays as in the guided model and trains (the projection of a
fixed input is a learned constant per level), but nothing in the output depends on the
window's guidance: ``signatures`` and ``tokens`` then never read the batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

STREAMS: tuple[str, ...] = ("prefill", "generated")
CONSTANT_SEED = 0
"""Seed of the fixed guidance input of a constant pyramid (``jepa_matched``)."""


def streams_of(streams: str) -> tuple[str, ...]:
    """The token streams a ``ModelConfig.streams`` value selects."""
    if streams == "both":
        return STREAMS
    if streams in STREAMS:
        return (streams,)
    raise ValueError(f"unknown guidance streams {streams!r}; expected 'both', 'prefill' or 'generated'")


def select_levels(selector: str | Sequence[int], n_layers: int) -> list[int]:
    """Indices into the ``n_layers`` stored layers that form the pyramid."""
    if n_layers < 1:
        raise ValueError(f"the guidance cache holds {n_layers} layers; need at least one")
    if selector == "all":
        return list(range(n_layers))
    if selector == "last":
        return [n_layers - 1]
    if selector == "mid":
        return [n_layers // 2]
    if isinstance(selector, str):
        raise ValueError(f"unknown layer_selector {selector!r}; expected 'all', 'last', 'mid' or a list of indices")
    levels = [int(i) for i in selector]
    if not levels:
        raise ValueError("layer_selector is an empty list; name at least one stored layer")
    bad = [i for i in levels if not 0 <= i < n_layers]
    if bad:
        raise ValueError(
            f"layer_selector indices {bad} are out of range for {n_layers} stored layers "
            "(they index the stored layers, not VLM layer ids)"
        )
    if len(set(levels)) != len(levels):
        raise ValueError(f"layer_selector {levels} repeats an index")
    return levels


def block_levels(depth: int, n_levels: int) -> list[int]:
    """For each predictor block, the pyramid level (position in the selected levels) it uses."""
    mapping = [b * n_levels // depth for b in range(depth)]
    unused = sorted(set(range(n_levels)) - set(mapping))
    if unused:
        warnings.warn(
            f"{n_levels} pyramid levels but only {depth} predictor blocks: levels {unused} feed no block",
            stacklevel=2,
        )
    return mapping


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x [B, L, N, C]`` over tokens where ``mask [B, N]`` is true; zeros if none."""
    w = mask.to(x.dtype)[:, None, :, None]
    return (x * w).sum(dim=2) / w.sum(dim=2).clamp(min=1.0)


class GuidancePyramid(nn.Module):
    """Per-sample thinker guidance from the cached pyramid of hidden states.

    Reads from the batch, per used stream ``s``: ``guid_{s}_mean [B, L, H]`` (means mode)
    and/or ``guid_{s} [B, L, N, H]`` + ``guid_{s}_mask [B, N]`` (tokens mode).
    """

    def __init__(
        self,
        n_layers: int,
        hidden: int,
        guidance_dim: int,
        layer_selector: str | Sequence[int] = "all",
        streams: str = "both",
        depth: int = 12,
        cross_attention: bool = False,
        slots: int = 1,
        constant: bool = False,
    ) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.hidden = hidden
        self.guidance_dim = guidance_dim
        self.slots = int(slots)
        """Pooled prefill vectors per level (1 for ``all``/``vision`` pooling, K frame groups)."""
        self.streams = streams_of(streams)
        self.levels = select_levels(layer_selector, n_layers)
        self.block_levels = block_levels(depth, len(self.levels))
        self.proj = nn.ModuleDict({s: nn.Linear(hidden, guidance_dim, bias=False) for s in self.streams})
        # Tells cross-attention which stream a key came from once both are concatenated. Only
        # built when used: a parameter without gradient breaks DDP (unused-parameter error).
        self.stream_embed = nn.Parameter(torch.zeros(len(STREAMS), guidance_dim)) if cross_attention else None
        if self.stream_embed is not None:
            nn.init.trunc_normal_(self.stream_embed, std=0.02)
        for p in self.proj.values():
            nn.init.trunc_normal_(p.weight, std=0.02)
        # Identity until set_normalization: a model built without statistics computes what it did.
        for s in self.streams:
            k = self.slots if s == "prefill" else 1
            self.register_buffer(f"norm_mean_{s}", torch.zeros(n_layers, k, hidden))
            self.register_buffer(f"norm_std_{s}", torch.ones(n_layers, k, hidden))
        self.constant = constant
        if constant:
            # A private generator: the global RNG (hence every other weight) is drawn as in
            # the guided model, and the constant is the same for every seed.
            g = torch.Generator().manual_seed(CONSTANT_SEED)
            for s in self.streams:
                k = self.slots if s == "prefill" else 1
                self.register_buffer(f"const_{s}", torch.randn(n_layers, k, hidden, generator=g))

    def set_normalization(self, stats: Mapping[str, tuple[Tensor, Tensor]], eps: float = 1e-6) -> None:
        """Store train-split statistics: ``{stream: (mean, std)}``, each [L, K, H] (K = 1 for the
        generated stream and for single-vector pooling). Channels that never vary (std below
        ``eps`` times the layer's typical std) are left unscaled rather than blown up."""
        for s in self.streams:
            if s not in stats:
                raise KeyError(f"normalisation statistics for stream {s!r} are missing")
            mean, std = (torch.as_tensor(x, dtype=torch.float32) for x in stats[s])
            want = tuple(getattr(self, f"norm_mean_{s}").shape)
            if tuple(mean.shape) != want or tuple(std.shape) != want:
                raise ValueError(f"stream {s!r}: statistics of shape {tuple(mean.shape)} / {tuple(std.shape)}, expected {want}")
            floor = eps * std.flatten(1).median(dim=1).values.clamp(min=eps)[:, None, None]
            std = torch.where(std > floor, std, torch.ones_like(std))
            getattr(self, f"norm_mean_{s}").copy_(mean)
            getattr(self, f"norm_std_{s}").copy_(std)

    def _normalize(self, x: Tensor, stream: str) -> Tensor:
        """x [B, L, K, H] raw pooled guidance -> standardised (levels not yet selected)."""
        mean = getattr(self, f"norm_mean_{stream}").to(x.dtype)
        std = getattr(self, f"norm_std_{stream}").to(x.dtype)
        return (x - mean) / std

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def signature_dim(self) -> int:
        return (self.slots + 3) * self.guidance_dim

    # -- inputs -------------------------------------------------------------------------
    def _check(self, name: str, x: Tensor, token_axis: bool) -> None:
        want = 4 if token_axis else 3
        if x.dim() != want or x.shape[1] != self.n_layers or x.shape[-1] != self.hidden:
            shape = "[B, L, N, H]" if token_axis else "[B, L, H]"
            raise ValueError(
                f"batch[{name!r}] has shape {tuple(x.shape)}; expected {shape} with L={self.n_layers} "
                f"stored layers and H={self.hidden}"
            )

    def _tokens(self, batch: Mapping[str, Tensor], stream: str) -> tuple[Tensor, Tensor] | None:
        key = f"guid_{stream}"
        if key not in batch:
            return None
        tokens = batch[key]
        self._check(key, tokens, token_axis=True)
        mask_key = f"{key}_mask"
        if mask_key not in batch:
            raise KeyError(f"batch has {key!r} but not {mask_key!r} (which tokens are real, not padding)")
        mask = batch[mask_key].bool()
        if mask.shape != (tokens.shape[0], tokens.shape[2]):
            raise ValueError(f"batch[{mask_key!r}] has shape {tuple(mask.shape)}; expected {(tokens.shape[0], tokens.shape[2])}")
        return tokens, mask

    def _missing(self, stream: str) -> KeyError:
        return KeyError(
            f"guidance stream {stream!r} is used but the batch has neither 'guid_{stream}_mean' "
            f"nor 'guid_{stream}' + 'guid_{stream}_mask'"
        )

    def pooled(self, batch: Mapping[str, Tensor], stream: str) -> Tensor:
        """Raw pooled guidance of one stream, every stored layer: [B, L, K, H] float32.

        From ``guid_{s}_pool`` [B, L, K, H], ``guid_{s}_mean`` [B, L, H] (K = 1) or, for the
        all-token mean, from ``guid_{s}`` tokens + mask (the masked mean; projecting the
        mean equals the mean of the projections because the projection is bias-free)."""
        want_k = self.slots if stream == "prefill" else 1
        pool_key, mean_key = f"guid_{stream}_pool", f"guid_{stream}_mean"
        if pool_key in batch:
            x = batch[pool_key].float()
            if x.dim() != 4 or x.shape[1] != self.n_layers or x.shape[2] != want_k or x.shape[3] != self.hidden:
                raise ValueError(
                    f"batch[{pool_key!r}] has shape {tuple(x.shape)}; expected [B, {self.n_layers}, {want_k}, {self.hidden}]"
                )
            return x
        if want_k != 1:
            raise KeyError(f"this model pools {stream!r} into {want_k} slots and needs batch[{pool_key!r}]")
        if mean_key in batch:
            means = batch[mean_key]
            self._check(mean_key, means, token_axis=False)
            return means.float()[:, :, None]
        found = self._tokens(batch, stream)
        if found is None:
            raise self._missing(stream)
        tokens, mask = found
        return masked_mean(tokens.float(), mask)[:, :, None]

    def _const(self, stream: str, batch_size: int) -> Tensor:
        """The constant pyramid's fixed input: [B, L, K, H] (already at standardised scale)."""
        c = getattr(self, f"const_{stream}")
        return c[None].expand(batch_size, *c.shape)

    def _projected(self, batch: Mapping[str, Tensor], stream: str, batch_size: int | None) -> Tensor:
        """Projected, normalised pooled guidance of the selected levels: [B, n_levels, K, G]."""
        proj = self.proj[stream]
        if self.constant:
            x = self._const(stream, _size(batch_size))[:, self.levels]
        else:
            x = self._normalize(self.pooled(batch, stream), stream)[:, self.levels]
        return proj(x.to(proj.weight.dtype))

    # -- outputs ------------------------------------------------------------------------
    def signatures(self, batch: Mapping[str, Tensor], batch_size: int | None = None) -> Tensor:
        """FiLM conditioning per level and sample: [B, n_levels, (K + 3) * guidance_dim].
        A constant pyramid reads nothing from ``batch`` and needs ``batch_size``."""
        vecs = {s: self._projected(batch, s, batch_size) for s in self.streams}
        ref = next(iter(vecs.values()))
        B, n_lv, _, G = ref.shape
        slots = vecs["prefill"] if "prefill" in vecs else ref.new_zeros(B, n_lv, self.slots, G)
        o = slots.mean(dim=2)
        n = vecs["generated"][:, :, 0] if "generated" in vecs else torch.zeros_like(o)
        return torch.cat([slots.flatten(2), n, (o - n).abs(), o * n], dim=-1)

    def tokens(self, batch: Mapping[str, Tensor], batch_size: int | None = None) -> tuple[Tensor, Tensor]:
        """Cross-attention keys per level: tokens [B, n_levels, N, G] and mask [B, N].

        Token states are standardised per layer and channel with the stream's statistics
        (averaged over its slots); a stream given only as pooled vectors or means (no token
        keys) enters as K (or one) tokens per level. A constant pyramid gives its fixed
        inputs as K (or one) tokens per level and stream, reading nothing from ``batch``."""
        if self.stream_embed is None:
            raise RuntimeError("GuidancePyramid was built without cross_attention=True")
        parts, masks = [], []
        for s in self.streams:
            proj = self.proj[s]
            dtype = proj.weight.dtype
            found = None if self.constant else self._tokens(batch, s)
            if self.constant:
                tokens = self._const(s, _size(batch_size))[:, self.levels]
                mask = torch.ones(tokens.shape[0], tokens.shape[2], dtype=torch.bool, device=tokens.device)
            elif found is not None:
                tokens, mask = found
                mean = getattr(self, f"norm_mean_{s}").mean(dim=1)[:, None]
                std = getattr(self, f"norm_std_{s}").mean(dim=1)[:, None]
                tokens = ((tokens.float() - mean) / std)[:, self.levels]
            else:
                tokens = self._normalize(self.pooled(batch, s), s)[:, self.levels]
                mask = torch.ones(tokens.shape[0], tokens.shape[2], dtype=torch.bool, device=tokens.device)
            parts.append(proj(tokens.to(dtype)) + self.stream_embed[STREAMS.index(s)])
            masks.append(mask)
        return torch.cat(parts, dim=2), torch.cat(masks, dim=1)


def _size(batch_size: int | None) -> int:
    if batch_size is None:
        raise ValueError("a constant guidance pyramid reads no batch: pass batch_size")
    return batch_size
