"""``tj-eval``'s outputs: ``metrics.json`` (the summary of ``thinkjepa.evaluate.run``),
``metrics.parquet`` (rows per window, task, joint group and rollout step), the pictures,
``report.md`` and a self-contained ``report.html`` (images inlined).

Both documents are rendered from one list of blocks (heading, paragraph, table, image), so
they always say the same thing.
"""

from __future__ import annotations

import base64
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
from thinkjepa.evaluate.run import BASELINES, GUIDED, MATCHED, REFERENCES, public, reference_of
from thinkjepa.evaluate.stats import HIERARCHICAL_METHOD, MIN_SEEDS, MIN_WINDOWS, SEED_METHOD, WINDOW_METHOD
from thinkjepa.evaluate.verdict import NEGLIGIBLE_M, decide, decide_rollout, fmt_diff

# Project page snapshot (docs/reference.md §1): EgoDex part 2, 32 past -> 32 future frames.
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


def format_ci(c: dict[str, Any] | None) -> str:
    """A comparison as ``mean [lo, hi]``, ``*`` when significant."""
    if not c:
        return "-"
    star = " *" if c["significant"] else ""
    return f"{fmt_diff(c['mean_diff'])} [{fmt_diff(c['lo'])}, {fmt_diff(c['hi'])}]{star}"


def format_seed_ci(c: dict[str, Any] | None) -> str:
    """An interval over seeds as ``mean [lo, hi] (lower in k/n)``, ``*`` when significant."""
    return format_ci(c) + (f" (lower in {c['lower_in']}/{c['seeds']})" if c else "")


def _one_shot_table(models: dict[str, dict[str, Any]], kinds: tuple[str, ...], ref: str) -> list[list[str]]:
    rows = [["model", "seeds", "windows", "ADE (m)", "FDE (m)", "Acc", f"ΔADE vs {ref} [95% CI, windows: BCa bootstrap]",
             f"ΔADE vs {ref} [95% CI, seeds: paired t]", "published ADE / FDE / Acc"]]
    for name, m in models.items():
        if m["kind"] not in kinds:
            continue
        pub = PUBLISHED.get(name)
        sd = _seeded(m)
        rows.append([name, str(len(m["seeds"]) or "-"), str(m["windows"]), _pm(m, "ADE", sd), _pm(m, "FDE", sd), _pm(m, "Acc", sd),
                     format_ci(m.get(f"vs_{ref}")), format_seed_ci(m.get(f"vs_{ref}_seeds")), f"{pub['ADE']:.4f} / {pub['FDE']:.4f} / {pub['Acc']:.4f}" if pub else "-"])
    return rows


def _rollout_table(models: dict[str, dict[str, Any]], mode: str, ref: str) -> list[list[str]]:
    any_m = next(m for m in models.values() if mode in m["rollout"])
    steps = any_m["rollout"][mode]["steps"]
    rows = [["model", *[f"step {k + 1} ADE" for k in range(steps)], "final FDE", "all-steps ADE", f"ΔADE vs {ref} [95% CI, windows: BCa bootstrap]"]]
    for name, m in models.items():
        ro = m["rollout"].get(mode)
        if ro is None or m["kind"] == "test_ablation":
            continue
        sd = _seeded(m)
        rows.append([name, *[_pm(s, "ADE", sd) for s in ro["per_step"]], _pm(ro["per_step"][-1], "FDE", sd), _pm(ro, "ADE", sd),
                     format_ci(m.get(f"rollout_vs_{ref}", {}).get(mode))])
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


def _overlay_items(summary: dict[str, Any], order: np.ndarray, gain: np.ndarray, ref: str) -> list[dict[str, Any]]:
    from thinkjepa.data.egodex import decode_frames

    runs = summary["_runs"]
    refs, episodes, targets = summary["_refs"], summary["_episodes"], summary["_targets"]
    pg, pj = runs[GUIDED][0].pred, runs[ref][0].pred
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
            "past": ep.joints[list(r.window.past)], "truth": targets[i], "guided": pg[i], "reference": pj[i],
            "gain": float(gain[i]),
        })
    return items


def _videos(out: Path, summary: dict[str, Any], sel: np.ndarray, gain: np.ndarray, ref: str, label: str) -> list[Block]:
    """An MP4 per selected window (``evaluate.video``); a window whose video cannot be decoded is
    named in the summary's notes and left out."""
    from thinkjepa.evaluate.video import window_video

    runs, refs, episodes, targets = summary["_runs"], summary["_refs"], summary["_episodes"], summary["_targets"]
    pg, pj = runs[GUIDED][0].pred, runs[ref][0].pred
    blocks: list[Block] = []
    for rank, i in enumerate(sel):
        r = refs[i]
        name = f"videos/{label}_{rank + 1}.mp4"
        try:
            window_video(out / name, episodes.get(r), r.window, r.video_path, targets[i],
                         {"guided": (GUIDED, pg[i]), "reference": (ref, pj[i])}, title=r.key)
        except Exception as e:  # noqa: BLE001 - a missing video costs the picture, not the report
            summary["notes"].append(f"Forecast video of {r.key} left out: {e}")
            continue
        blocks.append(("video", (name, f"{r.key} (gain {1000 * float(gain[i]):+.3f} mm)")))
    return blocks


def _figures(cfg: PipelineConfig, out: Path, summary: dict[str, Any]) -> tuple[list[Block], list[str], list[str]]:
    models = summary["models"]
    blocks: list[Block] = [("h2", "Figures")]
    files: list[str] = []
    videos: list[Block] = []
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
    ref = summary.get("reference") or reference_of(models)
    if ref is not None and GUIDED in models and models[GUIDED]["kind"] == "variant":
        ids = summary["window_set"]["ids"]
        a, b = models[GUIDED]["per_window_ADE"], models[ref]["per_window_ADE"]
        diffs = np.array([a[w] - b[w] for w in ids])
        files.append(plots.diff_histogram(out, "ade_diff_hist.png", diffs, "Per-window ADE difference (seed means)",
                                          xlabel=f"{GUIDED} - {ref}"))
        blocks.append(("image", (files[-1], "Histogram of per-window ADE differences")))
        gain = -diffs
        n = min(cfg.eval.overlay_windows, len(ids))
        order = np.argsort(-gain, kind="stable")
        for label, plural, sel in (("gain", "gains", order[:n]), ("loss", "losses", order[::-1][:n])):
            items = _overlay_items(summary, sel, gain, ref)
            title = (f"Largest {plural} of {GUIDED} vs {ref} (gain = ADE {ref} - ADE {GUIDED}; "
                     f"forecasts of seed {summary['seeds'][GUIDED][0]}); green = truth, blue = {GUIDED}, orange = {ref}, grey = observed")
            files.append(plots.trajectory_overlays(out, f"overlay_{label}.png", items, title))
            blocks.append(("image", (files[-1], f"Trajectory overlays: largest {label}")))
            videos += _videos(out, summary, sel, gain, ref, label)
        if videos:
            blocks.append(("h3", "Forecast videos"))
            blocks.append(("p", f"One MP4 per window above: the observed frames (grey: observed wrist and fingertip paths), then the "
                                f"future frames with the true paths (green), {GUIDED} (blue) and {ref} (orange), projected with "
                                "each frame's camera pose."))
            blocks.append(("list", [f"[{cap}]({f})" for _, (f, cap) in videos]))
    return blocks, files, [f for _, (f, _) in videos]


def verdict_of(summary: dict[str, Any]):
    """The verdict on the guided model against the summary's reference (``evaluate.verdict``):
    over the rollout in its first mode where one of 2 or more steps ran, else one-shot."""
    models = summary["models"]
    ref = summary.get("reference") or reference_of(models)
    one = decide(models, GUIDED, ref)
    rs = summary.get("rollout_window_set") or {}
    modes = rs.get("modes") or []
    return (decide_rollout(models, GUIDED, ref, modes[0], int(rs.get("steps", 1)), one) if modes else None) or one


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
    ref = summary.get("reference") or reference_of(models) or "jepa_only"
    v = verdict_of(summary)
    b: list[Block] = [("p", v.headline), ("h1", "ThinkJEPA evaluation")]
    headline = _headline(summary)
    if headline:
        b.append(("p", headline))
    b.append(("p", f"Split `{summary['split']}`: {ws['windows']} window{'' if ws['windows'] == 1 else 's'} (set digest `{ws['digest']}`, identical for every "
                   f"model row). Metrics in metres, world frame; Acc = share of joint errors below {thr:g} m. Seeds: "
                   + ", ".join(f"{name} {sd}" for name, sd in summary["seeds"].items())
                   + f". Values are mean ± std over seeds. Differences are against `{ref}` (the first of "
                   + ", ".join(f"`{r}`" for r in REFERENCES) + " evaluated). Two 95% intervals of the ADE difference, * = it "
                   f"excludes 0 and its counts reach the minimum: over windows ({WINDOW_METHOD}) of per-window values "
                   "averaged over seeds (window-to-window noise only: these trained models on these windows); over seeds "
                   f"({SEED_METHOD}) of the per-seed differences (run-to-run noise: whether another training run would agree), "
                   f"with the {HIERARCHICAL_METHOD} beside it. Nothing is called significant below {MIN_WINDOWS} windows or, "
                   f"across training runs, {MIN_SEEDS} seeds. Published numbers are the paper's (EgoDex part 2, full-size "
                   "models), for context only."))
    b.append(("h2", "Verdict"))
    lines = list(v.lines)
    for n, m in models.items():
        if n != GUIDED and m["kind"] != "test_ablation" and f"vs_{ref}" in m:
            c = m[f"vs_{ref}"]
            lines.append(f"{n} vs {ref}, over windows: {format_ci(c)}" + (f"; over seeds: {format_seed_ci(m[f'vs_{ref}_seeds'])}"
                                                                          if f"vs_{ref}_seeds" in m else ""))
    for n, m in models.items():
        if "vs_thinkjepa" in m:
            lines.append(f"Guidance {n.split(':', 1)[1]} at test time vs {GUIDED} with its own guidance, over windows: {format_ci(m['vs_thinkjepa'])}")
    shuffled = models.get(f"{GUIDED}:shuffled")
    if shuffled is not None:
        c = shuffled["vs_thinkjepa"]
        hurt = c["significant"] and c["mean_diff"] >= NEGLIGIBLE_M
        lines.append("Shuffling guidance across windows " + ("**hurts**: the model uses window-specific guidance." if hurt else
                     "**does not significantly hurt**" + ("" if c["enough"] else f" (fewer than {c['min_windows']} windows)")
                     + ": no evidence the model uses window-specific guidance."))
    b.append(("list", lines))
    b.append(("h2", "One-shot forecasts"))
    b.append(("table", _one_shot_table(models, ("variant", "baseline"), ref)))
    b.append(("h2", "Recursive rollouts"))
    b.append(("p", f"{rs['steps']} step(s) of {rs['frames_per_step']} frames (asked: {rs['requested_steps']}) on the "
                   f"{rs['windows']} windows whose episodes have the frames (digest `{rs['digest']}`). Modes: `shifted` = the "
                   "next context is the newest past tubelets of [context; prediction]; `predicted` = the predicted tubelets alone. "
                   "Guidance and camera pose stay those of the last observed frame."))
    for mode in rs["modes"]:
        b.append(("h3", f"Mode `{mode}`"))
        b.append(("table", _rollout_table(models, mode, ref)))
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
        b.append(("table", _one_shot_table(models, ("training_ablation",), ref)))
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
        elif kind == "video":
            out += [f"[{v[1]}]({v[0]})", ""]
    return "\n".join(out)


_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
          "th{background:#f3f3f3}img{max-width:100%}")


def _html(markdown: str, out: Path) -> str:
    """``report.md`` as a self-contained page: CommonMark with tables (markdown-it-py), every PNG
    it shows inlined as a data URI (the page travels alone); links (the videos) stay relative."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown)
    for tok in tokens:
        for child in tok.children or []:
            src = str(child.attrGet("src") or "")
            if child.type == "image" and src.endswith(".png") and (out / src).is_file():
                child.attrSet("src", "data:image/png;base64," + base64.b64encode((out / src).read_bytes()).decode())
    body = md.renderer.render(tokens, md.options, {})
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>ThinkJEPA evaluation</title><style>{_STYLE}</style>"
            f"</head><body>{body}</body></html>\n")


def write_report(cfg: PipelineConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """Write every output of ``summary`` (from ``run.evaluate_all``); returns the public summary
    with the report paths."""
    out = cfg.path(cfg.eval.out)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(_parquet_rows(summary, summary["acc_threshold_m"]), out / "metrics.parquet")
    fig_blocks, files, videos = _figures(cfg, out, summary)
    blocks = _blocks(cfg, summary)
    notes_at = next((i for i, (k, v) in enumerate(blocks) if k == "h2" and v == "Notes"), len(blocks))
    blocks = blocks[:notes_at] + fig_blocks + blocks[notes_at:]
    markdown = _md(blocks)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(_html(markdown, out))
    result = {**public(summary), "report": str(out / "report.md"), "html": str(out / "report.html"),
              "figures": files, "videos": videos, "parquet": str(out / "metrics.parquet"),
              "verdict": verdict_of(summary).headline}
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    save_config(cfg, out)
    return result



def eval_table(summary: dict[str, Any], variant: str, seed: int) -> str:
    """The Evaluation section of the model card of ``variant``'s run with training ``seed``
    (``train.hub``): this run's one-shot ADE / FDE / Acc and its rollout error per step, beside
    its variant over all seeds and the baselines it was compared against, on the split and
    window set that ``summary`` (what metrics.json holds) names."""
    models, ws, rs = summary["models"], summary["window_set"], summary["rollout_window_set"]
    m, key = models[variant], str(seed)
    ref = summary.get("reference") or reference_of(models)
    ckpt = summary["checkpoints"][variant][key]
    others = [n for n in (*REFERENCES, *BASELINES) if n in models and n != variant]
    own = m["per_seed"][key]
    rows = [["model", "seeds", "windows", "ADE (m)", "FDE (m)", "Acc", f"ΔADE vs {ref} [95% CI, windows: BCa bootstrap]"],
            [f"**this model** ({variant}, seed {seed})", key, str(m["windows"]), *(f"{own[k]:.4f}" for k in ("ADE", "FDE", "Acc")), "-"]]
    for name in ([variant] if _seeded(m) else []) + others:
        o = models[name]
        label = f"{name}, all seeds" if name == variant else name + (" (reference)" if name == ref else "")
        rows.append([label, str(len(o["seeds"]) or "-"), str(o["windows"]), *(_pm(o, k, _seeded(o)) for k in ("ADE", "FDE", "Acc")),
                     format_ci(o.get(f"vs_{ref}"))])
    b: list[Block] = [
        ("p", f"Measured by `tj-eval` on split `{summary['split']}`: {ws['windows']} windows (window set `{ws['digest']}`), "
              f"checkpoint step {ckpt.get('step')}, training seeds of {variant}: {', '.join(map(str, m['seeds'])) or '-'}. "
              f"Acc: share of joints within {summary['acc_threshold_m']} m. Rows other than this model: mean ± std over "
              f"their seeds (baselines have none); ΔADE < 0: lower error than `{ref}`."),
        ("table", rows)]
    for mode in (x for x in rs["modes"] if x in m["rollout"]):
        steps = m["rollout"][mode]["steps"]
        per_window = np.asarray(m["rollout"][mode]["per_seed_window_step"][key]["ADE"], np.float64)
        final_fde = np.asarray(m["rollout"][mode]["per_seed_window_step"][key]["FDE"], np.float64)[:, -1].mean()
        roll = [["model", *[f"step {k + 1} ADE" for k in range(steps)], "final FDE"],
                [f"**this model** (seed {seed})", *(f"{x:.4f}" for x in per_window.mean(axis=0)), f"{final_fde:.4f}"]]
        for name in ([variant] if _seeded(m) else []) + [n for n in others if mode in models[n]["rollout"]]:
            ro, sd = models[name]["rollout"][mode], _seeded(models[name])
            roll.append([f"{name}, all seeds" if name == variant else name, *(_pm(x, "ADE", sd) for x in ro["per_step"]),
                         _pm(ro["per_step"][-1], "FDE", sd)])
        b += [("p", f"Recursive rollout, mode `{mode}`: {steps} step(s) of {rs['frames_per_step']} frames on {rs['windows']} "
                    f"windows (window set `{rs['digest']}`)."), ("table", roll)]
    return _md(b).rstrip()


def write_model_cards(cfg: PipelineConfig, summary: dict[str, Any]) -> list[Path]:
    """Save every training run ``summary`` scored again as ``<run>/pretrained`` with its eval
    table in the model card (``train.export``); a failure is a warning naming the run. Returns
    the folders written."""
    from thinkjepa.train.checkpoint import seed_run_dir
    from thinkjepa.train.export import export_after_training

    out = []
    for variant, seeds in summary["seeds"].items():
        for seed in seeds:
            folder = export_after_training(seed_run_dir(cfg.path(cfg.train.out), variant, seed), eval_table(summary, variant, seed))
            if folder is not None:
                out.append(folder)
    return out


__all__ = ["BASELINES", "PUBLISHED", "eval_table", "format_ci", "verdict_of", "write_model_cards", "write_report"]
