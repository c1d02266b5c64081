"""One training run opens each cache once, and logs its scalars through accelerate's trackers."""

from __future__ import annotations

from collections import Counter

import pytest
from stage_fixtures import private_copy

from thinkjepa.cache_schema import reader as reader_mod
from thinkjepa.train.loop import run_training


@pytest.mark.slow
def test_a_training_run_opens_each_cache_once(tiny_pipeline, tmp_path, monkeypatch) -> None:
    cfg = private_copy(tiny_pipeline, tmp_path, max_steps=2, batch_size=2, checkpoint_every=100)
    opens: Counter[str] = Counter()
    original = reader_mod.CacheReader.__init__

    def counting(self, url, *args, **kwargs):
        opens[str(url)] += 1
        original(self, url, *args, **kwargs)

    monkeypatch.setattr(reader_mod.CacheReader, "__init__", counting)
    run_training(cfg, "thinkjepa", progress=False)
    print("cache opens per training run:", dict(opens))
    assert dict(opens) == {cfg.url(cfg.encoder.cache): 1, cfg.url(cfg.thinker.cache): 1}


@pytest.mark.slow
def test_tensorboard_gets_the_train_val_and_lr_scalars(tiny_pipeline, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = private_copy(tiny_pipeline, tmp_path, max_steps=2, batch_size=2, checkpoint_every=100)
    run = run_training(cfg, "jepa_only", progress=False)
    events = EventAccumulator(str(run / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    print("tensorboard scalar tags:", sorted(tags))
    assert {"val/ADE", "val/FDE", "val/Acc", "train/loss", "train/ade"} <= tags
    assert any(t.startswith("lr/") for t in tags)
    assert [e.step for e in events.Scalars("val/ADE")] == [0, 2]

    quiet = private_copy(tiny_pipeline, tmp_path / "quiet", max_steps=2, batch_size=2, checkpoint_every=100,
                         log_with=["none"])
    assert not (run_training(quiet, "jepa_only", progress=False) / "tb").exists()
