"""Checkpoints load with weights_only=True, restore every RNG, and refuse crafted payloads."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from thinkjepa.train.checkpoint import (
    build_payload,
    capture_rng,
    load_checkpoint,
    rank_states,
    restore_rng,
    save_atomic,
)


def _payload() -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    return build_payload(model_state=model.state_dict(), optimizer_state=opt.state_dict(),
                         scheduler_state=sched.state_dict(),
                         train_state={"step": 1, "epoch": 0, "batch_in_epoch": 1, "val": {"ADE": 0.1}, "val_history": [],
                                      "best_val_ade": None},
                         model_args={"latent_dim": 4}, model_cfg={"variant": "thinkjepa"}, variant="thinkjepa",
                         fingerprint="abc")


def test_roundtrip_with_weights_only_restores_every_rng(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    payload = _payload()
    path = save_atomic(payload, tmp_path / "run" / "last.pt")
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp left behind
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    loaded = load_checkpoint(path)
    (record,) = rank_states(loaded)
    assert (record["rank"], record["epoch"], record["batch_in_epoch"]) == (0, 0, 1)
    restore_rng(record["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want
    assert torch.equal(loaded["model"]["weight"], payload["model"]["weight"])
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)
    opt = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    opt.load_state_dict(loaded["optimizer"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_payload_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"format_version": 2, "x": _Evil()}, path)
    with pytest.raises(ValueError, match="refusing to load a checkpoint"):
        load_checkpoint(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=str(path)):
        load_checkpoint(path)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_are_an_unreadable_checkpoint_and_are_set_aside(tmp_path, seed):
    # random bytes fail anywhere in the unpickler (IndexError, KeyError, ... not only
    # UnpicklingError); every way must read as "damaged", which the resume policy sets aside
    from thinkjepa.train.checkpoint import resume_decision

    path = tmp_path / "last.pt"
    save_atomic(_payload(), path)
    good = path.read_bytes()
    rng = random.Random(seed)
    path.write_bytes(bytes(rng.randrange(256) for _ in range(4096)) if seed % 2 else good[:8] + rng.randbytes(len(good) - 8))
    with pytest.raises(ValueError, match=rf"{path}: unreadable checkpoint|{path}: refusing to load"):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="last.pt"):
        assert resume_decision(tmp_path, "abc", {}, "auto") == [path]


def test_capture_rng_is_plain():
    state = capture_rng()
    assert isinstance(state["numpy"]["key"], torch.Tensor) and state["numpy"]["name"] == "MT19937"
