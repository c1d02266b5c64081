"""``thinkjepa.evaluate``: compare trained variants, baselines and guidance ablations.

Programmatic API (the benchmark and ``tj-eval`` call the same functions):

- ``run_eval(cfg) -> dict``: evaluates ``cfg.eval.variants`` (every seed of ``train.seeds``),
  the ``last_observed`` and ``constant_velocity`` baselines and the test-time guidance
  ablations of ``thinkjepa`` on ``cfg.eval.split``; writes ``metrics.json``,
  ``metrics.parquet``, the pictures, ``report.md`` and ``report.html`` under ``eval.out``
  and returns what ``metrics.json`` holds (also printed by ``tj-eval --json``). ``saved``
  ({variant: {seed: folder}}) evaluates saved models (``train.hub``) instead of training runs;
  without it every training run scored is saved again as ``<run>/pretrained`` with its eval
  table in the model card (``report.eval_table``).
- ``paired_bootstrap(a, b, n_boot=2000, seed=0) -> (mean_diff, lo, hi)``: mean of ``a - b``
  over paired per-window values and its BCa bootstrap 95% interval (``scipy.stats.bootstrap``).
- ``seed_comparison(a, b, n_boot) -> dict | None``: the same difference over training seeds
  (``a``, ``b``: {seed: per-window values}): paired t interval of the per-seed mean
  differences (``scipy.stats.ttest_rel``) and a two-level (seeds, then windows) bootstrap;
  None below 2 paired seeds.
- ``gate_values(run_dir, which="best") -> list[float] | None``: ``tanh(gate)`` per predictor
  block of a trained run (``seed_run_dir(train.out, variant, seed)``); None without guidance.
- ``find_runs(cfg, variant) -> {seed: run_dir}``: the checkpoints eval uses.

metrics.json keys: ``split``; ``window_set`` {digest, windows, ids}; ``rollout_window_set``
{digest, windows, steps, requested_steps, frames_per_step, modes}; ``acc_threshold_m``;
``seeds`` {variant: [seed]}; ``checkpoints`` {variant: {seed: {path, step, best_val_ade,
fingerprint}}}; ``gates`` {variant: {seed: [tanh(gate)] | null}}; ``notes``; ``report``,
``html``, ``parquet``, ``figures``, ``videos`` (MP4s under ``eval.out``); ``reference`` (the
baseline the verdict uses: ``jepa_matched`` if evaluated, else ``jepa_only``); ``verdict`` (the
report's first line, ``evaluate.verdict``); and ``models`` {name: row}. Names are the variants, the
baselines and ``thinkjepa:zeroed`` / ``thinkjepa:shuffled`` / ``thinkjepa:same_clip``. A row:
``kind`` (variant | training_ablation | baseline | test_ablation), ``windows``,
``window_digest``, ``seeds``, ``per_seed`` {seed: {ADE, FDE, Acc}}, ``ADE`` / ``ADE_std``,
``FDE`` / ``FDE_std``, ``Acc`` / ``Acc_std`` (mean and sample std over seeds),
``ADE_by_step`` / ``ADE_by_step_std`` (per future frame), ``by_joint_group`` and ``by_task``
{name: {ADE, ADE_std, ...}}, ``per_window_ADE`` {window_id: seed-mean ADE},
``per_seed_window_ADE`` {seed: [ADE per window, in ``window_set.ids`` order]}, ``latent``
(one-shot: L1, L2, cos, std_ratio, norm_ratio, flag, ...), ``rollout`` {mode: {steps,
windows, ADE..., per_step: [{step, ADE, ADE_std, FDE, FDE_std, Acc, Acc_std, latent}],
ADE_by_frame, ADE_by_frame_std, per_window_ADE}}, and for every row against each reference
``<ref>`` evaluated (``jepa_matched``, ``jepa_only``) ``vs_<ref>`` / ``rollout_vs_<ref>`` {mode:
...} = {mean_diff, lo, hi, excludes_zero, enough, significant, windows, min_windows, method}
(negative = better than the reference; ``significant`` = excludes 0 and ``enough`` windows);
with 2 or more paired training seeds also ``vs_<ref>_seeds`` = {mean_diff, lo, hi,
excludes_zero, enough, significant, seeds, windows, min_seeds, min_windows, method,
per_seed_diff {seed: diff}, per_seed_std, lower_in, higher_in, hierarchical {lo, hi,
excludes_zero, enough, significant, method}}; test-time ablations carry ``vs_thinkjepa``.
"""

from __future__ import annotations

from typing import Any

from thinkjepa.evaluate.predict import find_runs, gate_values
from thinkjepa.evaluate.stats import paired_bootstrap, seed_comparison


def run_eval(cfg, progress=None, saved=None) -> dict[str, Any]:
    """Evaluate and write every output; returns the metrics.json summary. Every training run
    scored gets its ``<run>/pretrained`` model card with its eval table. ``saved``:
    {variant: {seed: saved model folder}} evaluated instead of the training runs (their folders,
    perhaps a Hub download, are left as they are)."""
    from thinkjepa.evaluate.report import write_model_cards, write_report
    from thinkjepa.evaluate.run import evaluate_all

    result = write_report(cfg, evaluate_all(cfg, progress=progress, saved=saved))
    if saved is None:
        write_model_cards(cfg, result)
    return result


__all__ = ["find_runs", "gate_values", "paired_bootstrap", "run_eval", "seed_comparison"]
