"""save_pretrained / from_pretrained: a saved model rebuilds without the training folder and
forecasts bit for bit the same on CPU; the folder holds safetensors, config.json and a model card;
a folder that is not a saved model is refused with its path."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from test_model import build, make_batch, open_gates

from thinkjepa.train.hub import CARD, CONFIG, WEIGHTS, model_card, read_config
from thinkjepa.train.model import ThinkJEPA


@pytest.mark.parametrize("overrides", [{}, {"injection": "cross_attn"}, {"variant": "jepa_only"}])
def test_from_pretrained_reproduces_forecasts_bit_for_bit(tmp_path, overrides):
    torch.set_num_threads(1)
    model = build(seed=3, **overrides)
    if model.gates is not None:
        open_gates(model)  # zero gates would hide a guidance module that failed to load
    model.set_statistics({"offset_scale": 0.037})  # buffers travel too
    batch = make_batch(b=4, seed=1)
    with torch.no_grad():
        before = model(batch)
        roll = model.rollout(batch, 2)
    folder = model.save_pretrained(tmp_path / "m", {"variant": model.cfg.variant, "seed": 3, "eval_table": "| a |\n|---|\n| 1 |"})
    loaded = ThinkJEPA.from_pretrained(folder)
    assert not loaded.training and type(loaded) is ThinkJEPA
    with torch.no_grad():
        after = loaded(batch)
        roll2 = loaded.rollout(batch, 2)
    for k in before:
        assert torch.equal(before[k], after[k]), k
        assert torch.equal(roll[k], roll2[k]), k
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    conf = json.loads((folder / CONFIG).read_text())
    assert conf["class"] == "ThinkJEPA" and conf["model_cfg"]["variant"] == model.cfg.variant and conf["seed"] == 3
    assert conf["model_args"]["latent_dim"] == 32 and "pretrained" not in conf["model_args"]
    with safe_open(str(folder / WEIGHTS), "pt") as f:
        assert set(f.keys()) <= set(sd) and f.metadata()["format"] == "thinkjepa-pretrained"
    card = (folder / CARD).read_text()
    assert card.startswith("---\nlibrary_name: thinkjepa") and "ThinkJEPA.from_pretrained" in card and "| 1 |" in card


def test_a_folder_that_is_no_saved_model_is_refused_with_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ThinkJEPA.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a saved model folder"):
        ThinkJEPA.from_pretrained(tmp_path / "nowhere" / "deeper")
    folder = build().save_pretrained(tmp_path / "m")
    conf = json.loads((folder / CONFIG).read_text())
    (folder / CONFIG).write_text(json.dumps({**conf, "format_version": 99}))
    with pytest.raises(ValueError, match="v99"):
        read_config(folder)


def test_model_card_states_training_config_data_digest_and_eval_table():
    conf = {"model_cfg": {"variant": "thinkjepa"}, "model_args": {"latent_dim": 8}}
    card = model_card(conf, {"variant": "thinkjepa", "seed": 1, "training_config": {"train": {"lr_head": 0.001}},
                             "data_digest": {"manifest": "abc123"}, "step": 40})
    assert "training seed 1" in card and "lr_head: 0.001" in card and "`manifest`: `abc123`" in card and "- step: 40" in card
    assert "## Evaluation\n\nNot evaluated when this model was saved" in card


def test_a_failed_export_after_training_warns_naming_the_run(tmp_path):
    from thinkjepa.train.export import export_after_training

    with pytest.warns(UserWarning, match=f"{tmp_path}: trained, but saving pretrained/ failed"):
        assert export_after_training(tmp_path) is None
    assert not (tmp_path / "pretrained").exists()
