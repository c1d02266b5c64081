"""Observed hand state as predictor input tokens (``ModelConfig.state_tokens``).

V-JEPA2-AC (facebookresearch/vjepa2, ``src/models/ac_predictor.py``) feeds its predictor one
state token per frame beside the frame's patch tokens: the robot's end-effector state is
observed, so the world model does not have to recover it from pixels. Here the state is the
52 hand joints of every past frame (batch ``past_states_cam`` [B, Fp, 52, 3]) in the camera
frame of the last observed frame, the frame the head already predicts in, so a past pose and
a forecast pose are directly comparable (and a rollout can feed forecasts back as state).

One token per past tubelet: the joints of the tubelet's ``Fp / Tp`` frames, each as its offset
from the last observed pose in units of the head's offset scale (the train-split RMS of the
future offsets; this makes the motion, not the hand's place in the image, the feature that is
of order one) and as the absolute camera-frame position, flattened, projected by one Linear
to the predictor width, plus a learned embedding per tubelet. The predictor rotates a state
token by its tubelet's time only (3D RoPE time channels; row and column channels unrotated),
as V-JEPA2-AC's ``ACRoPEAttention`` treats its action/state tokens.

Every input is from frames before t. Why this reaches constant velocity where the latents do
not: the random tiny V-JEPA2 latents predict the past displacement of the hands with R^2 <= 0
(REFERENCE.md section 7), so the dense branch has no velocity to extrapolate; the state
tokens carry the last poses themselves, and a constant-velocity forecast is a linear function
of the two newest of them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from thinkjepa.joints import N_JOINTS


class StateTokens(nn.Module):
    """[B, Fp, 52, 3] past joints (camera frame) + [B, 52, 3] last observed pose -> [B, Tp, width]."""

    def __init__(self, n_tubelets_past: int, frames_per_tubelet: int, width: int, n_joints: int = N_JOINTS) -> None:
        super().__init__()
        if frames_per_tubelet < 1:
            raise ValueError(f"state tokens need at least one frame per tubelet, got {frames_per_tubelet}")
        self.n_tubelets, self.frames_per_tubelet, self.n_joints = n_tubelets_past, frames_per_tubelet, n_joints
        self.proj = nn.Linear(2 * frames_per_tubelet * n_joints * 3, width)
        self.pos = nn.Parameter(torch.zeros(1, n_tubelets_past, width))
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        nn.init.trunc_normal_(self.pos, std=0.02)

    @property
    def n_frames(self) -> int:
        """Past frames the tokens read (``Tp * frames_per_tubelet``)."""
        return self.n_tubelets * self.frames_per_tubelet

    def forward(self, states: Tensor, anchor: Tensor, scale: Tensor) -> Tensor:
        B = states.shape[0]
        if states.shape[1:] != (self.n_frames, self.n_joints, 3):
            raise ValueError(
                f"past_states_cam has shape {tuple(states.shape)}; the model was built for "
                f"[B, {self.n_frames}, {self.n_joints}, 3] ({self.n_tubelets} tubelets x {self.frames_per_tubelet} frames)"
            )
        dtype = self.proj.weight.dtype
        states = states.to(dtype)
        rel = (states - anchor.to(dtype)[:, None]) / scale.to(dtype)
        feats = torch.cat([rel, states], dim=-1).reshape(B, self.n_tubelets, -1)
        return self.proj(feats) + self.pos.to(dtype)

    def blank(self, batch_size: int) -> Tensor:
        """The tokens of a zeroed state (bias + position only), for a variant that must not
        see the dense branch (vlm_only): built without any input, so none can be read.
        Through ``proj`` so every parameter stays in the graph (DDP)."""
        zeros = self.proj.weight.new_zeros(batch_size, self.n_tubelets, self.proj.in_features)
        return self.proj(zeros) + self.pos


__all__ = ["StateTokens"]
