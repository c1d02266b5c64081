"""Fixtures of the data tests: small synthetic datasets, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinkjepa.config import SamplingConfig
from thinkjepa.data.synth import synthesize_dataset

SYNTH_EPISODES = 16  # 4 task folders x 4 cue classes
SYNTH_SEED = 3


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize_dataset(root, SYNTH_EPISODES, seed=SYNTH_SEED)
    return root


@pytest.fixture(scope="session")
def synth_labels(synth_root: Path) -> dict:
    import json

    return json.loads((synth_root / "synth_labels.json").read_text())


@pytest.fixture
def demo_sampling() -> SamplingConfig:
    """The demo's windows: a dense past of 8, 8 targets, 8 thinker frames (needs >= 16 frames)."""
    return SamplingConfig(mode="stride", past_frames=8, future_frames=8, thinker_frames=8)
