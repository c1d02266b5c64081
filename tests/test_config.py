"""pipelines.yaml loading: overrides, variants, validation, fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from thinkjepa.config import REFERENCE_LAYERS, load_config, save_config

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_repo_pipelines_yaml_holds_the_reference_settings():
    cfg = load_config(REPO_ROOT / "pipelines.yaml")
    assert cfg.thinker.model == "Qwen/Qwen3-VL-2B-Thinking"
    assert cfg.thinker.layers == REFERENCE_LAYERS == [0, 4, 8, 12, 16, 20, 24, 27]
    assert (cfg.thinker.max_new_tokens, cfg.thinker.frame_size, cfg.thinker.max_prefill_tokens) == (16, 256, 1280)
    assert (cfg.model.pred_depth, cfg.model.pred_width, cfg.model.pred_heads) == (12, 384, 6)
    assert (cfg.train.lr_predictor, cfg.train.lr_head, cfg.train.batch_size) == (1e-4, 1e-3, 16)
    assert cfg.data.split_seed == 42 and cfg.sampling.mode == "split_half"


def test_overrides_are_typed_and_validated(tmp_path):
    cfg = load_config(REPO_ROOT / "pipelines.yaml", ["thinker.layers=[1, 2]", "train.epochs=3", "data.root=/x"])
    assert cfg.thinker.layers == [1, 2] and cfg.train.epochs == 3 and cfg.data.root == "/x"
    with pytest.raises(Exception, match="thinker"):
        load_config(REPO_ROOT / "pipelines.yaml", ["thinker.bogus=1"])  # unknown keys are refused
    with pytest.raises(ValueError, match="dotted.key=value"):
        load_config(None, ["no_equals_sign"], use_default_file=False)


def test_variants_and_saved_config_round_trip(tmp_path):
    cfg = load_config(REPO_ROOT / "pipelines.yaml")
    assert cfg.for_variant("prefill_only").model.streams == "prefill"
    assert cfg.for_variant("vlm_only").model.variant == "vlm_only"
    assert cfg.for_variant("jepa_matched").model.variant == "jepa_matched"
    with pytest.raises(KeyError, match="unknown variant"):
        cfg.for_variant("nope")
    saved = save_config(cfg, tmp_path)
    assert load_config(saved) == cfg
    assert yaml.safe_load(saved.read_text())["thinker"]["layers"] == REFERENCE_LAYERS


def test_section_fingerprints_change_only_with_their_section():
    a = load_config(None, [], use_default_file=False)
    b = load_config(None, ["train.epochs=1"], use_default_file=False)
    assert a.section_fingerprint("thinker") == b.section_fingerprint("thinker")
    assert a.section_fingerprint("train") != b.section_fingerprint("train")


def test_variant_typos_and_unsafe_names_fail_when_the_config_loads():
    import pytest as _pytest

    from thinkjepa.config import PipelineConfig

    with _pytest.raises(ValueError, match="variant 'fast' does not apply"):
        PipelineConfig.model_validate({"variants": {"fast": {"model.strams": "prefill"}}})
    with _pytest.raises(ValueError, match="variant name '../escape'"):
        PipelineConfig.model_validate({"variants": {"../escape": {"model.streams": "prefill"}}})
    with _pytest.raises(ValueError, match=r"eval.variants names unknown variant\(s\) \['jepa_onyl'\]"):
        PipelineConfig.model_validate({"eval": {"variants": ["thinkjepa", "jepa_onyl"]}})
    cfg = PipelineConfig.model_validate({"variants": {"prefill_only": {"model.streams": "prefill"}},
                                         "eval": {"variants": ["thinkjepa", "prefill_only"]}})
    assert cfg.for_variant("prefill_only").model.streams == "prefill"
