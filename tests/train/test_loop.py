"""The training loop: exact resume after a kill, stop on SIGTERM, best checkpoint by val ADE
(with the test split never read), a tiny overfit, and the ``tj-train`` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from accelerate.utils import set_seed
from typer.testing import CliRunner

from thinkjepa.config import PipelineConfig, save_config
from thinkjepa.train import dataset as dataset_mod
from thinkjepa.train.checkpoint import checkpoint_path, load_checkpoint, load_trained_model
from thinkjepa.train.dataset import EpochBatchSampler, WindowDataset, make_loader, split_windows
from thinkjepa.train.loop import TrainingStopped, run_training
from thinkjepa.train.model import ThinkJEPA
from thinkjepa.train.validate import evaluate_loader

# batch 1 -> 4 steps per epoch, validation at every epoch end; checkpoints at steps 3, 6, 9, 12
RESUME = {"epochs": 3, "batch_size": 1, "checkpoint_every": 3, "eval_every": 1}


def _with(cfg: PipelineConfig, out, **train) -> PipelineConfig:
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"out": str(out), **train})})


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)


@pytest.fixture(scope="module")
def uninterrupted(tiny_pipeline, tmp_path_factory):
    cfg = _with(tiny_pipeline, tmp_path_factory.mktemp("runA"), **RESUME)
    # Bitwise parity needs the same reduction order in every process: earlier tests (the vLLM
    # engine among them) may have changed this process's thread count.
    torch.set_num_threads(1)
    run = run_training(cfg, "thinkjepa", progress=False)
    return cfg, run


@pytest.mark.slow  # > 20 s on 2 shared cores
def test_a_killed_run_resumes_to_the_same_weights(tiny_pipeline, uninterrupted, tmp_path) -> None:
    _, run_a = uninterrupted
    cfg = _with(tiny_pipeline, tmp_path / "runB", **RESUME)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    script = textwrap.dedent("""
        import os, signal, sys
        import torch
        torch.set_num_threads(1)
        from thinkjepa.config import PipelineConfig
        from thinkjepa.train.loop import run_training

        cfg = PipelineConfig.model_validate_json(open(sys.argv[1]).read())

        def on_step(step):
            if step == 7:  # last.pt holds step 6 (mid-epoch); step 7 is lost and redone
                os.kill(os.getpid(), signal.SIGKILL)

        run_training(cfg, "thinkjepa", on_step=on_step, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cfg.json")], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    killed = load_checkpoint(checkpoint_path(tmp_path / "runB" / "thinkjepa" / "seed-0"))
    assert killed["train_state"]["step"] == 6 and killed["train_state"]["batch_in_epoch"] == 2
    torch.set_num_threads(1)
    run_b = run_training(cfg, "thinkjepa", progress=False)
    a, b = load_checkpoint(checkpoint_path(run_a)), load_checkpoint(checkpoint_path(run_b))
    assert a["train_state"]["step"] == b["train_state"]["step"] == 12
    _assert_same_weights(a, b)
    assert a["train_state"]["val_history"] == b["train_state"]["val_history"]
    _assert_same_weights(load_checkpoint(checkpoint_path(run_a, "best")), load_checkpoint(checkpoint_path(run_b, "best")))


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_then_resume_matches(tiny_pipeline, uninterrupted, tmp_path) -> None:
    _, run_a = uninterrupted
    cfg = _with(tiny_pipeline, tmp_path, **RESUME)

    def on_step(step: int) -> None:
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingStopped, match="SIGTERM at step 5"):
        run_training(cfg, "thinkjepa", on_step=on_step, progress=False)
    stopped = load_checkpoint(checkpoint_path(tmp_path / "thinkjepa" / "seed-0"))
    assert stopped["train_state"]["step"] == 5 and stopped["train_state"]["epoch"] == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler removed again
    run_c = run_training(cfg, "thinkjepa", progress=False)
    _assert_same_weights(load_checkpoint(checkpoint_path(run_a)), load_checkpoint(checkpoint_path(run_c)))


@pytest.mark.slow
def test_best_checkpoint_is_chosen_on_val_and_the_test_split_is_never_read(
    tiny_pipeline, tmp_path, monkeypatch
) -> None:
    constructed: list[str] = []
    served: set[str] = set()

    class Recording(WindowDataset):
        def __init__(self, cfg, split, **kw):
            constructed.append(split)
            super().__init__(cfg, split, **kw)

        def __getitem__(self, index):
            served.add(self.refs[index].key)
            return super().__getitem__(index)

    monkeypatch.setattr(dataset_mod, "WindowDataset", Recording)  # what TrainInputs builds
    cfg = _with(tiny_pipeline, tmp_path, epochs=6, batch_size=2, eval_every=1, checkpoint_every=0)
    run = run_training(cfg, "thinkjepa", progress=False)

    assert sorted(set(constructed)) == ["train", "val"]
    test_ids = {r.key for r in split_windows(cfg, "test")}
    train_val = {r.key for s in ("train", "val") for r in split_windows(cfg, s)}
    assert test_ids and not (served & test_ids) and served == train_val
    windows = json.loads((run / "windows.json").read_text())
    assert not (set(windows["train"]) | set(windows["val"])) & test_ids

    summary = json.loads((run / "summary.json").read_text())
    history = summary["val_history"]
    assert [h["step"] for h in history] == [0, 2, 4, 6, 8, 10, 12]  # step 0: the untrained model is a candidate
    best = min(history, key=lambda h: h["ADE"])
    assert summary["best_step"] == best["step"] and summary["best_val_ade"] == best["ADE"]
    model, payload = load_trained_model(run, "best")
    assert payload["train_state"]["step"] == best["step"]
    val = WindowDataset(cfg, "val")
    res = evaluate_loader(model, make_loader(val, EpochBatchSampler(len(val), 3, 0, shuffle=False), 0),
                          torch.device("cpu"), cfg.eval.acc_threshold_m)
    assert res["sums"][0].item() / res["counts"][0].item() == pytest.approx(best["ADE"], rel=1e-6)
    # the resolved config sits beside the checkpoints
    assert PipelineConfig.model_validate(__import__("yaml").safe_load((run / "config.yaml").read_text())) == \
        cfg.for_variant("thinkjepa")
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())


@pytest.mark.slow  # > 20 s on 2 shared cores
def test_a_tiny_training_set_is_overfitted(tiny_pipeline, tmp_path) -> None:
    # joints only: with random encoder weights the latent term is noise of a much larger scale
    cfg = _with(tiny_pipeline, tmp_path, max_steps=300, batch_size=4, eval_every=1000, checkpoint_every=0,
                lr_predictor=1e-3, lr_head=1e-3, lr_milestones=(0.9,), weight_decay=0.0, latent_loss_weight=0.0)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"dropout": 0.0, "drop_path": 0.0})})
    train = WindowDataset(cfg, "train")
    loader = make_loader(train, EpochBatchSampler(len(train), 4, 0, shuffle=False), 0)

    def train_ade(model) -> float:
        res = evaluate_loader(model, loader, torch.device("cpu"), 0.05)
        return res["sums"][0].item() / res["counts"][0].item()

    set_seed(cfg.train.seed)  # the run builds its model right after the same call
    before = train_ade(ThinkJEPA(cfg.for_variant("thinkjepa").model, **train.dims))
    run = run_training(cfg, "thinkjepa", progress=False)
    after = train_ade(load_trained_model(run, "last")[0])
    assert after < 0.3 * before, (before, after)


@pytest.mark.slow
def test_tj_train_command(tiny_pipeline, tmp_path) -> None:
    from thinkjepa.app.cli.train_cmd import app

    cfg = _with(tiny_pipeline, tmp_path / "out", epochs=1, batch_size=4)
    save_config(cfg, tmp_path, "pipelines.yaml")
    result = CliRunner().invoke(app, ["--config", str(tmp_path / "pipelines.yaml"), "--seed", "3",
                                      "--variant", "jepa_only"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "out" / "jepa_only" / "seed-3"
    payload = load_checkpoint(checkpoint_path(run))
    assert payload["variant"] == "jepa_only" and payload["model_cfg"]["variant"] == "jepa_only"
    assert not any(k.startswith(("pyramid.", "injection.")) for k in payload["model"])
    assert json.loads((run / "summary.json").read_text())["guidance"] == "none"
    # same command, other settings: the old checkpoints are set aside, never resumed from
    with pytest.warns(UserWarning, match="is not continued"):
        again = CliRunner().invoke(app, ["--config", str(tmp_path / "pipelines.yaml"), "--seed", "3",
                                         "--set", "train.lr_head=0.002", "--variant", "jepa_only"])
    assert again.exit_code == 0, again.output
    assert len(list(run.glob("last.stale-*.pt"))) == 1
    assert load_checkpoint(checkpoint_path(run))["fingerprint"] != payload["fingerprint"]
    bad = CliRunner().invoke(app, ["--config", str(tmp_path / "pipelines.yaml"), "--variant", "no_such_variant"])
    assert bad.exit_code == 2 and "no_such_variant" in bad.output  # a usage error (thinkjepa.app.cli.common)


@pytest.mark.slow  # a fresh process (its own accelerate state) trains a few steps
def test_a_process_trains_at_the_precision_asked_for_and_refuses_another(tiny_pipeline, tmp_path) -> None:
    # accelerate fixes the precision once per process; the package uses no private accelerate
    # state to change it, so the second run is refused before it trains, naming the remedy
    for name, precision in (("bf16", "bf16"), ("no", "no")):
        cfg = _with(tiny_pipeline, tmp_path / name, max_steps=2, checkpoint_every=100, mixed_precision=precision)
        (tmp_path / f"{name}.json").write_text(cfg.model_dump_json())
    script = textwrap.dedent("""
        import json, sys
        import torch
        torch.set_num_threads(1)
        from thinkjepa.config import PipelineConfig
        from thinkjepa.train.launch import PrecisionError
        from thinkjepa.train.loop import run_training

        first, second = (PipelineConfig.model_validate_json(open(f).read()) for f in sys.argv[1:3])
        run = run_training(first, "jepa_only", progress=False)
        try:
            run_training(second, "jepa_only", progress=False)
            print(json.dumps({"run": str(run), "refused": None}))
        except PrecisionError as e:
            print(json.dumps({"run": str(run), "refused": str(e)}))
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "bf16.json"), str(tmp_path / "no.json")],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = json.loads((tmp_path / "bf16" / "jepa_only" / "seed-0" / "summary.json").read_text())
    assert out["run"] == str(tmp_path / "bf16" / "jepa_only" / "seed-0") and summary["mixed_precision"] == "bf16"
    assert out["refused"] is not None and "'no'" in out["refused"] and "'bf16'" in out["refused"]
    assert "tj-train --variant" in out["refused"]
    assert not (tmp_path / "no" / "jepa_only" / "seed-0" / "last.pt").exists()  # refused before training


@pytest.mark.slow
def test_every_seed_trains_into_its_own_folder_and_only_changed_seeds_rerun(tiny_pipeline, tmp_path) -> None:
    from thinkjepa.train.seeds import train_seeds

    cfg = _with(tiny_pipeline, tmp_path, max_steps=2, seeds=[0, 1], checkpoint_every=100)
    runs = train_seeds(cfg, "jepa_only", progress=False)
    assert {s: (p.name, ran) for s, (p, ran) in runs.items()} == {0: ("seed-0", True), 1: ("seed-1", True)}
    a, b = (load_checkpoint(checkpoint_path(runs[s][0])) for s in (0, 1))
    assert a["fingerprint"] != b["fingerprint"]
    assert any(not torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # other init, other order
    # one more seed: the finished ones are left alone, even though train.seeds changed
    more = _with(cfg, tmp_path, seeds=[0, 1, 2])
    stamp = checkpoint_path(runs[0][0]).stat().st_mtime_ns
    assert {s: ran for s, (_, ran) in train_seeds(more, "jepa_only", skip_finished=True, progress=False).items()} == {
        0: False, 1: False, 2: True}
    assert checkpoint_path(runs[0][0]).stat().st_mtime_ns == stamp  # not even rewritten
    # a real change reruns every seed
    changed = _with(more, tmp_path, lr_head=2e-3)
    with pytest.warns(UserWarning, match="is not continued"):
        rerun = train_seeds(changed, "jepa_only", skip_finished=True, progress=False)
    assert all(ran for _, ran in rerun.values())
