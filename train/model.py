"""ThinkJEPA: V-JEPA2-style predictor + thinker-guidance pyramid + joint readout head.

One class serves every variant and ablation (``ModelConfig``):

- ``thinkjepa``: guidance injected into every predictor block (``injection`` film or
  cross_attn; ``streams`` and ``layer_selector`` pick the ablation);
- ``jepa_only``: no guidance module at all (same as ``injection: none``);
- ``jepa_matched``: the capacity-matched JEPA-only baseline: thinkjepa's pyramid and
  injection modules, hence its trainable parameters, fed a constant in place of the window's
  guidance (``GuidancePyramid(constant=True)``): it keeps every input-independent scale and
  shift the guided model can learn, so the only difference from thinkjepa is what the guidance
  carries. It never reads a guidance key of the batch (its dataset serves thinkjepa's inputs,
  so both are built with the same shapes and scored on the same windows);
- ``vlm_only``: the dense input is zeroed (past latents replaced by zeros for the predictor
  and the head, and the state tokens' state, when ``state_tokens`` is on), guidance kept, as
  the reference code's VLM-only. It keeps the head's anchor (the last observed pose, which
  frames the forecast, not the motion), and reads nothing else of the dense branch.

``state_tokens`` (off by default, the paper's model): the observed past hand state enters the
predictor as one token per past tubelet (train/state.py), as V-JEPA2-AC feeds its state, and
one learned query per future tubelet forecasts the state, which the head reads beside the
forecast latents.

``motion_prior`` (``none`` by default, the paper's model): ``constant_velocity`` takes the
residual head's offsets around the constant-velocity extrapolation of the two newest past
states instead of around the last pose (train/head.py: ``constant_velocity_anchor``), so the
model starts at the physics baseline and learns the deviation. ``jepa_matched``, ``jepa_only``
and ``thinkjepa`` get the same prior; ``vlm_only`` keeps the last-pose anchor.

The predictor, head and state tokens are built before the guidance modules, so under one seed
a guided model and a ``jepa_only`` model get identical predictor/head weights; with the gates
at zero (their initial value) they compute identical outputs.

``forward`` reads only inputs from the past: ``past_latents``, the guidance keys the mode
needs, ``cam_pose`` and, when present, ``past_joints_cam`` (and ``past_states_cam`` with
state tokens). Targets (``future_latents``, ``target_joints``, ``target_conf``) are for the
loss only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from thinkjepa.config import ModelConfig

from .head import JointHead, camera_to_world, constant_velocity_anchor
from .hub import PretrainedMixin
from .injection import CrossAttnInjection, FiLMInjection
from .predictor import Predictor, init_from_vjepa2
from .pyramid import GuidancePyramid
from .state import StateTokens

GuidanceMode = Literal["none", "means", "tokens"]
RolloutMode = Literal["shifted", "predicted"]


def guidance_mode(cfg: ModelConfig) -> GuidanceMode:
    """Which guidance inputs a model built from ``cfg`` reads: none, per-layer means
    (``guid_{stream}_mean``) or tokens (``guid_{stream}`` + ``guid_{stream}_mask``,
    ``cfg.guidance_tokens`` per stream). FiLM also accepts tokens, cross-attention also
    accepts means (one token per stream)."""
    if cfg.variant == "jepa_only" or cfg.injection == "none":
        return "none"
    return "means" if cfg.injection == "film" else "tokens"


class ThinkJEPA(PretrainedMixin, nn.Module):
    def __init__(
        self,
        model_cfg: ModelConfig,
        latent_dim: int,
        n_tubelets_past: int,
        n_tubelets_future: int,
        n_patches: int,
        guidance_layers: int,
        guidance_hidden: int,
        future_frames: int,
        guidance_slots: int = 1,
        *,
        pretrained: bool = True,
    ) -> None:
        """``pretrained=False`` skips ``model_cfg.init_predictor_from`` (rebuilding a model
        whose trained weights are loaded next: no need to read, or reach, the checkpoint)."""
        super().__init__()
        cfg = model_cfg
        if cfg.variant == "vlm_only" and cfg.injection == "none":
            raise ValueError("variant vlm_only zeroes the visual input, so it needs guidance: set model.injection to film or cross_attn")
        if cfg.variant == "jepa_matched" and cfg.injection == "none":
            raise ValueError("variant jepa_matched keeps thinkjepa's injection modules: set model.injection to film or cross_attn")
        self.cfg = cfg
        self.mode: GuidanceMode = guidance_mode(cfg)
        n_extra = 0
        if cfg.state_tokens:
            if future_frames % n_tubelets_future:
                raise ValueError(f"state tokens group frames by tubelet: {future_frames} future frames are not a multiple of {n_tubelets_future} tubelets")
            n_extra = n_tubelets_past + n_tubelets_future
        self.predictor = Predictor(
            latent_dim=latent_dim,
            width=cfg.pred_width,
            depth=cfg.pred_depth,
            heads=cfg.pred_heads,
            n_tubelets_past=n_tubelets_past,
            n_tubelets_future=n_tubelets_future,
            n_patches=n_patches,
            mlp_ratio=cfg.mlp_ratio,
            dropout=cfg.dropout,
            drop_path=cfg.drop_path,
            use_rope=cfg.use_rope,
            n_extra=n_extra,
        )
        self.head = JointHead(
            latent_dim=latent_dim,
            n_tubelets_past=n_tubelets_past,
            n_tubelets_future=n_tubelets_future,
            future_frames=future_frames,
            hidden=cfg.head_hidden,
            heads=cfg.head_heads,
            residual=cfg.head_residual,
            state_width=cfg.pred_width if n_extra else 0,
        )
        # Frames per tubelet from the future side: a rollout feeds forecast frames back as state.
        self.state = (StateTokens(n_tubelets_past, n_tubelets_future, future_frames // n_tubelets_future, cfg.pred_width)
                      if n_extra else None)
        self.pyramid: GuidancePyramid | None = None
        self.injection: FiLMInjection | CrossAttnInjection | None = None
        if self.mode != "none":
            self.pyramid = GuidancePyramid(
                n_layers=guidance_layers,
                hidden=guidance_hidden,
                guidance_dim=cfg.guidance_dim,
                layer_selector=cfg.layer_selector,
                streams=cfg.streams,
                depth=cfg.pred_depth,
                cross_attention=cfg.injection == "cross_attn",
                slots=guidance_slots,
                constant=cfg.variant == "jepa_matched",
            )
            if cfg.injection == "film":
                self.injection = FiLMInjection(cfg.pred_depth, self.pyramid.signature_dim, cfg.film_hidden, cfg.pred_width,
                                               init=cfg.injection_init)
            else:
                self.injection = CrossAttnInjection(cfg.pred_depth, cfg.guidance_dim, cfg.pred_width, cfg.pred_heads,
                                                    cfg.dropout, init=cfg.injection_init)
        self.init_report: dict | None = None
        if cfg.init_predictor_from and pretrained:
            self.init_report = init_from_vjepa2(self.predictor, cfg.init_predictor_from)

    def _inject(self, batch: Mapping[str, Tensor], batch_size: int):
        assert self.pyramid is not None and self.injection is not None
        # The matched baseline's pyramid gets no batch at all: it cannot read the guidance.
        source: Mapping[str, Tensor] = {} if self.pyramid.constant else batch
        if isinstance(self.injection, FiLMInjection):
            return self.injection(self.pyramid.signatures(source, batch_size), self.pyramid.block_levels)
        tokens, mask = self.pyramid.tokens(source, batch_size)
        return self.injection(tokens, mask, self.pyramid.block_levels)

    def _state_tokens(self, batch: Mapping[str, Tensor], batch_size: int) -> Tensor | None:
        if self.state is None:
            return None
        if self.cfg.variant == "vlm_only":
            return self.state.blank(batch_size)
        if "past_states_cam" not in batch or "past_joints_cam" not in batch:
            raise KeyError("model.state_tokens needs batch 'past_states_cam' [B, Fp, 52, 3] and 'past_joints_cam' [B, 52, 3]")
        return self.state(batch["past_states_cam"], batch["past_joints_cam"], self.head.offset_scale)

    def forward(self, batch: Mapping[str, Tensor], rollout_steps: int = 1,
                rollout_mode: RolloutMode = "shifted") -> dict[str, Tensor]:
        """One forecast step; with ``rollout_steps`` > 1 the recursive rollout of ``rollout``
        with gradients through every step (``train.rollout_steps``: the training loop calls the
        model, not a method, so a data-parallel wrapper sees the whole rollout as its forward)."""
        if rollout_steps == 1:
            return self._step(batch)
        return self._rollout(batch, rollout_steps, rollout_mode)

    def _step(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if "past_latents" not in batch or "cam_pose" not in batch:
            raise KeyError("the batch needs 'past_latents' [B, Tp, P, D] and 'cam_pose' [B, 4, 4]")
        past = batch["past_latents"].to(self.predictor.embed.weight.dtype)
        if self.cfg.variant == "vlm_only":
            past = torch.zeros_like(past)
        inject = self._inject(batch, past.shape[0]) if self.mode != "none" else None
        state = self._state_tokens(batch, past.shape[0])
        future_state = None
        if state is None:
            pred = self.predictor(past, inject)
        else:
            pred, future_state = self.predictor(past, inject, state, return_extra=True)
        past_joints = batch["past_joints_cam"] if "past_joints_cam" in batch else None
        if past_joints is not None and self.uses_motion_prior:
            if "past_states_cam" not in batch:
                raise KeyError("model.motion_prior=constant_velocity needs batch 'past_states_cam' [B, Fp, 52, 3]")
            past_joints = constant_velocity_anchor(past_joints, batch["past_states_cam"], self.head.time.out_features)
        joints_cam = self.head(torch.cat([past, pred], dim=1), past_joints, future_state)
        joints_world = camera_to_world(joints_cam, batch["cam_pose"])
        return {"pred_latents": pred, "joints_cam": joints_cam, "joints_world": joints_world}

    @property
    def uses_motion_prior(self) -> bool:
        """The head's offsets are taken around the constant-velocity extrapolation of the past
        state (``model.motion_prior``); never for vlm_only, which must not read the dense state."""
        return self.cfg.motion_prior == "constant_velocity" and self.cfg.variant != "vlm_only"

    @property
    def joint_scale(self) -> Tensor:
        """Unit of the joint loss (metres): the head's offset scale (1 until training sets it)."""
        return self.head.offset_scale

    def set_statistics(self, stats: Mapping[str, object]) -> None:
        """Train-split statistics the model keeps as buffers (saved in every checkpoint):
        ``offset_scale`` (float, RMS of the future-minus-last-pose offsets, metres) and
        ``guidance`` (``{stream: (mean, std)}`` of the pooled guidance, see GuidancePyramid)."""
        if "offset_scale" in stats and self.cfg.offset_scale and self.cfg.head_residual:
            self.head.set_offset_scale(float(stats["offset_scale"]))  # type: ignore[arg-type]
        if "guidance" in stats and self.pyramid is not None and self.cfg.guidance_norm:
            self.pyramid.set_normalization(stats["guidance"])  # type: ignore[arg-type]

    @torch.no_grad()
    def rollout(self, batch: Mapping[str, Tensor], steps: int, mode: RolloutMode = "shifted") -> dict[str, Tensor]:
        """The recursive forecast of ``_rollout``, without gradients (evaluation)."""
        return self._rollout(batch, steps, mode)

    def _rollout(self, batch: Mapping[str, Tensor], steps: int, mode: RolloutMode = "shifted") -> dict[str, Tensor]:
        """Recursive forecast (paper eq. 3-4): each step's predicted latents become the next
        step's context.

        ``mode`` says how:

        - ``shifted`` slides the window by one step's future: the next context is the newest
          ``Tp`` tubelets of [context; predicted]. While ``Tp > Tf`` the older part of it is
          still the observed past (frames before t: inputs, not targets), the rest is the
          model's own forecast; after enough steps it is forecast only.
        - ``predicted`` makes the predicted tubelets alone the next context, resampled in time
          to ``Tp`` (nearest of ``Tp`` evenly spaced ones, so it spans the whole forecast): from
          step 2 on, every input is the model's own output.

        With ``Tf == Tp`` both are the predicted tubelets themselves and coincide; they differ
        when the past is longer than one step's future (or shorter). The hand state follows
        the latents frame for frame (state tokens, ``past_states_cam``): ``shifted`` keeps the
        newest ``Fp`` frames of [observed states; forecast joints], ``predicted`` takes the
        forecast joints of the same resampled tubelets. The next step's state thus comes from
        observed frames before t or from the model's forecast, never from a ground-truth future.
        Every step reads the same thinker guidance (made from frames before t) and the camera
        pose of the last *observed* frame: a later one would be future information; forecast
        joints stay in that frame. The residual head's anchor (``past_joints_cam``) becomes
        the last forecast frame; under ``motion_prior: constant_velocity`` the next step's prior
        extrapolates the two newest states of the next context, in ``predicted`` mode both the
        model's own forecast (the last frames of its last forecast tubelet). Returns the steps concatenated along time: ``pred_latents``
        [B, steps*Tf, P, D], ``joints_cam`` / ``joints_world`` [B, steps*F, 52, 3]."""
        if steps < 1:
            raise ValueError(f"rollout needs steps >= 1, got {steps}")
        if mode not in ("shifted", "predicted"):
            raise ValueError(f"unknown rollout mode {mode!r}; expected 'shifted' or 'predicted'")
        n_past, n_future = self.predictor.n_past, self.predictor.n_future
        if mode == "predicted" and self.uses_motion_prior and self.state is not None and self.state.frames_per_tubelet < 2:
            # the resampled forecast may repeat its last tubelet: the two newest states would be one frame
            raise ValueError("model.motion_prior=constant_velocity in 'predicted' rollout needs >= 2 frames per future tubelet")
        resample = torch.linspace(0, n_future - 1, n_past).round().long()
        current = dict(batch)
        outs: list[dict[str, Tensor]] = []
        for _ in range(steps):
            out = self._step(current)
            outs.append(out)
            pred = out["pred_latents"]
            joints = out["joints_cam"]
            if mode == "shifted":
                context = torch.cat([current["past_latents"].to(pred.dtype), pred], dim=1)[:, -n_past:]
            else:
                context = pred[:, resample.to(pred.device)]
            current["past_latents"] = context
            if self.state is not None and "past_states_cam" in current:
                current["past_states_cam"] = self._next_states(current["past_states_cam"], joints, mode, resample)
            if "past_joints_cam" in current:
                current["past_joints_cam"] = joints[:, -1]
        return {k: torch.cat([o[k] for o in outs], dim=1) for k in outs[0]}

    def _next_states(self, states: Tensor, joints: Tensor, mode: RolloutMode, resample: Tensor) -> Tensor:
        """The next step's past states [B, Fp, 52, 3] from this step's [B, Fp, 52, 3] and its
        forecast joints [B, F, 52, 3] (camera frame), tubelet for tubelet like the latents."""
        assert self.state is not None
        joints = joints.to(states.dtype)
        if mode == "shifted":
            return torch.cat([states, joints], dim=1)[:, -self.state.n_frames :]
        fpt = self.state.frames_per_tubelet
        by_tubelet = joints.unflatten(1, (self.predictor.n_future, fpt))
        return by_tubelet[:, resample.to(joints.device)].flatten(1, 2)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters trained at ``train.lr_head``."""
        return self.head.parameters()

    def predictor_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters trained at ``train.lr_predictor``: predictor, pyramid and injection."""
        for name, p in self.named_parameters():
            if not name.startswith("head."):
                yield p

    @property
    def gates(self) -> Tensor | None:
        """The injection gates (tanh(g) scales each block's guidance); None without guidance."""
        return None if self.injection is None else self.injection.gates


def gates_tanh(model: nn.Module) -> list[float] | None:
    """``tanh(gate)`` per predictor block (how much guidance each lets in); None without
    guidance. Training logs these and evaluation reports them."""
    gates = getattr(model, "gates", None)
    return None if gates is None else [float(x) for x in torch.tanh(gates.detach().float().cpu())]
