"""Fault-injection soak: kills, power cuts and damage, then the stage reruns; nothing may be lost.

    uv run --extra cpu python benchmarks/soak_faults.py [--kills 20] [--power-cuts 5] [--damage 10]

A tiny but real world (synthetic EgoDex episodes, the tiny random Qwen3-VL Thinking through the
transformers backend, the tiny V-JEPA2, CPU training) is first run once without faults: the
reference. Then each trial starts from the state before one stage, injects one fault, reruns
the stage to completion and compares with the reference:

- SIGKILL at a random moment of ``tj-extract run``, ``tj encode``, ``tj-train`` or ``tj run``
  (separate processes, as on a cluster);
- power cut during extract or encode: every fsync is tracked, and at a random one the store is
  copied as a disk would hold it after the cut -- each file cut back to what was fsync'ed of
  it (a file never fsync'ed is empty) -- then the writer is stopped there;
- damage: a flipped byte or a truncated chunk/shard file, an emptied or garbled commit record
  of a random entry; ``tj cache verify --repair`` runs before the stage reruns.

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


def run_stage(cfg_file: Path, stage: str, workdir: Path, kill_after: float | None = None) -> tuple[int, float]:
    """Run ``stage`` as its own process on ``workdir``; SIGKILL it after ``kill_after`` s."""
    cmd = [sys.executable, *STAGE_CMDS[stage], "--config", str(cfg_file), "--set", f"workdir={workdir}"]
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
    """Follows fsync/rename/link in this process; ``snapshot`` copies a store as a power cut at
    this moment would leave it: each file cut to its size at its last fsync (0 if never)."""

    def __init__(self, cut_at: int, store: Path, out: Path) -> None:
        self.cut_at, self.store, self.out = cut_at, store.absolute(), out
        self.count = 0
        self.synced: dict[str, int] = {}
        self._real = (os.fsync, os.replace, os.link)

    def __enter__(self) -> FsyncTracker:
        real_fsync, real_replace, real_link = self._real

        def fsync(fd):
            real_fsync(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.isfile(path):
                self.synced[path] = os.fstat(fd).st_size
            self.count += 1
            if self.count == self.cut_at:
                self.snapshot()
                raise PowerCut

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
        return self

    def __exit__(self, *exc) -> None:
        os.fsync, os.replace, os.link = self._real

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
             cut_stages: tuple[str, ...] = ("extract", "encode"), log=None) -> Tally:
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
        w = state_before(stage, f"kill-{i:02d}-{stage}")
        delay = rng.uniform(0.3, 0.95) * seconds[stage]
        rc, _ = run_stage(cfg_file, stage, w, kill_after=delay)
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
    return tally


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--power-cuts", type=int, default=5)
    ap.add_argument("--damage", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kill-stages", nargs="+", default=list(KILL_STAGES),
                    choices=list(STAGE_CMDS), help="stages the kills go round-robin over")
    ap.add_argument("--root", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    a = ap.parse_args()
    import tempfile

    root = a.root or Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        tally = run_soak(root, a.kills, a.power_cuts, a.damage, a.seed, kill_stages=tuple(a.kill_stages))
    finally:
        if a.root is None:
            shutil.rmtree(root, ignore_errors=True)
    for n in tally.notes:
        print("  failed:", n)
    print(tally.line())
    sys.exit(0 if tally.lost == 0 and tally.stale == 0 else 1)


if __name__ == "__main__":
    main()
