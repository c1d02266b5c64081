"""Fault-injection soak: kills, power cuts and damage, then the stage reruns; nothing may be lost.

    uv run --extra cpu python benchmarks/soak_faults.py [--kills 20] [--power-cuts 15] [--damage 20]
        [--vllm-kills 12] [--vllm-cuts 6] [--side-by-side 2]

A tiny but real world (synthetic EgoDex episodes, the tiny random Qwen3-VL Thinking through the
transformers backend, the tiny V-JEPA2, CPU training) is first run once without faults: the
reference. Then each trial starts from the state before one stage, injects one fault, reruns
the stage to completion and compares with the reference:

- SIGKILL at a random moment of ``tj-extract run``, ``tj encode``, ``tj-train`` or ``tj run``
  (separate processes, as on a cluster);
- power cut during extract or encode: every fsync and syncfs is tracked, and at a random one
  the store is copied as a disk would hold it after the cut -- each file cut back to what was
  fsync'ed of it, or what it held at the last syncfs (a file never synced is empty) -- then
  the writer is stopped there;
- damage: a flipped byte or a truncated chunk/shard file, an emptied or garbled commit record
  of a random entry; ``tj cache verify --repair`` runs before the stage reruns.

- the production path (``--vllm-kills``, ``--vllm-cuts``, ``--side-by-side``): ``tj-extract run``
  with the vLLM backend, hit by SIGKILL, SIGINT or SIGTERM of the main process, SIGKILL or
  SIGINT of its engine core process, or SIGINT of the whole process group (a terminal's
  Ctrl-C); power cuts at a random fsync or syncfs of the commit thread with a warm vLLM engine; and the
  README's cluster recipe run side by side (``tj run --shard 0/2 extract encode`` and
  ``--shard 1/2`` at once, one of them SIGKILLed in every other trial). A signal the command
  handles must exit 128 + signal with no window recorded failed; a dead engine core, exit 1
  with none recorded failed.

Caches must come back bitwise identical (every array of every entry, text and ids), training
must end with identical weights. One line is printed: trials, faults survived, entries lost
(reference entries missing afterwards), stale uses (entries or weights that differ from the
reference yet were kept as done). ``run_soak`` is called with a few trials by the test suite.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

STAGE_CMDS = {
    "extract": ["-m", "thinkjepa.app.cli.main", "extract", "run"],
    "encode": ["-m", "thinkjepa.app.cli.main", "encode"],
    "train": ["-m", "thinkjepa.app.cli.main", "train"],
    "run": ["-m", "thinkjepa.app.cli.main", "run", "index", "extract", "encode", "train"],
}
CACHE_OF = {"extract": "vlm", "encode": "jepa"}
KILL_STAGES = ("extract", "encode", "train", "run")
AIM_TRIES = 3
"""A kill that comes after its process finished injects nothing: the trial is tried again
from its start state, sooner (kills) or at a fresh moment (vLLM signals), this many times."""


class PowerCut(BaseException):
    """Raised at the chosen fsync: the writer stops dead there (BaseException: nothing catches it)."""


@dataclass
class Tally:
    trials: int = 0
    faults: int = 0
    """Trials whose fault landed (a kill after the process had finished injects nothing)."""
    survived: int = 0
    lost: int = 0
    stale: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, lost: int, stale: int, note: str = "", fault: bool = True) -> None:
        self.trials += 1
        self.faults += int(fault)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        self.lost += lost
        self.stale += stale
        if lost == 0 and stale == 0:
            self.survived += int(fault)
        elif note:
            self.notes.append(f"{kind}: {note}")

    def line(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items()))
        return (f"soak: trials {self.trials}, faults survived {self.survived}/{self.faults}, "
                f"entries lost {self.lost}, stale uses {self.stale} ({kinds})")


# -- the world ------------------------------------------------------------------------------


def config_doc(root: Path) -> dict:
    return {
        "workdir": str(root / "work"),
        "data": {"root": str(root / "data"), "split_seed": 0, "split_fractions": [0.34, 0.33, 0.33]},
        "sampling": {"mode": "stride", "past_frames": 8, "future_frames": 8, "stride": 1, "thinker_frames": 4,
                     "windows_per_clip": 2, "window_hop": 4},
        "thinker": {"model": str(root / "models" / "qwen"), "backend": "transformers", "layers": [0, 1, 2, 3],
                    "frame_size": 64, "max_new_tokens": 4, "compute_dtype": "float32", "max_model_len": 512,
                    "clips_per_call": 1, "storage_dtype": "float16"},
        "encoder": {"model": str(root / "models" / "vjepa2"), "frame_size": 64, "batch_size": 1,
                    "storage_dtype": "float32"},
        "model": {"pred_depth": 2, "pred_width": 32, "pred_heads": 4, "dropout": 0.1, "drop_path": 0.1,
                  "guidance_dim": 16, "film_hidden": 32, "guidance_tokens": 8, "head_hidden": 32, "head_heads": 2},
        "train": {"max_steps": 8, "batch_size": 2, "num_workers": 0, "checkpoint_every": 2, "eval_every": 1,
                  "mixed_precision": "no", "lr_predictor": 1e-3, "lr_head": 3e-3, "seed": 0},
        "eval": {"variants": ["thinkjepa"]},
    }


def env() -> dict[str, str]:
    # one thread everywhere: the reference and every rerun reduce in the same order
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONHASHSEED": "0"}


def build_world(root: Path, episodes: int = 6) -> Path:
    """Data, tiny models, config and manifest under ``root``; returns the config file."""
    from thinkjepa.config import load_config
    from thinkjepa.data.manifest import build_manifest
    from thinkjepa.data.synth import synthesize_dataset
    from thinkjepa.tiny.qwen3vl import build_tiny_qwen3vl_thinking
    from thinkjepa.tiny.vjepa2 import build_tiny_vjepa2

    root.mkdir(parents=True, exist_ok=True)
    synthesize_dataset(root / "data", episodes=episodes, seed=0, n_frames=32, size=64, tasks=3)
    build_tiny_qwen3vl_thinking(root / "models" / "qwen", seed=0)
    build_tiny_vjepa2(root / "models" / "vjepa2", frames_per_clip=8, crop_size=64)
    cfg_file = root / "pipelines.yaml"
    cfg_file.write_text(yaml.safe_dump(config_doc(root)))
    cfg = load_config(cfg_file)
    build_manifest(cfg.data.root, cfg.path(cfg.data.manifest), cfg.data, cfg.sampling)
    return cfg_file


def stage_cmd(cfg_file: Path, stage: str, workdir: Path, *sets: str) -> list[str]:
    return [sys.executable, *STAGE_CMDS[stage], "--config", str(cfg_file), "--set", f"workdir={workdir}",
            *(x for kv in sets for x in ("--set", kv))]


def run_stage(cfg_file: Path, stage: str, workdir: Path, kill_after: float | None = None) -> tuple[int, float]:
    """Run ``stage`` as its own process on ``workdir``; SIGKILL it after ``kill_after`` s."""
    cmd = stage_cmd(cfg_file, stage, workdir)
    log = open(workdir / f"soak-{stage}.log", "ab")  # noqa: SIM115 - closed below
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        if kill_after is None:
            rc = p.wait(1800)
        else:
            try:
                rc = p.wait(kill_after)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                rc = p.wait(60)
    finally:
        log.close()
    return rc, time.monotonic() - t0


# -- comparison -----------------------------------------------------------------------------


def cache_diff(url: str, ref_url: str) -> tuple[list[str], list[str]]:
    """(reference keys missing, keys whose content differs from the reference)."""
    from thinkjepa.cache_schema import CacheError, CacheReader, store_exists

    ref = CacheReader(ref_url)
    if not store_exists(url):
        return ref.keys(), []
    r = CacheReader(url)
    missing = sorted(set(ref.keys()) - set(r.keys()))
    differ = []
    for key in sorted(set(ref.keys()) & set(r.keys())):
        try:
            a, b = r.get(key), ref.get(key)
        except CacheError:
            differ.append(key)
            continue
        same = all(np.array_equal(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__
                   if isinstance(getattr(a, f), np.ndarray))
        if not same or getattr(a, "text", None) != getattr(b, "text", None):
            differ.append(key)
    return missing, differ


def weights_differ(run_dir: Path, ref_dir: Path) -> str:
    """'' when the last checkpoints hold the same weights, else why not."""
    import torch

    from thinkjepa.train.checkpoint import checkpoint_path, load_checkpoint

    ref = load_checkpoint(checkpoint_path(ref_dir))  # the reference missing is the soak's bug, not a fault
    try:
        a = load_checkpoint(checkpoint_path(run_dir))
    except (FileNotFoundError, ValueError) as e:
        return f"checkpoint unreadable: {e}"
    same = a["model"].keys() == ref["model"].keys() and all(torch.equal(a["model"][k], ref["model"][k])
                                                            for k in a["model"])
    return "" if same else "weights differ"


# -- faults ---------------------------------------------------------------------------------


class FsyncTracker:
    """Follows fsync/syncfs/rename/link in this process; ``snapshot`` copies a store as a power
    cut at this moment would leave it: each file cut to its size at its last fsync, or at the
    last syncfs of the filesystem (0 if neither)."""

    def __init__(self, cut_at: int, store: Path, out: Path) -> None:
        from thinkjepa.cache_schema import fsio

        self.cut_at, self.store, self.out = cut_at, store.absolute(), out
        self.count = 0
        self.synced: dict[str, int] = {}
        self._fsio = fsio
        self._real = (os.fsync, os.replace, os.link, fsio.sync_filesystem)

    def _synced_one(self) -> None:
        self.count += 1
        if self.count == self.cut_at:
            self.snapshot()
            raise PowerCut

    def __enter__(self) -> FsyncTracker:
        real_fsync, real_replace, real_link, real_syncfs = self._real

        def fsync(fd):
            real_fsync(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.isfile(path):
                self.synced[path] = os.fstat(fd).st_size
            self._synced_one()

        def sync_filesystem(path):
            real_syncfs(path)
            for p in self.store.rglob("*"):  # the store is the part of the filesystem judged
                if p.is_file():
                    self.synced[str(p)] = p.stat().st_size
            self._synced_one()

        def replace(src, dst, *a, **k):
            real_replace(src, dst, *a, **k)
            src, dst = os.path.abspath(src), os.path.abspath(dst)
            if src in self.synced:
                self.synced[dst] = self.synced.pop(src)
            else:
                self.synced.pop(dst, None)

        def link(src, dst, *a, **k):
            real_link(src, dst, *a, **k)
            src, dst = os.path.abspath(src), os.path.abspath(dst)
            if src in self.synced:
                self.synced[dst] = self.synced[src]

        os.fsync, os.replace, os.link = fsync, replace, link
        self._fsio.sync_filesystem = sync_filesystem
        return self

    def __exit__(self, *exc) -> None:
        os.fsync, os.replace, os.link, self._fsio.sync_filesystem = self._real

    def snapshot(self) -> None:
        shutil.copytree(self.store, self.out)
        for p in self.out.rglob("*"):
            if p.is_file():
                keep = self.synced.get(str(self.store / p.relative_to(self.out)), 0)
                with open(p, "r+b") as f:
                    f.truncate(min(keep, p.stat().st_size))


def damage(url: str, rng: random.Random) -> str:
    """Damage one random committed entry in one of four ways; returns its key."""
    from thinkjepa.cache_schema import CacheReader
    from thinkjepa.cache_schema.schema import record_path

    r = CacheReader(url)
    rec = r.record(rng.choice(r.keys()))
    how = rng.choice(["flip", "truncate", "empty_record", "garble_record"])
    if how in ("flip", "truncate"):
        files = sorted(p for p in (Path(url) / rec["path"]).rglob("c.*") if p.stat().st_size)
        f = rng.choice(files)
        raw = bytearray(f.read_bytes())
        if how == "flip":
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        else:
            raw = raw[: rng.randrange(len(raw))]
        f.write_bytes(bytes(raw))
    else:
        rf = Path(url) / record_path(rec["part"], rec["key"])
        rf.write_bytes(b"" if how == "empty_record" else rf.read_bytes()[: rng.randrange(1, 40)] + b"\x00garbage")
    return rec["key"]


# the caches a trial of each stage starts with (what the stages before it in `tj run` wrote)
KEEP = {"extract": (), "encode": ("vlm",), "train": ("vlm", "jepa"), "run": ()}


# -- the soak -------------------------------------------------------------------------------


def run_soak(root: Path, kills: int = 20, power_cuts: int = 5, damages: int = 10, seed: int = 0,
             kill_stages: tuple[str, ...] = KILL_STAGES,
             cut_stages: tuple[str, ...] = ("extract", "encode"), log=None, vllm_kills: int = 0, vllm_cuts: int = 0,
             side_by_side: int = 0) -> Tally:
    """The soak in folder ``root``; faults round-robin over ``kill_stages`` / ``cut_stages``."""
    import torch

    from thinkjepa.cache_schema import repair
    from thinkjepa.config import load_config
    from thinkjepa.extract.backends import make_backend
    from thinkjepa.extract.encode import JepaEncoder, run_encode
    from thinkjepa.extract.runner import run_shard
    from thinkjepa.train.checkpoint import seed_run_dir

    if log is None:
        def log(msg: str) -> None:
            print(msg, flush=True)
    rng = random.Random(seed)
    root = Path(root)
    cfg_file = build_world(root)
    base = root / "work"
    torch.set_num_threads(1)

    # reference: each stage needed once, as its own process; its wall time sizes the kill delays
    ref = root / "ref"
    shutil.copytree(base, ref)
    seconds = {}
    used = set(kill_stages[:kills]) | (set(cut_stages) if power_cuts or damages else set())
    # a trial starts from the caches of the stages before it (KEEP), so those are needed too
    kept = {st for u in used for c in KEEP[u] for st, cache in CACHE_OF.items() if cache == c}
    needed = [s for s in ("extract", "encode", "train") if s in used | kept or ({"train", "run"} & used)]
    for stage in needed:
        rc, seconds[stage] = run_stage(cfg_file, stage, ref)
        if rc != 0:
            raise RuntimeError(f"reference {stage} failed (rc {rc}); see {ref}/soak-{stage}.log")
    # one process runs every stage, so imports and start-up are paid once: shorter than the sum
    seconds["run"] = 0.6 * sum(seconds.values())
    cache_url = {s: str(ref / "cache" / f"{CACHE_OF[s]}.zarr") for s in CACHE_OF}
    log(f"reference: {', '.join(f'{k} {v:.1f} s' for k, v in seconds.items())}")

    def state_before(stage: str, name: str) -> Path:
        w = root / "trials" / name
        shutil.copytree(base, w)
        for c in KEEP[stage]:
            shutil.copytree(ref / "cache" / f"{c}.zarr", w / "cache" / f"{c}.zarr")
        return w

    def judge(stage: str, w: Path) -> tuple[int, int, str]:
        lost = stale = 0
        notes = []
        for s in ("extract", "encode") if stage == "run" else (stage,) if stage in CACHE_OF else ():
            missing, differ = cache_diff(str(w / "cache" / f"{CACHE_OF[s]}.zarr"), cache_url[s])
            lost, stale = lost + len(missing), stale + len(differ)
            if missing or differ:
                notes.append(f"{s}: missing {missing[:2]} differ {differ[:2]}")
        if stage in ("train", "run"):
            # the soak's config trains one variant, one seed
            why = weights_differ(*(seed_run_dir(r / "train", "thinkjepa", 0) for r in (w, ref)))
            if why:
                stale += 1
                notes.append(why)
        return lost, stale, "; ".join(notes)

    tally = Tally()
    cfg0 = load_config(cfg_file)
    engines: dict[str, object] = {}

    def rerun(stage: str, w: Path) -> None:
        cfg = cfg0.model_copy(update={"workdir": str(w)})
        if stage == "extract":
            if "extract" not in engines:
                engines["extract"] = make_backend(cfg.thinker, device="cpu")
            run_shard(cfg, backend=engines["extract"], progress=False)
        else:
            if "encode" not in engines:
                engines["encode"] = JepaEncoder(cfg.encoder, device="cpu")
            run_encode(cfg, encoder=engines["encode"], progress=False)

    for i in range(power_cuts):
        stage = cut_stages[i % len(cut_stages)]
        w = state_before(stage, f"cut-{i:02d}-{stage}")
        store = w / "cache" / f"{CACHE_OF[stage]}.zarr"
        with FsyncTracker(cut_at=10**9, store=store, out=w / "probe") as probe:  # count a whole run's fsyncs
            rerun(stage, w)
        total = probe.count
        shutil.rmtree(store)
        cut_at = rng.randrange(1, total + 1)
        try:
            with FsyncTracker(cut_at, store, w / "after-cut"):
                rerun(stage, w)
        except PowerCut:
            pass
        if not (w / "after-cut").exists():  # this run made fewer fsyncs than the probe: no cut landed
            tally.add(f"power-cut-{stage}", 0, 0, fault=False)
            shutil.rmtree(w)
            continue
        shutil.rmtree(store)
        (w / "after-cut").rename(store)
        rerun(stage, w)
        lost, stale, note = judge(stage, w)
        tally.add(f"power-cut-{stage}", lost, stale, note)
        log(f"power cut {stage} at fsync {cut_at}/{total}: lost {lost}, stale {stale} {note}")
        shutil.rmtree(w)

    for i in range(damages):
        stage = cut_stages[i % len(cut_stages)]
        w = state_before("train", f"damage-{i:02d}-{stage}")  # both caches complete
        url = str(w / "cache" / f"{CACHE_OF[stage]}.zarr")
        key = damage(url, rng)
        report = repair(url)
        rerun(stage, w)
        lost, stale, note = judge(stage, w)
        if set(report.uncommitted) != {key}:
            stale += 1
            note = f"repair un-committed {sorted(report.uncommitted)}, damaged {key} {note}"
        tally.add(f"damage-{stage}", lost, stale, note)
        log(f"damage {stage} {key}: repaired {sorted(report.uncommitted)}, lost {lost}, stale {stale} {note}")
        shutil.rmtree(w)
    for i in range(kills):
        stage = kill_stages[i % len(kill_stages)]
        delay = rng.uniform(0.3, 0.95) * seconds[stage]
        for attempt in range(AIM_TRIES):
            w = state_before(stage, f"kill-{i:02d}-{stage}")
            rc, _ = run_stage(cfg_file, stage, w, kill_after=delay)
            if rc == -signal.SIGKILL or attempt == AIM_TRIES - 1:
                break
            # the stage finished before the kill (a loaded machine's timings drift from the
            # reference's): the same trial again from its start state, killed sooner
            log(f"kill {stage} after {delay:.1f} s came too late (rc {rc}); again at {delay / 2:.1f} s")
            shutil.rmtree(w)
            delay /= 2
        rc2, _ = run_stage(cfg_file, stage, w)
        lost, stale, note = judge(stage, w)
        if rc2 != 0:
            note = f"rerun failed (rc {rc2}) {note}"
            stale += 1
        tally.add(f"kill-{stage}", lost, stale, note, fault=rc == -signal.SIGKILL)
        log(f"kill {stage} after {delay:.1f} s (rc {rc}): lost {lost}, stale {stale} {note}")
        shutil.rmtree(w)

    for e in engines.values():
        close = getattr(e, "close", None)
        if close is not None:
            close()
    jepa = cache_url.get("encode") if (ref / "cache" / "jepa.zarr").exists() else None
    vllm_trials(root, cfg_file, base, jepa, tally, rng, vllm_kills, vllm_cuts, side_by_side, log)
    return tally


# -- the production path: vLLM ---------------------------------------------------------------

VLLM = ("thinker.backend=vllm",)
SIGNAL_TRIALS = ("sigkill-main", "sigint-group", "sigint-engine", "sigkill-engine", "sigint-main", "sigterm-main")
"""What a vLLM kill trial hits, round-robin: (signal)-(target)."""


def engine_cores(pid: int) -> list[int]:
    """Child processes of ``pid`` (vLLM's engine core is one), from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def committed(url: str) -> int:
    from thinkjepa.cache_schema import CacheReader, store_exists

    return len(CacheReader(url).keys()) if store_exists(url) else 0


def vllm_trials(root: Path, cfg_file: Path, base: Path, ref_jepa: str | None, tally: Tally, rng: random.Random,
                kills: int, cuts: int, side: int, log) -> None:
    """The vLLM trials (see the module doc): their own reference, one warm engine for reruns."""
    from thinkjepa.cache_schema import CacheReader, store_exists
    from thinkjepa.config import load_config
    from thinkjepa.extract.backends import make_backend
    from thinkjepa.extract.runner import run_shard

    if not (kills or cuts or side):
        return
    ref = root / "ref-vllm"
    shutil.copytree(base, ref)
    t0 = time.monotonic()
    rc = subprocess.run(stage_cmd(cfg_file, "extract", ref, *VLLM), env=env(), capture_output=True).returncode
    if rc != 0:
        raise RuntimeError(f"reference vLLM extract failed (rc {rc})")
    log(f"reference vLLM extract: {time.monotonic() - t0:.1f} s")
    ref_url = str(ref / "cache" / "vlm.zarr")
    cfg0 = load_config(cfg_file, list(VLLM))
    # the warm engine's core process must run with the stage processes' threads: bitwise equal entries
    os.environ.update({k: v for k, v in env().items() if k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                                "TOKENIZERS_PARALLELISM", "PYTHONHASHSEED")})
    engine = make_backend(cfg0.thinker)

    def rerun(w: Path) -> None:
        run_shard(cfg0.model_copy(update={"workdir": str(w)}), backend=engine, progress=False)

    def judge(w: Path, extra_stale: int = 0, note: str = "", jepa: bool = False) -> tuple[int, int, str]:
        missing, differ = cache_diff(str(w / "cache" / "vlm.zarr"), ref_url)
        lost, stale = len(missing), len(differ) + extra_stale
        if jepa and ref_jepa is not None:
            m2, d2 = cache_diff(str(w / "cache" / "jepa.zarr"), ref_jepa)
            lost, stale = lost + len(m2), stale + len(d2)
        if missing or differ:
            note = f"{note} missing {missing[:2]} differ {differ[:2]}"
        return lost, stale, note.strip()

    try:
        for i in range(cuts):
            w = root / "trials" / f"vllm-cut-{i:02d}"
            shutil.copytree(base, w)
            store = w / "cache" / "vlm.zarr"
            with FsyncTracker(cut_at=10**9, store=store, out=w / "probe") as probe:
                rerun(w)
            total = probe.count
            shutil.rmtree(store)
            cut_at = rng.randrange(1, total + 1)
            try:
                with FsyncTracker(cut_at, store, w / "after-cut"):
                    rerun(w)
            except PowerCut:
                pass
            if not (w / "after-cut").exists():  # fewer fsyncs than the probe's run: no cut landed
                tally.add("vllm-power-cut-extract", 0, 0, fault=False)
                log(f"vLLM power cut at fsync {cut_at}/{total}: not reached (the run made fewer fsyncs)")
                shutil.rmtree(w)
                continue
            shutil.rmtree(store)
            (w / "after-cut").rename(store)
            rerun(w)
            lost, stale, note = judge(w)
            tally.add("vllm-power-cut-extract", lost, stale, note)
            log(f"vLLM power cut at fsync {cut_at}/{total}: lost {lost}, stale {stale} {note}")
            shutil.rmtree(w)

        for i in range(kills):
            how = SIGNAL_TRIALS[i % len(SIGNAL_TRIALS)]
            sig_name, target = how.split("-")
            signum = {"sigkill": signal.SIGKILL, "sigint": signal.SIGINT, "sigterm": signal.SIGTERM}[sig_name]
            for attempt in range(AIM_TRIES):
                w = root / "trials" / f"vllm-kill-{i:02d}-{how}"
                shutil.copytree(base, w)
                url = str(w / "cache" / "vlm.zarr")
                log_file = open(w / "soak-extract.log", "wb")  # noqa: SIM115 - closed below
                p = subprocess.Popen(stage_cmd(cfg_file, "extract", w, *VLLM), env=env(), stdout=log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
                landed = False
                try:
                    deadline = time.monotonic() + 900
                    while committed(url) < 1 and p.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.05)
                    time.sleep(rng.uniform(0.0, 1.5) / 2 ** attempt)
                    if p.poll() is None:
                        victims = engine_cores(p.pid) if target == "engine" else [p.pid]
                        if target == "group":
                            os.killpg(p.pid, signum)
                        for v in victims if target != "group" else []:
                            os.kill(v, signum)
                        landed = bool(victims) or target == "group"
                    try:
                        rc: int | None = p.wait(300)
                    except subprocess.TimeoutExpired:  # a hang is a failure of the trial, not of the soak
                        rc = None
                finally:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
                    try:
                        os.killpg(p.pid, signal.SIGKILL)  # an engine core orphaned by a SIGKILLed main
                    except ProcessLookupError:
                        pass
                    log_file.close()
                extra, note = 0, ""
                failures = CacheReader(url).failures() if store_exists(url) else {}
                expected = {"sigkill-main": -signal.SIGKILL, "sigkill-engine": 1, "sigint-engine": 1}.get(how, 128 + signum)
                if landed and rc == 0 and how.endswith("-engine") and not failures:
                    # the engine core died after the last request: a finished shard is a right exit 0,
                    # an unfinished one is a run that says it is done when it is not
                    if committed(url) == committed(ref_url):
                        landed, note = False, "the engine died after the last commit (shard complete, exit 0)"
                    else:
                        extra, note = 1, f"rc 0 with {committed(ref_url) - committed(url)} windows missing"
                elif landed and (rc != expected or failures):
                    said = "hung (no exit within 300 s of the signal)" if rc is None else f"rc {rc}"
                    extra, note = 1, f"{said} (expected {expected}), {len(failures)} recorded failed"
                if landed or attempt == AIM_TRIES - 1:
                    break
                # the shard finished before the signal reached it: the same trial again, signalled sooner
                log(f"vLLM {how}: the run finished before the signal (rc {rc}{', ' + note if note else ''}); again")
                shutil.rmtree(w)
            rerun(w)
            lost, stale, note = judge(w, extra, note)
            tally.add(f"vllm-{how}", lost, stale, note, fault=landed)
            log(f"vLLM {how} (rc {rc}, landed {landed}): lost {lost}, stale {stale} {note}")
            if lost or stale:
                log(f"  kept for inspection: {w}")  # its soak-extract.log says what the run saw
            else:
                shutil.rmtree(w)

        for i in range(side):
            # the README's cluster recipe: index once, then two shards' `tj run` at the same time
            w = root / "trials" / f"side-{i:02d}"
            shutil.copytree(base, w)
            subprocess.run([sys.executable, "-m", "thinkjepa.app.cli.main", "run", "index", "--config", str(cfg_file),
                            "--set", f"workdir={w}"], env=env(), check=True, capture_output=True)

            def shard_cmd(k: int, w: Path = w) -> list[str]:
                return [sys.executable, "-m", "thinkjepa.app.cli.main", "run", "--shard", f"{k}/2", "extract", "encode",
                        "--config", str(cfg_file), "--set", f"workdir={w}", "--set", VLLM[0], "--no-progress"]

            kill = i % 2 == 1
            procs = [subprocess.Popen(shard_cmd(k), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      start_new_session=True) for k in (0, 1)]
            landed = False
            if kill:
                url = str(w / "cache" / "vlm.zarr")
                deadline = time.monotonic() + 900
                while committed(url) < 2 and procs[1].poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                if procs[1].poll() is None:
                    os.killpg(procs[1].pid, signal.SIGKILL)
                    landed = True
            rcs = [p.wait(1800) for p in procs]
            errs = [p.stderr.read().decode()[-400:] for p in procs]
            for p in procs:
                p.stderr.close()
            extra, note = 0, ""
            if rcs[0] != 0 or (not kill and rcs[1] != 0):
                extra, note = 1, f"side by side rc {rcs}: {errs}"
            # everything finishes: both shards again, side by side
            again = [subprocess.run(shard_cmd(k), env=env(), capture_output=True) for k in (1,)] if kill else []
            if any(r.returncode != 0 for r in again):
                extra, note = extra + 1, f"{note} resume rc {[r.returncode for r in again]}"
            lost, stale, note = judge(w, extra, note, jepa=True)
            tally.add("readme-side-by-side" + ("-kill" if kill else ""), lost, stale, note, fault=landed or not kill)
            log(f"README side by side{' with a kill' if kill else ''} (rc {rcs}): lost {lost}, stale {stale} {note}")
            shutil.rmtree(w)
    finally:
        engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--power-cuts", type=int, default=15)
    ap.add_argument("--damage", type=int, default=20)
    ap.add_argument("--vllm-kills", type=int, default=12, help="signals to tj-extract run (vLLM) and its engine core")
    ap.add_argument("--vllm-cuts", type=int, default=6, help="power cuts through the commit thread, vLLM engine")
    ap.add_argument("--side-by-side", type=int, default=2, help="README cluster recipe, two shards at once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kill-stages", nargs="+", default=list(KILL_STAGES),
                    choices=list(STAGE_CMDS), help="stages the kills go round-robin over")
    ap.add_argument("--root", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    a = ap.parse_args()
    import tempfile

    root = a.root or Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        tally = run_soak(root, a.kills, a.power_cuts, a.damage, a.seed, kill_stages=tuple(a.kill_stages),
                         vllm_kills=a.vllm_kills, vllm_cuts=a.vllm_cuts, side_by_side=a.side_by_side)
    finally:
        if a.root is None:
            shutil.rmtree(root, ignore_errors=True)
    for n in tally.notes:
        print("  failed:", n)
    print(tally.line())
    sys.exit(0 if tally.lost == 0 and tally.stale == 0 else 1)


if __name__ == "__main__":
    main()
