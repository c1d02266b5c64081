"""Readout head: past + predicted latents -> 52x3 joints per future frame.

Per tubelet an attention pool (one learned query, ``heads`` heads) over its P patch tokens
gives one vector per tubelet for the ``Tp + Tf`` tubelets; an MLP maps it to ``hidden``; a
Linear over the time axis resamples the ``Tp + Tf`` tubelets to the ``F`` future frames; a
last Linear gives 52x3 joints in the CAMERA frame of the last observed frame.

The time Linear starts as linear interpolation of the future tubelets onto the future frames
(past tubelets weighted 0), the role of the reference's temporal average pool, and is free
to learn from there. With ``residual`` the head predicts offsets from the last observed
joints (``past_joints_cam``), in units of ``offset_scale`` (a buffer: 1 until training sets it
to the train-split RMS of the offsets, then saved with the weights). Its output layer starts
small but not at zero: an untrained model forecasts within a few percent of "the hands stay
where they are", yet the first backward pass already reaches every layer behind the head (an
exactly-zero output layer gives the predictor and the guidance path exactly zero gradient).
The anchor may also be one pose per future frame: ``constant_velocity_anchor`` (the model's
``motion_prior``), around which the offsets start near zero in the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from thinkjepa.joints import N_JOINTS

from .predictor import LN_EPS, init_weights

OUT_INIT_STD = 1e-3
"""Residual head's output layer init: forecasts start ~1e-2 offset-RMS from the last pose."""


def interpolation_matrix(n_past: int, n_future: int, frames: int) -> Tensor:
    """[frames, n_past + n_future]: frame f as a linear blend of the future tubelets around it."""
    w = torch.zeros(frames, n_past + n_future)
    for f in range(frames):
        u = min(max((f + 0.5) * n_future / frames - 0.5, 0.0), n_future - 1.0)
        lo = int(u)
        hi = min(lo + 1, n_future - 1)
        frac = u - lo
        w[f, n_past + lo] += 1.0 - frac
        w[f, n_past + hi] += frac
    return w


class JointHead(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        n_tubelets_past: int,
        n_tubelets_future: int,
        future_frames: int,
        hidden: int = 512,
        heads: int = 8,
        residual: bool = True,
        n_joints: int = N_JOINTS,
        state_width: int = 0,
    ) -> None:
        """``state_width`` > 0: ``forward`` also takes the predictor's future state outputs
        [B, Tf, state_width], read two ways: added (through one Linear) to the future
        tubelets' features, and as a linear offset for each frame of the tubelet
        (``state_out``: the tubelet's query forecasts its own frames, no interpolation between
        tubelets) added to the forecast offsets, so a motion the state tokens carry reaches
        the joints without passing the output LayerNorm, which discards the scale of its input."""
        super().__init__()
        if latent_dim % heads:
            raise ValueError(f"latent dim {latent_dim} is not divisible by head_heads={heads}")
        self.n_joints, self.residual = n_joints, residual
        self.n_tubelets = n_tubelets_past + n_tubelets_future
        self.norm = nn.LayerNorm(latent_dim, eps=LN_EPS)
        self.query = nn.Parameter(torch.zeros(1, 1, latent_dim))
        self.pool = nn.MultiheadAttention(latent_dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(latent_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.time = nn.Linear(self.n_tubelets, future_frames)
        self.out = nn.Sequential(nn.GELU(), nn.LayerNorm(hidden, eps=LN_EPS), nn.Linear(hidden, n_joints * 3))
        self.apply(init_weights)
        nn.init.trunc_normal_(self.query, std=0.02)
        with torch.no_grad():
            self.time.weight.copy_(interpolation_matrix(n_tubelets_past, n_tubelets_future, future_frames))
            self.time.bias.zero_()
            if residual:
                nn.init.trunc_normal_(self.out[-1].weight, std=OUT_INIT_STD)
        self.register_buffer("offset_scale", torch.ones(()))
        self.n_past = n_tubelets_past
        self.state_in: nn.Linear | None = None
        self.state_out: nn.Linear | None = None
        if state_width:
            if future_frames % n_tubelets_future:
                raise ValueError(f"{future_frames} future frames are not a multiple of {n_tubelets_future} tubelets")
            self.state_in = nn.Linear(state_width, hidden)
            self.state_out = nn.Linear(state_width, future_frames // n_tubelets_future * n_joints * 3)
            init_weights(self.state_in)
            init_weights(self.state_out)
            with torch.no_grad():
                nn.init.trunc_normal_(self.state_out.weight, std=OUT_INIT_STD)

    def set_offset_scale(self, scale: float) -> None:
        if not scale > 0:
            raise ValueError(f"offset scale must be positive, got {scale}")
        self.offset_scale.fill_(float(scale))

    def forward(self, latents: Tensor, past_joints_cam: Tensor | None = None, future_state: Tensor | None = None) -> Tensor:
        """latents [B, Tp+Tf, P, D] (past then predicted) -> joints_cam [B, F, J, 3]."""
        B, S, P, D = latents.shape
        if S != self.n_tubelets:
            raise ValueError(f"head built for {self.n_tubelets} tubelets, got {S}")
        tokens = self.norm(latents.reshape(B * S, P, D))
        pooled, _ = self.pool(self.query.expand(B * S, -1, -1).to(tokens.dtype), tokens, tokens, need_weights=False)
        h = self.mlp(pooled.reshape(B, S, D))  # [B, S, hidden]
        if (future_state is None) != (self.state_in is None):
            raise ValueError("the head reads the predicted state exactly when it was built with state_width")
        if self.state_in is not None and future_state is not None:
            h = torch.cat([h[:, : self.n_past], h[:, self.n_past :] + self.state_in(future_state.to(h.dtype))], dim=1)
        h = self.time(h.transpose(1, 2)).transpose(1, 2)  # [B, F, hidden]
        joints = self.out(h)
        if self.state_out is not None and future_state is not None:
            # [B, Tf, fpt*J*3] -> [B, F, J*3]: each tubelet's query gives its own frames
            joints = joints + self.state_out(future_state.to(h.dtype)).reshape(B, -1, joints.shape[-1])
        joints = joints.unflatten(-1, (self.n_joints, 3))
        if self.residual:
            joints = joints * self.offset_scale.to(joints.dtype)
        if self.residual and past_joints_cam is not None:
            # [B, J, 3]: one anchor for every frame (the last pose); [B, F, J, 3]: one per frame (a motion prior)
            anchor = past_joints_cam[:, None] if past_joints_cam.dim() == 3 else past_joints_cam
            if anchor.shape not in ((B, 1, self.n_joints, 3), (B, joints.shape[1], self.n_joints, 3)):
                raise ValueError(f"past_joints_cam has shape {tuple(past_joints_cam.shape)}; expected "
                                 f"{(B, self.n_joints, 3)} or {(B, joints.shape[1], self.n_joints, 3)}")
            joints = joints + anchor.to(joints.dtype)
        return joints


def constant_velocity_anchor(last: Tensor, states: Tensor, frames: int) -> Tensor:
    """The constant-velocity extrapolation [B, F, J, 3] that the residual head adds its offsets
    to under ``model.motion_prior: constant_velocity``: future frame k (1..F) gets
    ``last + k * (states[:, -1] - states[:, -2])``, from the last observed pose ``last`` [B, J, 3]
    and the past states [B, Fp, J, 3] (camera frame of the last observed frame, frames evenly
    spaced like the future ones: ``sampling.stride``). It is the ``constant_velocity`` baseline
    of evaluate/windows.py, computed from model inputs only.

    Residual-over-physics is the standard practice in trajectory forecasting, where constant
    velocity is a strong baseline that learned forecasters often fail to beat (Schöller et al.,
    "What the Constant Velocity Model Can Teach Us About Pedestrian Motion Prediction", IEEE
    RA-L 2020): with the head's output starting near zero (``OUT_INIT_STD``) the model starts at
    constant velocity and training has to learn only the deviation from it (here: the turn,
    which only the cue announces)."""
    if states.dim() != 4 or states.shape[1] < 2 or states.shape[0] != last.shape[0] or states.shape[2:] != last.shape[1:]:
        raise ValueError(f"a constant-velocity prior needs past_states_cam [B, >=2, J, 3] matching the last pose "
                         f"{tuple(last.shape)}, got {tuple(states.shape)}")
    velocity = (states[:, -1] - states[:, -2]).to(last.dtype)
    k = torch.arange(1, frames + 1, dtype=last.dtype, device=last.device)
    return last[:, None] + k[None, :, None, None] * velocity[:, None]


def camera_to_world(joints_cam: Tensor, cam_pose: Tensor) -> Tensor:
    """``R @ x + t`` with the camera-to-world pose [B, 4, 4] of the last observed frame."""
    if cam_pose.shape[-2:] != (4, 4) or cam_pose.shape[0] != joints_cam.shape[0]:
        raise ValueError(f"cam_pose has shape {tuple(cam_pose.shape)}; expected [B, 4, 4]")
    pose = cam_pose.to(joints_cam.dtype)
    rot, trans = pose[:, :3, :3], pose[:, :3, 3]
    return torch.einsum("bij,bfkj->bfki", rot, joints_cam) + trans[:, None, None, :]
