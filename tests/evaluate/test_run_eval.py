"""tj-eval end to end on a tiny trained workdir: every model row on the same windows, seeds
aggregated, rollouts degrading to the steps the episodes allow, guidance ablations, the
report files, and ``tj-eval --json``."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from thinkjepa.config import save_config
from thinkjepa.evaluate import gate_values, run_eval
from thinkjepa.evaluate.stats import window_digest

pytestmark = pytest.mark.slow  # the fixture trains two seeds of two variants (~1 min on 2 cores)


@pytest.fixture(scope="module")
def result(eval_workdir):
    return run_eval(eval_workdir)


def test_every_model_row_uses_the_same_window_set(result, eval_workdir):
    ws = result["window_set"]
    assert ws["windows"] == len(ws["ids"]) == 6 and ws["digest"] == window_digest(ws["ids"])
    rows = {n: m for n, m in result["models"].items() if m["kind"] != "test_ablation"}
    assert set(rows) == {"thinkjepa", "jepa_only", "jepa_matched", "last_observed", "constant_velocity"}
    for name, m in rows.items():
        assert m["window_digest"] == ws["digest"] and sorted(m["per_window_ADE"]) == sorted(ws["ids"]), name
    table = pq.read_table(eval_workdir.path(eval_workdir.eval.out) / "metrics.parquet").to_pylist()
    per_model = {}
    for r in table:
        if r["table"] == "window" and r["model"] in rows:
            per_model.setdefault((r["model"], r["seed"]), set()).add(r["window_id"])
    assert len(per_model) == 2 + 2 + 2 + 2 and all(s == set(ws["ids"]) for s in per_model.values())


def test_seeds_are_aggregated_and_compared_with_a_bootstrap(result, eval_workdir):
    tj = result["models"]["thinkjepa"]
    assert result["seeds"] == {"thinkjepa": [0, 1], "jepa_only": [0, 1], "jepa_matched": [0, 1]}
    assert set(tj["per_seed"]) == {"0", "1"}
    ades = [tj["per_seed"][s]["ADE"] for s in ("0", "1")]
    assert tj["ADE"] == pytest.approx(np.mean(ades)) and tj["ADE_std"] == pytest.approx(np.std(ades, ddof=1))
    assert len(tj["ADE_by_step"]) == len(tj["ADE_by_step_std"]) == 8
    c = tj["vs_jepa_only"]
    assert c["lo"] <= c["mean_diff"] <= c["hi"] and c["windows"] == 6
    assert c["excludes_zero"] == (c["lo"] > 0 or c["hi"] < 0)
    # 6 windows and 2 seeds are below the minimum counts: nothing is called significant
    assert not c["enough"] and not c["significant"] and c["method"].startswith("BCa bootstrap")
    # the capacity-matched baseline is trained here too, so it is the reference of the verdict
    assert result["reference"] == "jepa_matched"
    assert "vs_jepa_only" not in result["models"]["jepa_only"]
    # over training seeds: the per-seed differences of the per-seed ADEs, paired by seed; a baseline
    # (one unseeded run) pairs with every seed of jepa_only
    jo = result["models"]["jepa_only"]
    cs = tj["vs_jepa_only_seeds"]
    assert cs["seeds"] == 2 and cs["lo"] <= cs["mean_diff"] <= cs["hi"] and cs["windows"] == 6
    assert cs["per_seed_diff"] == pytest.approx({s: tj["per_seed"][s]["ADE"] - jo["per_seed"][s]["ADE"] for s in ("0", "1")})
    assert set(tj["per_seed_window_ADE"]) == {"0", "1"} and all(len(v) == 6 for v in tj["per_seed_window_ADE"].values())
    assert result["models"]["last_observed"]["vs_jepa_only_seeds"]["seeds"] == 2
    for seed, info in result["checkpoints"]["thinkjepa"].items():
        run = eval_workdir.path(eval_workdir.train.out) / "thinkjepa" / f"seed-{seed}"
        assert info["path"] == str(run / "best.pt")
        assert info["step"] == json.loads((run / "summary.json").read_text())["best_step"]


def test_matched_baseline_is_compared_and_every_row_lists_its_trainable_parameters(result):
    models = result["models"]
    tj, jm, jo = models["thinkjepa"], models["jepa_matched"], models["jepa_only"]
    assert tj["trainable_params"] == jm["trainable_params"] > jo["trainable_params"] > 0
    assert models["constant_velocity"]["trainable_params"] == 0
    for seed in ("0", "1"):
        assert result["checkpoints"]["jepa_matched"][seed]["trainable_params"] == jm["trainable_params"]
    c = tj["vs_jepa_matched"]
    assert c["lo"] <= c["mean_diff"] <= c["hi"] and tj["vs_jepa_matched_seeds"]["seeds"] == 2
    assert set(tj["rollout_vs_jepa_matched"]) == set(tj["rollout_vs_jepa_matched_seeds"]) == {"shifted", "predicted"}
    ro = tj["rollout_vs_jepa_matched_seeds"]["shifted"]
    per_seed = {s: np.mean(v["ADE"]) - np.mean(jm["rollout"]["shifted"]["per_seed_window_step"][s]["ADE"])
                for s, v in tj["rollout"]["shifted"]["per_seed_window_step"].items()}
    assert ro["seeds"] == 2 and ro["per_seed_diff"] == pytest.approx(per_seed)
    assert "vs_jepa_matched" not in jm and "vs_jepa_only" in jm


def test_rollout_keeps_every_seed_window_and_step(result):
    """What a rollout criterion is recomputed from: per row, mode and seed, ADE and FDE of every
    rollout window (in ``rollout_window_set.ids`` order) at every step."""
    rs = result["rollout_window_set"]
    assert len(rs["ids"]) == rs["windows"] and set(rs["ids"]) <= set(result["window_set"]["ids"])
    for name in ("thinkjepa", "jepa_matched", "constant_velocity"):
        m = result["models"][name]
        for mode in rs["modes"]:
            ro = m["rollout"][mode]
            seeds = {"-"} if m["kind"] == "baseline" else {"0", "1"}
            assert set(ro["per_seed_window_step"]) == seeds
            for v in ro["per_seed_window_step"].values():
                ade, fde = np.asarray(v["ADE"]), np.asarray(v["FDE"])
                assert ade.shape == fde.shape == (rs["windows"], rs["steps"])
            # the per-step summary is the mean of the per-window values
            steps = np.mean([np.asarray(v["ADE"]).mean(0) for v in ro["per_seed_window_step"].values()], axis=0)
            assert steps == pytest.approx([s["ADE"] for s in ro["per_step"]])
            fdes = np.mean([np.asarray(v["FDE"]).mean(0) for v in ro["per_seed_window_step"].values()], axis=0)
            assert fdes == pytest.approx([s["FDE"] for s in ro["per_step"]])
        assert set(m["per_seed_window_FDE"]) == set(m["per_seed_window_ADE"])


def test_rollout_reports_the_steps_the_episodes_allow(result):
    rs = result["rollout_window_set"]
    # windows at t = 8, 16, 24 of 32-frame episodes: only t=8 has 3 blocks of 8 frames left
    assert rs["requested_steps"] == 4 and rs["steps"] == 3 and rs["windows"] == 2
    assert rs["modes"] == ["shifted", "predicted"]
    assert any("4 steps were asked for" in n for n in result["notes"])
    for name in ("thinkjepa", "jepa_only", "last_observed", "constant_velocity"):
        for mode in rs["modes"]:
            ro = result["models"][name]["rollout"][mode]
            assert ro["steps"] == 3 and len(ro["per_step"]) == 3 and len(ro["ADE_by_frame"]) == 24
    lat = [s["latent"] for s in result["models"]["thinkjepa"]["rollout"]["shifted"]["per_step"]]
    # every step has encoded targets: the window's own future, then those of the windows 8 and 16 frames later
    assert [x["windows_with_target"] for x in lat] == [2, 2, 2]
    assert all(x["L1"] > 0 and x["health_reference"] == "own" and x["norm_ratio"] > 0 for x in lat)
    # the baselines do not depend on the mode; one-shot step 1 of a rollout is the forecast itself
    b = result["models"]["constant_velocity"]["rollout"]
    assert b["shifted"]["per_step"] == b["predicted"]["per_step"]


def test_guidance_ablations_and_breakdowns(result, eval_workdir):
    models = result["models"]
    for kind in ("zeroed", "shuffled", "same_clip"):
        m = models[f"thinkjepa:{kind}"]
        assert m["kind"] == "test_ablation" and "vs_thinkjepa" in m and set(m["per_seed"]) == {"0", "1"}
    assert models["thinkjepa:same_clip"]["windows"] == 6  # every clip has three windows
    assert set(models["thinkjepa"]["by_joint_group"]) == {"wrists", "fingertips", "rest"}
    assert len(models["thinkjepa"]["by_task"]) == 1  # one task per split in the tiny data
    gates = result["gates"]["thinkjepa"]["0"]
    assert len(gates) == eval_workdir.model.pred_depth and gates == pytest.approx(
        gate_values(eval_workdir.path(eval_workdir.train.out) / "thinkjepa" / "seed-0"))
    assert result["gates"]["jepa_only"]["0"] is None


def test_report_files(result, eval_workdir):
    out = eval_workdir.path(eval_workdir.eval.out)
    md = (out / "report.md").read_text()
    for heading in ("## Verdict", "## One-shot forecasts", "## Recursive rollouts", "## Guidance ablations at test time",
                    "## Training-time ablations", "## Per joint group", "## Per task", "## Figures"):
        assert heading in md, heading
    assert "| constant_velocity |" in md and "| shuffled |" in md
    assert "Over 2 training seeds" in md and "CI, seeds" in md
    # the first line is the one verdict; with 6 windows and 2 seeds it makes no call and says what to add
    first = md.splitlines()[0]
    steps = result["rollout_window_set"]["steps"]
    assert steps > 1  # so the rollout decides, and the one-shot call follows it
    assert first == result["verdict"] and first.startswith(
        f"**Verdict over the {steps}-step rollout (`shifted`, ADE over all steps): no call yet on thinkjepa vs {result['reference']}**")
    assert "One-shot (the first step alone): no call yet (thinkjepa - " in first
    n = result["rollout_window_set"]["windows"]  # the rollout's windows: those with frames for every step
    assert f"only {n} test window{'s' if n > 1 else ''} (minimum 10" in first and "2 training seeds (minimum 3" in first
    assert " decides, because " in first
    assert "significantly better" not in md and "BCa bootstrap, scipy.stats.bootstrap" in md and "ttest_rel" in md
    # a forecast video per overlaid window (2 gains, 2 losses), linked from both documents
    assert len(result["videos"]) == 4
    for f in result["videos"]:
        assert f"]({f})" in md and (out / f).stat().st_size > 1000
    for f in result["figures"]:
        assert f"]({f})" in md and (out / f).stat().st_size > 2000
    assert {"overlay_gain.png", "overlay_loss.png", "ade_diff_hist.png", "horizon_rollout_shifted.png"} <= set(result["figures"])
    page = (out / "report.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', page)
    assert len(srcs) == len(result["figures"]) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(f'href="{f}"' in page for f in result["videos"]) and "<table>" in page and "<strong>Verdict over the " in page
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))


def test_tj_eval_json_prints_metrics_json(eval_workdir, tmp_path, result):
    from thinkjepa.app.cli.eval_cmd import app

    save_config(eval_workdir, tmp_path, "pipelines.yaml")
    res = CliRunner().invoke(app, ["--config", str(tmp_path / "pipelines.yaml"), "--json", "--set", "eval.bootstrap=200"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    on_disk = json.loads((eval_workdir.path(eval_workdir.eval.out) / "metrics.json").read_text())
    assert printed == on_disk
    assert printed["models"]["thinkjepa"]["ADE"] == result["models"]["thinkjepa"]["ADE"]  # deterministic


def test_a_window_missing_for_one_variant_is_an_error_naming_it(eval_workdir, write_vlm_cache, all_window_ids, tmp_path):
    from thinkjepa.evaluate.windows import common_window_set

    cfg = eval_workdir.model_copy(update={"thinker": eval_workdir.thinker.model_copy(update={"cache": str(tmp_path / "vlm.zarr")})})
    test_ids = all_window_ids(cfg, ("test",))
    write_vlm_cache(cfg, [k for k in all_window_ids(cfg) if k != test_ids[0]])
    with pytest.raises(ValueError, match=re.escape(test_ids[0]) + r".*missing for variant 'thinkjepa'.*jepa_only"):
        common_window_set(cfg, ["thinkjepa", "jepa_only"], "test")
    assert len(common_window_set(cfg, ["jepa_only"], "test")) == len(test_ids)


def test_stale_guidance_or_another_model_is_refused_before_any_scoring(eval_workdir):
    from thinkjepa.evaluate.windows import common_window_set
    from thinkjepa.train.run_inputs import StaleInputError

    th = eval_workdir.thinker
    prompt = eval_workdir.model_copy(update={"thinker": th.model_copy(update={"prompt_template": "Describe {task}."})})
    with pytest.raises(StaleInputError, match=r"windows in the VLM cache .* are stale .*rerun `tj-extract run`"):
        common_window_set(prompt, ["thinkjepa", "jepa_only"], "test")
    # jepa_only reads no guidance: the thinker's prompt is no input of it
    assert len(common_window_set(prompt, ["jepa_only"], "test")) == len(common_window_set(eval_workdir, ["jepa_only"], "test"))
    enc = eval_workdir.encoder
    other = eval_workdir.model_copy(update={"encoder": enc.model_copy(update={"storage_dtype": "float16"})})
    with pytest.raises(StaleInputError, match=r"JEPA cache .*storage_dtype"):
        common_window_set(other, ["jepa_only"], "test")


def test_tj_eval_model_evaluates_saved_models_without_the_training_folder(eval_workdir, tmp_path, result):
    import shutil

    from thinkjepa.app.cli.eval_cmd import app
    from thinkjepa.train.hub import EXPORT_DIR

    # training wrote the release format beside each run's checkpoints; copy two out and point
    # train.out nowhere: the saved folders alone must do
    models = []
    for v in ("thinkjepa", "jepa_only"):
        models += ["--model", str(shutil.copytree(eval_workdir.path(eval_workdir.train.out) / v / "seed-0" / EXPORT_DIR, tmp_path / v))]
    save_config(eval_workdir, tmp_path, "pipelines.yaml")
    res = CliRunner().invoke(app, ["--config", str(tmp_path / "pipelines.yaml"), "--json", *models, "--set", "eval.bootstrap=200",
                                   "--set", f"eval.out={tmp_path / 'eval'}", "--set", f"train.out={tmp_path / 'no-runs'}"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    assert printed["seeds"] == {"thinkjepa": [0], "jepa_only": [0]}
    for v in ("thinkjepa", "jepa_only"):  # the same ADE as the pipeline's eval of that seed
        assert printed["models"][v]["ADE"] == result["models"][v]["per_seed"]["0"]["ADE"]
        assert printed["checkpoints"][v]["0"]["path"] == str(tmp_path / v)
    assert not (tmp_path / "no-runs").exists() and len(printed["videos"]) == 4


def test_the_model_card_of_every_scored_run_carries_its_eval_table(result, eval_workdir):
    from thinkjepa.train.checkpoint import seed_run_dir
    from thinkjepa.train.hub import CARD, EXPORT_DIR, read_config

    models, ws, rs = result["models"], result["window_set"], result["rollout_window_set"]
    for variant, seed in (("thinkjepa", 1), ("jepa_only", 0)):
        folder = seed_run_dir(eval_workdir.path(eval_workdir.train.out), variant, seed) / EXPORT_DIR
        card = (folder / CARD).read_text()
        section = card.split("\n## Evaluation\n", 1)[1].split("\n## ", 1)[0]
        assert "Not evaluated" not in section and "## Training config" in card  # the rest of the card stays
        assert f"split `{result['split']}`: {ws['windows']} windows (window set `{ws['digest']}`)" in section
        assert f"checkpoint step {result['checkpoints'][variant][str(seed)]['step']}" in section
        assert read_config(folder)["step"] == result["checkpoints"][variant][str(seed)]["step"]
        own = models[variant]["per_seed"][str(seed)]
        assert (f"| **this model** ({variant}, seed {seed}) | {seed} | {ws['windows']} | {own['ADE']:.4f} | {own['FDE']:.4f} | "
                f"{own['Acc']:.4f} |") in section
        lines = section.splitlines()
        for other in {"jepa_matched", "jepa_only", "last_observed", "constant_velocity"} - {variant}:
            row = next(x for x in lines if x.startswith(f"| {other}"))
            assert f"| {models[other]['ADE']:.4f}" in row  # the baselines it was compared against
        # the rollout, per step, of this very run (its per-window errors in metrics.json)
        for mode in rs["modes"]:
            assert f"mode `{mode}`: {rs['steps']} step(s) of {rs['frames_per_step']} frames on {rs['windows']} windows" in section
            per_step = np.asarray(models[variant]["rollout"][mode]["per_seed_window_step"][str(seed)]["ADE"]).mean(axis=0)
            assert len(per_step) == rs["steps"] > 1
            assert f"| **this model** (seed {seed}) | " + " | ".join(f"{x:.4f}" for x in per_step) + " |" in section


def test_eval_refuses_a_test_window_the_checkpoint_trained_on(result, eval_workdir):
    from thinkjepa.evaluate.run import TrainedOnEvalWindows
    from thinkjepa.train.checkpoint import seed_run_dir

    listed = seed_run_dir(eval_workdir.path(eval_workdir.train.out), "jepa_only", 1) / "windows.json"
    original = listed.read_text()
    leaked = result["window_set"]["ids"][0]
    record = json.loads(original)
    try:
        # what a split change after training looks like: a now-test window in the run's train list
        listed.write_text(json.dumps({**record, "train": record["train"] + [leaked]}))
        with pytest.raises(TrainedOnEvalWindows, match=re.escape(leaked)) as err:
            run_eval(eval_workdir)
        assert "'jepa_only' seed 1 trained on 1 window(s) of the test split" in str(err.value)
    finally:
        listed.write_text(original)
