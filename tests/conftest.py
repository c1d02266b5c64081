"""Shared test fixtures. Stage-specific fixtures live in each tests/<stage>/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No hub is reachable: everything loads from local folders built by the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# the stage fixtures (tiny dataset, tiny V-JEPA2, both caches): shared by tests/extract (encode),
# tests/train and tests/evaluate, built once per session
pytest_plugins = ["stage_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]
EGODEX_FIXTURES = Path(os.environ.get("THINKJEPA_EGODEX_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures" / "egodex"))


@pytest.fixture(scope="session")
def egodex_root() -> Path:
    """The three real EgoDex sample episodes (read-only; never copied into the repo)."""
    if not (EGODEX_FIXTURES / "sort_beads" / "9.hdf5").exists():
        raise FileNotFoundError(
            f"EgoDex fixtures not found at {EGODEX_FIXTURES}; clone the project next to shared/ "
            "or set THINKJEPA_EGODEX_FIXTURES"
        )
    return EGODEX_FIXTURES


# Engine start (vLLM through the session fixture `vllm_thinker`, or anything built on it) takes
# minutes on 2 cores: such tests join the slow tier (`pytest -m "not slow"` skips them; CI runs all).
SLOW_FIXTURES = frozenset({"vllm_thinker"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
