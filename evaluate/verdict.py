"""The report's verdict: one sentence a reader can act on, the interval that decides it and why,
then one line per interval.

Two intervals describe a difference (``thinkjepa.evaluate.stats``): over windows (these trained
models on these windows) and over training seeds (another training run). They can disagree, and
a report that calls both reads as a contradiction. So one of them decides: the wider one, since
it holds the larger source of noise (usually training runs vary more than windows; with few
windows it can be the other way round); the other is shown for scale. Nothing is called below
``MIN_WINDOWS`` windows or ``MIN_SEEDS`` training seeds: the verdict then says what to add.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from thinkjepa.evaluate.stats import MIN_SEEDS, MIN_WINDOWS

NEGLIGIBLE_M = 1e-4
"""Differences below 0.1 mm are called negligible in words, whatever their interval."""


def fmt_diff(x: float) -> str:
    """A signed difference in metres, readable at any scale (tiny ones are not shown as 0)."""
    return f"{x:+.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:+.2e}"


def _iv(c: dict[str, Any]) -> str:
    return f"[{fmt_diff(c['lo'])}, {fmt_diff(c['hi'])}]"


@dataclass
class Verdict:
    headline: str
    """The report's first line."""
    decides: str | None
    """``"seeds"``, ``"windows"`` or None (nothing to compare)."""
    called: bool
    """Whether the deciding interval met the minimum counts."""
    lines: list[str] = field(default_factory=list)
    """One line per interval, the deciding one first."""
    call: str = ""
    """The call and the deciding difference, without the reasons (``"thinkjepa beats ... (...)"``)."""


def _window_line(name: str, ref: str, c: dict[str, Any]) -> str:
    head = (f"Over windows ({c['method']}): **{name}** - {ref} ADE {fmt_diff(c['mean_diff'])} m, 95% interval {_iv(c)} "
            f"on {_n(c['windows'], 'window')} (window-to-window noise only: these trained models on these windows)")
    if not c["enough"]:
        return f"{head}; fewer than {c['min_windows']} windows, so not called either way."
    return f"{head}: {'excludes' if c['excludes_zero'] else 'contains'} 0."


def _seed_line(name: str, ref: str, c: dict[str, Any]) -> str:
    per = ", ".join(fmt_diff(x) for x in c["per_seed_diff"].values())
    h = c["hierarchical"]
    head = (f"Over {c['seeds']} training seeds ({c['method']}): per-seed ADE differences {per} (lower in {c['lower_in']} of "
            f"{c['seeds']}), 95% interval {_iv(c)}; the {h['method']} gives {_iv(h)}")
    if not c["enough"]:
        return f"{head}; fewer than {c['min_seeds']} seeds or {c['min_windows']} windows, so not called either way."
    return f"{head}: {'excludes' if c['excludes_zero'] else 'contains'} 0."


def _n(k: int, noun: str) -> str:
    return f"{k} {noun}{'' if k == 1 else 's'}"


def _width(c: dict[str, Any]) -> float:
    return c["hi"] - c["lo"]


def decide(models: dict[str, dict[str, Any]], guided: str, ref: str | None,
           min_windows: int = MIN_WINDOWS, min_seeds: int = MIN_SEEDS, scope: str = "") -> Verdict:
    """The verdict on ``guided`` against ``ref`` from the rows' ``vs_<ref>`` (windows) and
    ``vs_<ref>_seeds`` (seeds) comparisons. ``scope`` names what was compared in the headline
    (e.g. `` over the 4-step rollout``)."""
    if ref is None or guided not in models or f"vs_{ref}" not in models[guided]:
        have = ", ".join(n for n, m in models.items() if m["kind"] != "test_ablation")
        return Verdict(f"**Verdict: nothing to compare.** The guided model {guided!r} and a reference baseline must both be "
                       f"evaluated (evaluated here: {have}); add them to `eval.variants`.", None, False)
    m = models[guided]
    w, s = m[f"vs_{ref}"], m.get(f"vs_{ref}_seeds")
    n_seeds = s["seeds"] if s else len(m.get("seeds") or []) or 1
    if s is not None and _width(s) == _width(w) == 0:
        decides, dec, other = "seeds", s, w
        why = "the two models' forecasts do not differ here (both intervals are zero wide)"
    elif s is None or _width(w) > _width(s):
        decides, dec, other = "windows", w, s
        why = ("only one training seed, so run-to-run variation is not measured" if s is None
               else f"windows vary more than training runs here (interval width {_width(w):.2e} m vs {_width(s):.2e} m over seeds)")
    else:  # on a tie the seed interval: whether another training run agrees is the wider question
        decides, dec, other = "seeds", s, w
        why = f"training runs vary more than windows (interval width {_width(s):.2e} m vs {_width(w):.2e} m over windows)"
    label = {"seeds": "the interval over training seeds", "windows": "the interval over windows"}
    scale = f"; {label['windows' if decides == 'seeds' else 'seeds']} is shown for scale" if other else ""
    lines = [_seed_line(guided, ref, s)] if s else []
    lines.insert(0 if decides == "windows" else 1, _window_line(guided, ref, w))
    short = []
    if w["windows"] < min_windows:
        short.append(f"{_n(w['windows'], 'test window')} (minimum {min_windows}: evaluate a larger split)")
    if n_seeds < min_seeds:
        short.append(f"{_n(n_seeds, 'training seed')} (minimum {min_seeds}: add seeds to `train.seeds`)")
    diff = f"{guided} - {ref} ADE {fmt_diff(dec['mean_diff'])} m, 95% interval {_iv(dec)}"
    reason = f"{label[decides][0].upper()}{label[decides][1:]} decides, because {why}{scale}."
    if short:
        head = f"**Verdict{scope}: no call yet on {guided} vs {ref}** ({diff}): only " + " and ".join(short) + f". {reason}"
        return Verdict(head, decides, False, lines, f"no call yet ({diff})")
    if not dec["excludes_zero"]:
        call = f"no measurable difference between {guided} and {ref}"
    elif abs(dec["mean_diff"]) < NEGLIGIBLE_M:
        call = f"{guided} and {ref} differ by a negligible amount (< 0.1 mm)"
    elif dec["mean_diff"] < 0:
        call = f"{guided} beats {ref}"
    else:
        call = f"{guided} is worse than {ref}"
    return Verdict(f"**Verdict{scope}: {call}** ({diff}). {reason}", decides, True, lines, f"{call} ({diff})")


def decide_rollout(models: dict[str, dict[str, Any]], guided: str, ref: str | None, mode: str, steps: int,
                   one_shot: Verdict) -> Verdict | None:
    """The verdict over a rollout of ``steps`` > 1 steps in ``mode`` (the rows' ``rollout_vs_<ref>``
    and ``rollout_vs_<ref>_seeds``), with the one-shot call after it; None where no rollout
    comparison exists. Why the rollout decides: the one-shot forecast is its first step, and an
    event after that step (rollout benchmark v3's turn) shows only in the rollout."""
    if ref is None or steps < 2 or guided not in models or mode not in models[guided].get(f"rollout_vs_{ref}", {}):
        return None
    m = models[guided]
    rows = {guided: {"kind": m["kind"], "seeds": m.get("seeds"), f"vs_{ref}": m[f"rollout_vs_{ref}"][mode]}}
    seeds = m.get(f"rollout_vs_{ref}_seeds", {}).get(mode)
    if seeds is not None:
        rows[guided][f"vs_{ref}_seeds"] = seeds
    v = decide(rows, guided, ref, scope=f" over the {steps}-step rollout (`{mode}`, ADE over all steps)")
    lines = [f"Rollout `{mode}`, {line[0].lower()}{line[1:]}" for line in v.lines]
    head = f"{v.headline} One-shot (the first step alone): {one_shot.call}."
    return Verdict(head, v.decides, v.called, lines + one_shot.lines, v.call)


__all__ = ["NEGLIGIBLE_M", "Verdict", "decide", "decide_rollout", "fmt_diff"]
