"""The 52-joint hand skeleton: the one home of the joint list and its order.

Order per hand follows the reference code: the 24 finger joints (thumb 4, then index,
middle, ring, little with 5 each), then ``Hand`` (wrist) and ``Forearm``. Left hand first.
Names are EgoDex's HDF5 keys under ``transforms/`` and ``confidences/``.
"""

from __future__ import annotations

HANDS: tuple[str, ...] = ("left", "right")

THUMB: tuple[str, ...] = (
    "ThumbKnuckle",
    "ThumbIntermediateBase",
    "ThumbIntermediateTip",
    "ThumbTip",
)
FINGERS: tuple[str, ...] = ("IndexFinger", "MiddleFinger", "RingFinger", "LittleFinger")
FINGER_SEGMENTS: tuple[str, ...] = ("Metacarpal", "Knuckle", "IntermediateBase", "IntermediateTip", "Tip")

FINGER_JOINTS: tuple[str, ...] = THUMB + tuple(f + s for f in FINGERS for s in FINGER_SEGMENTS)
HAND_JOINTS: tuple[str, ...] = FINGER_JOINTS + ("Hand", "Forearm")
JOINTS: tuple[str, ...] = tuple(h + j for h in HANDS for j in HAND_JOINTS)

N_JOINTS_PER_HAND = len(HAND_JOINTS)
N_JOINTS = len(JOINTS)
WRIST_INDEX = {h: i * N_JOINTS_PER_HAND + HAND_JOINTS.index("Hand") for i, h in enumerate(HANDS)}

assert len(FINGER_JOINTS) == 24 and N_JOINTS_PER_HAND == 26 and N_JOINTS == 52
