"""Shard planning, prompt filling and fingerprints: the pure logic behind the shard runner."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from thinkjepa.config import ThinkerConfig
from thinkjepa.extract.fingerprint import vlm_entry_fingerprint
from thinkjepa.extract.prompt import build_prompt, prompt_values, validate_template
from thinkjepa.shards import (
    parse_part_name,
    part_name,
    plan_shards,
    select_shard,
    shard_of,
    validate_shard,
)


def _random_clip_ids(rng: random.Random, n: int) -> list[str]:
    tasks = [f"task_{rng.randrange(200)}" for _ in range(n)]
    return sorted({f"{t}/{rng.randrange(10_000)}" for t in tasks})


@pytest.mark.parametrize("seed", range(25))
def test_adding_clips_never_moves_existing_clips(seed: int) -> None:
    rng = random.Random(seed)
    count = rng.randint(1, 17)
    before = _random_clip_ids(rng, rng.randint(1, 300))
    added = _random_clip_ids(rng, rng.randint(1, 300))
    after = list(before) + [c for c in added if c not in set(before)]
    rng.shuffle(after)  # manifest order must not matter either
    plan_before = plan_shards(before, count)
    plan_after = plan_shards(after, count)
    for i in range(count):
        assert set(plan_before[i]) <= set(plan_after[i])
        assert select_shard(after, i, count) == plan_after[i]
    # A partition: every clip in exactly one shard.
    flat = [c for shard in plan_after for c in shard]
    assert sorted(flat) == sorted(after)


def test_shards_are_balanced_and_independent_of_process() -> None:
    clips = [f"task_{i % 97}/{i}" for i in range(4000)]
    sizes = [len(s) for s in plan_shards(clips, 8)]
    assert sum(sizes) == 4000
    assert min(sizes) > 400 and max(sizes) < 600, sizes
    # Defined by sha256, so a clip id has the same shard on every machine, process and Python
    # version (Python's own str hash is salted per process).
    for clip in ("sort_beads/9", "lock_unlock_key/9", "a/b"):
        for n in (1, 2, 3, 8, 1000):
            assert shard_of(clip, n) == int(hashlib.sha256(clip.encode()).hexdigest(), 16) % n


def test_part_names_and_specs() -> None:
    assert part_name(3, 8) == "shard-00003-of-00008"
    assert parse_part_name("shard-00003-of-00008") == (3, 8)
    assert parse_part_name("something-else") is None
    for bad in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError):
            validate_shard(*bad)
    with pytest.raises(ValueError):
        part_name(8, 8)


def test_prompt_from_full_metadata() -> None:
    meta = {
        "task": "lock_unlock_key",
        "description": "pick up the lock, lock the lock.",
        "environment": "tablecloth:none, position:sitting",
        "llm_description": "Pick up the pink lock and lock it using the key.",
        "llm_objects": np.array(["key", "lock"], dtype=object),
        "llm_verbs": np.array(["lock", "unlock"], dtype=object),
    }
    tpl = "Task: {task}. Scene: {description}. Env: {environment}. Objects: {objects}. Verbs: {verbs}. {llm_description}"
    assert build_prompt(tpl, meta) == (
        "Task: lock unlock key. Scene: pick up the lock, lock the lock. Env: tablecloth:none, position:sitting. "
        "Objects: key, lock. Verbs: lock, unlock. Pick up the pink lock and lock it using the key"
    )


def test_prompt_defaults_never_crash() -> None:
    tpl = "Describe this video. Task: {task}. Scene: {description}. Environment: {environment}."
    # No metadata at all: the task comes from the clip id, the rest from defaults.
    p = build_prompt(tpl, {}, clip_id="sort_beads/9")
    assert p.startswith("Describe this video. Task: sort beads. Scene: ")
    assert "{" not in p and "None" not in p
    # Missing description falls back to the LLM description; "None" strings, NaN, bytes and
    # empty arrays count as missing.
    v = prompt_values({"llm_description": b"Charge the AirPods.", "description": "None",
                       "environment": float("nan"), "llm_verbs": np.array([], dtype=object)})
    assert v["description"] == "Charge the AirPods"
    assert v["environment"] == "unspecified" and v["verbs"] == "unspecified"


def test_prompt_template_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="weather"):
        validate_template("Describe {weather}.")
    with pytest.raises(ValueError, match="positional"):
        validate_template("Describe {}.")
    with pytest.raises(ValueError):
        validate_template("Describe {task")
    validate_template("Literal {{braces}} and {task}")


def test_fingerprint_tracks_what_changes_the_arrays() -> None:
    base = ThinkerConfig()
    fp = lambda cfg, text="a", frames=(0, 1): vlm_entry_fingerprint(  # noqa: E731
        cfg, layer_convention="conv", user_text=text, frame_indices=frames
    )
    ref = fp(base)
    assert fp(ThinkerConfig()) == ref
    # Settings that do not change the numbers keep entries fresh.
    assert fp(base.model_copy(update={"clips_per_call": 3, "tensor_parallel_size": 4})) == ref
    changed = [
        fp(base, text="b"),
        fp(base, frames=(0, 2)),
        fp(base.model_copy(update={"prompt_template": "x {task}"})),
        fp(base.model_copy(update={"max_new_tokens": 3})),
        fp(base.model_copy(update={"frame_size": 128})),
        fp(base.model_copy(update={"layers": [0, 1]})),
        fp(base.model_copy(update={"revision": "abc"})),
        fp(base.model_copy(update={"storage_dtype": "float32"})),
        vlm_entry_fingerprint(base, layer_convention="other", user_text="a", frame_indices=(0, 1)),
    ]
    assert ref not in changed and len(set(changed)) == len(changed)
