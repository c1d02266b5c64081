"""``tj-eval``'s outputs: ``metrics.json`` (the summary of ``thinkjepa.evaluate.run``),
``metrics.parquet`` (rows per window, task, joint group and rollout step), the pictures,
``report.md`` and a self-contained ``report.html`` (images inlined).

Both documents are rendered from one list of blocks (heading, paragraph, table, image), so
they always say the same thing.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thinkjepa.config import PipelineConfig, save_config
from thinkjepa.evaluate import plots
from thinkjepa.evaluate.errors import JOINT_GROUPS, by_group, by_step, by_task, per_window
from thinkjepa.evaluate.latent import HEALTHY
from thinkjepa.evaluate.run import BASELINES, GUIDED, MATCHED, REFERENCE, public

# Project page snapshot (REFERENCE.md section 1): EgoDex part 2, 32 past -> 32 future frames.
PUBLISHED = {
    "thinkjepa": {"ADE": 0.0614, "FDE": 0.0556, "Acc": 0.5960},
    "jepa_only": {"ADE": 0.0706, "FDE": 0.0656, "Acc": 0.4706},
    "vlm_only": {"ADE": 0.1420, "FDE": 0.1441, "Acc": 0.0842},
}

Block = tuple[str, Any]


def _pm(m: dict[str, Any], k: str, seeded: bool = True) -> str:
    """``mean ± std`` for rows with seeds (baselines have none: just the value)."""
    return f"{m[k]:.4f} ± {m[k + '_std']:.4f}" if seeded and k + "_std" in m else f"{m[k]:.4f}"


def _seeded(m: dict[str, Any]) -> bool:
    return len(m.get("seeds") or []) > 1


NEGLIGIBLE_M = 1e-4
"""Differences below 0.1 mm are called negligible in words, whatever their interval."""


def _d(x: float) -> str:
    """A signed difference in metres, readable at any scale (tiny ones are not shown as 0)."""
    return f"{x:+.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:+.2e}"


def format_ci(c: dict[str, Any] | None) -> str:
    """A comparison as ``mean [lo, hi]``, ``*`` when significant."""
    if not c:
        return "-"
    star = " *" if c["significant"] else ""
    return f"{_d(c['mean_diff'])} [{_d(c['lo'])}, {_d(c['hi'])}]{star}"


def _verdict(name: str, c: dict[str, Any], ref: str) -> str:
    head = f"**{name}** vs {ref}: ADE difference {_d(c['mean_diff'])} m, 95% interval [{_d(c['lo'])}, {_d(c['hi'])}]"
    if not c["significant"]:
        return f"{head} contains 0: **no significant difference** on these {c['windows']} windows."
    word = "better" if c["mean_diff"] < 0 else "worse"
    if abs(c["mean_diff"]) < NEGLIGIBLE_M:
        return f"{head}: {name} is significantly {word}, but by a **negligible** amount (< 0.1 mm) on these {c['windows']} windows."
    return f"{head}: {name} is **significantly {word}** on these {c['windows']} windows."


def format_seed_ci(c: dict[str, Any] | None) -> str:
    """An interval over seeds as ``mean [lo, hi] (lower in k/n)``, ``*`` when significant."""
    return format_ci(c) + (f" (lower in {c['lower_in']}/{c['seeds']})" if c else "")


def _seed_verdict(name: str, c: dict[str, Any], ref: str) -> str:
    head = (f"**{name}** vs {ref} over {c['seeds']} training seeds: per-seed ADE differences "
            + ", ".join(f"{_d(x)}" for x in c["per_seed_diff"].values())
            + f" (lower in {c['lower_in']} of {c['seeds']}); paired t 95% interval [{_d(c['lo'])}, {_d(c['hi'])}]")
    if not c["significant"]:
        return f"{head} contains 0: **not significant across training runs** (another seed may reverse it)."
    return f"{head}: {name} is **significantly {'better' if c['mean_diff'] < 0 else 'worse'} across training runs**."


def _one_shot_table(models: dict[str, dict[str, Any]], kinds: tuple[str, ...]) -> list[list[str]]:
    rows = [["model", "seeds", "windows", "ADE (m)", "FDE (m)", "Acc", "ΔADE vs jepa_only [95% CI, windows]",
             "ΔADE vs jepa_only [95% CI, seeds]", "published ADE / FDE / Acc"]]
    for name, m in models.items():
        if m["kind"] not in kinds:
            continue
        pub = PUBLISHED.get(name)
        sd = _seeded(m)
        rows.append([name, str(len(m["seeds"]) or "-"), str(m["windows"]), _pm(m, "ADE", sd), _pm(m, "FDE", sd), _pm(m, "Acc", sd),
                     format_ci(m.get("vs_jepa_only")), format_seed_ci(m.get("vs_jepa_only_seeds")), f"{pub['ADE']:.4f} / {pub['FDE']:.4f} / {pub['Acc']:.4f}" if pub else "-"])
    return rows


def _rollout_table(models: dict[str, dict[str, Any]], mode: str) -> list[list[str]]:
    any_m = next(m for m in models.values() if mode in m["rollout"])
    steps = any_m["rollout"][mode]["steps"]
    rows = [["model", *[f"step {k + 1} ADE" for k in range(steps)], "final FDE", "all-steps ADE", "ΔADE vs jepa_only [95% CI]"]]
    for name, m in models.items():
        ro = m["rollout"].get(mode)
        if ro is None or m["kind"] == "test_ablation":
            continue
        sd = _seeded(m)
        rows.append([name, *[_pm(s, "ADE", sd) for s in ro["per_step"]], _pm(ro["per_step"][-1], "FDE", sd), _pm(ro, "ADE", sd),
                     format_ci(m.get("rollout_vs_jepa_only", {}).get(mode))])
    return rows


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


def _latent_table(models: dict[str, dict[str, Any]], mode: str) -> list[list[str]]:
    rows = [["model", "step", "windows with encoded target", "L1", "L2", "cos dist", "std ratio (collapse)", "norm ratio (explosion)", "health"]]
    for name, m in models.items():
        ro = m["rollout"].get(mode)
        if ro is None or m["kind"] in ("baseline", "test_ablation"):
            continue
        for s in ro["per_step"]:
            lat = s.get("latent")
            if not lat:
                continue
            ref = "" if lat["health_reference"] in (None, "own") else f" (vs {lat['health_reference']} encoded)"
            flag = "**FLAG**" if lat["flag"] else "ok"
            rows.append([name, str(s["step"]), str(int(lat["windows_with_target"])), _f(lat["L1"]), _f(lat["L2"]), _f(lat["cos"]),
                         _f(lat["std_ratio"]), _f(lat["norm_ratio"]), flag + ref])
    return rows


def _ablation_table(models: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = [["guidance at test time", "windows", "ADE (m)", "FDE (m)", "Acc", "ΔADE vs trained guidance [95% CI]"]]
    if GUIDED in models:
        m = models[GUIDED]
        sd = _seeded(m)
        rows.append([f"{GUIDED} (as trained)", str(m["windows"]), _pm(m, "ADE", sd), _pm(m, "FDE", sd), _pm(m, "Acc", sd), "-"])
    for name, m in models.items():
        if m["kind"] == "test_ablation":
            sd = _seeded(m)
            rows.append([name.split(":", 1)[1], str(m["windows"]), _pm(m, "ADE", sd), _pm(m, "FDE", sd), _pm(m, "Acc", sd),
                         format_ci(m.get("vs_thinkjepa"))])
    return rows


def _breakdown_table(models: dict[str, dict[str, Any]], key: str, label: str) -> list[list[str]]:
    names = [n for n, m in models.items() if m["kind"] != "test_ablation"]
    groups = list(next(iter(models.values()))[key])
    rows = [[label, *[f"{n} ADE" for n in names]]]
    for g in groups:
        extra = f" ({models[names[0]][key][g]['windows']} windows)" if key == "by_task" else ""
        rows.append([g + extra, *[_pm(models[n][key][g], "ADE", _seeded(models[n])) for n in names]])
    return rows


def _parquet_rows(summary: dict[str, Any], thr: float) -> pa.Table:
    cols = ("table", "model", "seed", "mode", "step", "window_id", "task", "joint_group", "windows", "ADE", "FDE", "Acc")
    rows: dict[str, list[Any]] = {c: [] for c in cols}

    def add(**kw: Any) -> None:
        for c in cols:
            rows[c].append(kw.get(c))

    frames = summary["rollout_window_set"]["frames_per_step"]
    for name, runs in summary["_runs"].items():
        for r in runs:
            seed = -1 if r.seed is None else int(r.seed)
            pw = per_window(r.err, thr)
            for i, w in enumerate(r.window_ids):
                add(table="window", model=name, seed=seed, window_id=w, task=w.rpartition("@")[0].split("/")[0],
                    windows=1, **{k: float(pw[k][i]) for k in pw})
            for t, s in by_task(r.err, r.window_ids, thr).items():
                add(table="task", model=name, seed=seed, task=t, **s)
            for g, s in by_group(r.err, thr).items():
                add(table="joint_group", model=name, seed=seed, joint_group=g, windows=len(r.window_ids), **s)
            for mode, ro in r.rollouts.items():
                for k, s in enumerate(by_step(ro.err, frames, thr)):
                    add(table="rollout_step", model=name, seed=seed, mode=mode, step=k + 1, windows=int(ro.err.shape[0]), **s)
    schema = pa.schema([("table", pa.string()), ("model", pa.string()), ("seed", pa.int64()), ("mode", pa.string()),
                        ("step", pa.int64()), ("window_id", pa.string()), ("task", pa.string()), ("joint_group", pa.string()),
                        ("windows", pa.int64()), ("ADE", pa.float64()), ("FDE", pa.float64()), ("Acc", pa.float64())])
    return pa.table(rows, schema=schema)


def _overlay_items(summary: dict[str, Any], order: np.ndarray, gain: np.ndarray) -> list[dict[str, Any]]:
    from thinkjepa.data.egodex import decode_frames

    runs = summary["_runs"]
    refs, episodes, targets = summary["_refs"], summary["_episodes"], summary["_targets"]
    pg, pj = runs[GUIDED][0].pred, runs[REFERENCE][0].pred
    items = []
    for i in order:
        r = refs[i]
        ep = episodes.get(r)
        frame = r.window.pose_frame
        try:
            image = decode_frames(r.video_path, [frame], clip_id=r.window.clip_id)[0]
        except Exception:  # noqa: BLE001 - a picture without its frame still shows the paths
            image = None
        items.append({
            "window_id": r.key, "image": image, "K": ep.intrinsics, "pose": ep.camera_pose[frame],
            "past": ep.joints[list(r.window.past)], "truth": targets[i], GUIDED: pg[i], REFERENCE: pj[i],
            "gain": float(gain[i]),
        })
    return items


def _figures(cfg: PipelineConfig, out: Path, summary: dict[str, Any]) -> tuple[list[Block], list[str]]:
    models = summary["models"]
    blocks: list[Block] = [("h2", "Figures")]
    files: list[str] = []
    curves = {n: (m["ADE_by_step"], m["ADE_by_step_std"]) for n, m in models.items() if m["kind"] != "test_ablation"}
    files.append(plots.horizon_curves(out, "horizon_oneshot.png", curves, "One-shot: error per future frame (band: ± std over seeds)"))
    blocks.append(("image", (files[-1], "One-shot horizon curves")))
    fr = summary["rollout_window_set"]["frames_per_step"]
    for mode in summary["rollout_window_set"]["modes"]:
        rc = {n: (m["rollout"][mode]["ADE_by_frame"], m["rollout"][mode]["ADE_by_frame_std"])
              for n, m in models.items() if mode in m["rollout"] and m["kind"] != "test_ablation"}
        files.append(plots.horizon_curves(out, f"horizon_rollout_{mode}.png", rc,
                                          f"Rollout ({mode}): error per future frame over all steps", frames_per_step=fr))
        blocks.append(("image", (files[-1], f"Rollout horizon curves, mode {mode}")))
    if GUIDED in models and REFERENCE in models and models[GUIDED]["kind"] == "variant":
        ids = summary["window_set"]["ids"]
        a, b = models[GUIDED]["per_window_ADE"], models[REFERENCE]["per_window_ADE"]
        diffs = np.array([a[w] - b[w] for w in ids])
        files.append(plots.diff_histogram(out, "ade_diff_hist.png", diffs, "Per-window ADE difference (seed means)"))
        blocks.append(("image", (files[-1], "Histogram of per-window ADE differences")))
        gain = -diffs
        n = min(cfg.eval.overlay_windows, len(ids))
        order = np.argsort(-gain, kind="stable")
        for label, plural, sel in (("gain", "gains", order[:n]), ("loss", "losses", order[::-1][:n])):
            items = _overlay_items(summary, sel, gain)
            title = (f"Largest {plural} of {GUIDED} vs {REFERENCE} (gain = ADE {REFERENCE} - ADE {GUIDED}; "
                     f"forecasts of seed {summary['seeds'][GUIDED][0]}); green = truth, blue = {GUIDED}, orange = {REFERENCE}, grey = observed")
            files.append(plots.trajectory_overlays(out, f"overlay_{label}.png", items, title))
            blocks.append(("image", (files[-1], f"Trajectory overlays: largest {label}")))
    return blocks, files


def _headline(summary: dict[str, Any]) -> str | None:
    """The report's first sentence: what this run shows over the whole rollout, in plain words
    (thinkjepa against the capacity-matched JEPA-only and constant velocity, per rollout mode)."""
    models, rs = summary["models"], summary["rollout_window_set"]
    rows = [n for n in (GUIDED, MATCHED, "constant_velocity") if n in models]
    if GUIDED not in models or len(rows) < 2 or not rs["modes"]:
        return None
    parts = []
    for mode in rs["modes"]:
        ade = {n: models[n]["rollout"][mode]["ADE"] for n in rows if mode in models[n]["rollout"]}
        parts.append(f"`{mode}`: " + ", ".join(f"{n} {v:.4f}" for n, v in ade.items()))
    return (f"In this run, rolled out {rs['steps']} step(s) of {rs['frames_per_step']} frames on {rs['windows']} windows, "
            f"the mean ADE (m, over all steps and seeds) is " + "; ".join(parts) + ".")


def _blocks(cfg: PipelineConfig, summary: dict[str, Any]) -> list[Block]:
    models = summary["models"]
    ws, rs = summary["window_set"], summary["rollout_window_set"]
    thr = summary["acc_threshold_m"]
    b: list[Block] = [("h1", "ThinkJEPA evaluation")]
    headline = _headline(summary)
    if headline:
        b.append(("p", headline))
    b.append(("p", f"Split `{summary['split']}`: {ws['windows']} windows (set digest `{ws['digest']}`, identical for every "
                   f"model row). Metrics in metres, world frame; Acc = share of joint errors below {thr:g} m. Seeds: "
                   + ", ".join(f"{v} {s}" for v, s in summary["seeds"].items())
                   + ". Values are mean ± std over seeds. Two intervals of the ADE difference, * = it excludes 0: over "
                   "windows, the paired bootstrap of per-window values averaged over seeds (holds window-to-window noise "
                   "only: these trained models on these windows); over seeds, the paired t interval of the per-seed "
                   "differences (holds run-to-run noise: whether another training run would agree; shown with 2 or more "
                   "seeds, wide with few). Published numbers are "
                   "the paper's (EgoDex part 2, full-size models), for context only."))
    b.append(("h2", "Verdict"))
    verdicts = [_verdict(n, m["vs_jepa_only"], REFERENCE) for n, m in models.items() if "vs_jepa_only" in m]
    verdicts += [_seed_verdict(n, m["vs_jepa_only_seeds"], REFERENCE) for n, m in models.items() if "vs_jepa_only_seeds" in m]
    for n, m in models.items():
        if "vs_thinkjepa" in m:
            verdicts.append(_verdict(f"guidance {n.split(':', 1)[1]}", m["vs_thinkjepa"], f"{GUIDED} with its own guidance"))
    if GUIDED in models and "vs_jepa_only" in models[GUIDED]:
        c = models[GUIDED]["vs_jepa_only"]
        helps = c["significant"] and c["mean_diff"] <= -NEGLIGIBLE_M
        cs = models[GUIDED].get("vs_jepa_only_seeds")
        if not helps:
            word = "**does not measurably help**"
        elif cs is None:
            word = "**helps** on these windows (one training seed: whether another run agrees is not measured)"
        elif cs["significant"] and cs["mean_diff"] < 0:
            word = f"**helps**, on these windows and across the {cs['seeds']} training seeds"
        else:
            word = (f"**helps on these windows, but not significantly across the {cs['seeds']} training seeds** "
                    f"(lower in {cs['lower_in']} of them)")
        verdicts.append(f"In this run the thinker guidance {word} in one-shot forecasting ({GUIDED} vs {REFERENCE}).")
        shuffled = models.get(f"{GUIDED}:shuffled")
        if shuffled is not None:
            hurt = shuffled["vs_thinkjepa"]["significant"] and shuffled["vs_thinkjepa"]["mean_diff"] >= NEGLIGIBLE_M
            verdicts.append("Shuffling guidance across windows " + ("**hurts**: the model uses window-specific guidance."
                            if hurt else "**does not significantly hurt**: no evidence the model uses window-specific guidance."))
    b.append(("list", verdicts))
    b.append(("h2", "One-shot forecasts"))
    b.append(("table", _one_shot_table(models, ("variant", "baseline"))))
    b.append(("h2", "Recursive rollouts"))
    b.append(("p", f"{rs['steps']} step(s) of {rs['frames_per_step']} frames (asked: {rs['requested_steps']}) on the "
                   f"{rs['windows']} windows whose episodes have the frames (digest `{rs['digest']}`). Modes: `shifted` = the "
                   "next context is the newest past tubelets of [context; prediction]; `predicted` = the predicted tubelets alone. "
                   "Guidance and camera pose stay those of the last observed frame."))
    for mode in rs["modes"]:
        b.append(("h3", f"Mode `{mode}`"))
        b.append(("table", _rollout_table(models, mode)))
        b.append(("p", f"Latent metrics against the encoder's future latents where they exist; a step is flagged when the "
                       f"std ratio (collapse) or norm ratio (explosion) leaves [{HEALTHY[0]}, {HEALTHY[1]}]."
                       + (" **train.latent_loss_weight is 0**: the predicted latents were never trained to match the encoder's, "
                          "so these distances and flags say nothing about forecast quality here." if cfg.train.latent_loss_weight == 0 else "")))
        b.append(("table", _latent_table(models, mode)))
    b.append(("h2", "Guidance ablations at test time"))
    b.append(("p", f"The trained {GUIDED} checkpoints, guidance inputs replaced: zeroed, shuffled across windows of the "
                   "split, or taken from another window of the same clip. No retraining."))
    b.append(("table", _ablation_table(models)))
    b.append(("h2", "Training-time ablations"))
    trained = [n for n, m in models.items() if m["kind"] == "training_ablation"]
    if trained:
        b.append(("table", _one_shot_table(models, ("training_ablation",))))
    else:
        names = ", ".join(sorted(cfg.variants))
        b.append(("p", "None evaluated. " + (f"Add the config's `variants:` ({names}) to `eval.variants` to train and list them here."
                                              if names else "The config defines no `variants:` (pipelines.yaml has the paper's).")))
    b.append(("h2", "Per joint group"))
    b.append(("p", f"wrists: {len(JOINT_GROUPS['wrists'])} joints, fingertips: {len(JOINT_GROUPS['fingertips'])}, rest: {len(JOINT_GROUPS['rest'])}."))
    b.append(("table", _breakdown_table(models, "by_joint_group", "joint group")))
    b.append(("h2", "Per task"))
    b.append(("table", _breakdown_table(models, "by_task", "task")))
    gates = {v: g for v, g in summary["gates"].items() if any(x is not None for x in g.values())}
    if gates:
        b.append(("h2", "Guidance gates"))
        rows = [["variant", "seed", "tanh(gate) per predictor block"]]
        for v, g in gates.items():
            for s, vals in g.items():
                rows.append([v, s, ", ".join(f"{x:+.3f}" for x in vals)])
        b.append(("table", rows))
    if summary["notes"]:
        b.append(("h2", "Notes"))
        b.append(("list", summary["notes"]))
    return b


def _md(blocks: list[Block]) -> str:
    out: list[str] = []
    for kind, v in blocks:
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + v, ""]
        elif kind == "p":
            out += [v, ""]
        elif kind == "list":
            out += [f"- {x}" for x in v] + [""]
        elif kind == "table":
            out += ["| " + " | ".join(v[0]) + " |", "|" + "---|" * len(v[0])]
            out += ["| " + " | ".join(r) + " |" for r in v[1:]] + [""]
        elif kind == "image":
            out += [f"![{v[1]}]({v[0]})", ""]
    return "\n".join(out)


def _inline_md(text: str) -> str:
    """The little markdown the blocks use (**bold**, `code`) as HTML."""
    import re

    s = html.escape(text)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


def _html(blocks: list[Block], out: Path) -> str:
    body: list[str] = []
    for kind, v in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{_inline_md(v)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_md(v)}</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline_md(x)}</li>" for x in v) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline_md(c)}</th>" for c in v[0])
            rows = "".join("<tr>" + "".join(f"<td>{_inline_md(c)}</td>" for c in r) + "</tr>" for r in v[1:])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif kind == "image":
            data = base64.b64encode((out / v[0]).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(v[1])}" src="data:image/png;base64,{data}"><figcaption>{html.escape(v[1])}</figcaption></figure>')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
             "th{background:#f3f3f3}img{max-width:100%}figcaption{color:#555;font-size:12px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>ThinkJEPA evaluation</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def write_report(cfg: PipelineConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """Write every output of ``summary`` (from ``run.evaluate_all``); returns the public summary
    with the report paths."""
    out = cfg.path(cfg.eval.out)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(_parquet_rows(summary, summary["acc_threshold_m"]), out / "metrics.parquet")
    fig_blocks, files = _figures(cfg, out, summary)
    blocks = _blocks(cfg, summary)
    notes_at = next((i for i, (k, v) in enumerate(blocks) if k == "h2" and v == "Notes"), len(blocks))
    blocks = blocks[:notes_at] + fig_blocks + blocks[notes_at:]
    (out / "report.md").write_text(_md(blocks))
    (out / "report.html").write_text(_html(blocks, out))
    result = {**public(summary), "report": str(out / "report.md"), "html": str(out / "report.html"),
              "figures": files, "parquet": str(out / "metrics.parquet")}
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    save_config(cfg, out)
    return result


__all__ = ["BASELINES", "PUBLISHED", "format_ci", "write_report"]
