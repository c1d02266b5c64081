"""The provenance helpers: code digests that ignore comments, models identified by content,
changes described in the user's words."""

from __future__ import annotations

import shutil

from thinkjepa import provenance


def test_code_digests_ignore_comments_and_docstrings_but_not_code(tmp_path) -> None:
    pkg = tmp_path / "train"
    pkg.mkdir()
    mod = pkg / "pooling.py"
    mod.write_text('"""Pooling."""\n\ndef pool(x):\n    """Mean."""\n    return x.mean()  # over tokens\n')
    before = provenance.code_digest(["train/*.py"], tmp_path)
    mod.write_text('"""Pooling, reworded."""\n# a new comment\n\ndef pool(x):\n    """Mean!"""\n\n    return x.mean()\n')
    assert provenance.code_digest(["train/*.py"], tmp_path) == before
    mod.write_text('"""Pooling."""\n\ndef pool(x):\n    return x.max()\n')
    after = provenance.code_digest(["train/*.py"], tmp_path)
    assert provenance.describe_changes({"code": before}, {"code": after}) == ["train/pooling.py changed"]
    (pkg / "extra.py").write_text("X = 1\n")
    assert provenance.code_files(["train/*.py", "!train/extra.py"], tmp_path) == ["train/pooling.py"]


def test_a_local_model_is_identified_by_its_files_not_its_path(tmp_path) -> None:
    model = tmp_path / "a" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    (model / "README.md").write_text("not part of the identity")
    first = provenance.model_identity(str(model))
    moved = tmp_path / "b" / "tiny"
    shutil.copytree(model, moved)
    assert provenance.model_identity(str(moved)) == first
    (moved / "config.json").write_text('{"hidden_size": 16}')
    changed = provenance.model_identity(str(moved))
    assert provenance.describe_changes({"models": {"thinker": first}}, {"models": {"thinker": changed}}) == [
        "thinker model files changed (config.json)"]


def test_engine_and_hub_revision_changes_are_named(monkeypatch) -> None:
    old = {"engines": {"vllm": "0.32.0"}, "models": {"thinker": {"hub": "Qwen/Qwen3-VL-2B-Thinking", "revision": "abc"}}}
    new = {"engines": {"vllm": "0.33.0"}, "models": {"thinker": {"hub": "Qwen/Qwen3-VL-2B-Thinking", "revision": "def"}}}
    assert provenance.describe_changes(old, new) == ["vllm 0.32.0 -> 0.33.0", "thinker revision abc -> def"]
    monkeypatch.setitem(provenance.ENGINE_OVERRIDES, "torch", "0.0.1")
    assert provenance.stage_inputs("train")["engines"] == {"torch": "0.0.1"}
    assert provenance.digest({"b": 1, "a": 2}) == provenance.digest({"a": 2, "b": 1})
