"""The training-data brief `tj status` folds into the train stamp is kept between calls, and
computed afresh when the manifest or a store's folders changed; a torn kept file is ignored."""

from __future__ import annotations

import os
from pathlib import Path

from thinkjepa.config import load_config


def test_the_kept_training_data_brief_follows_its_inputs(tmp_path, monkeypatch):
    from cache_testdata import vlm_entry, vlm_meta

    import thinkjepa.cache_schema.record_listing as record_listing
    from thinkjepa.app.pipeline import _kept_training_data
    from thinkjepa.cache_schema import CacheWriter

    monkeypatch.setattr(record_listing, "RACY_S", -1.0)  # trusted at once: the files here are new
    cfg = load_config(None, [f"workdir={tmp_path / 'work'}"], use_default_file=False)
    manifest = cfg.path(cfg.data.manifest)
    manifest.parent.mkdir(parents=True)
    manifest.write_bytes(b"one")
    calls: list[int] = []

    def compute() -> dict[str, str]:
        calls.append(1)
        return {"n": str(len(calls))}

    assert _kept_training_data(cfg, compute) == {"n": "1"}
    assert _kept_training_data(cfg, compute) == {"n": "1"} and len(calls) == 1  # kept
    st = os.stat(manifest)
    manifest.write_bytes(b"two")  # same size: the mtime and the identity differ
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _kept_training_data(cfg, compute) == {"n": "2"}
    with CacheWriter(cfg.url(cfg.thinker.cache), vlm_meta(), part="shard-00000-of-00001") as w:
        w.commit(vlm_entry("t/0@8", 0, n_prefill=6, n_generated=2))  # a commit: the store's folders change
    assert _kept_training_data(cfg, compute) == {"n": "3"}
    assert _kept_training_data(cfg, compute) == {"n": "3"}
    kept = Path(cfg.workdir) / "state" / "listing" / "training-data.json"
    kept.write_text(kept.read_text()[:20])  # torn
    assert _kept_training_data(cfg, compute) == {"n": "4"}
