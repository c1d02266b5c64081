"""An adversarial pass over inputs that no issue listed: odd episodes, odd configs and CLI
arguments, tampered workdir files.

Each case runs the real CLI (``python -m thinkjepa.app.cli.main ...``) in a process of its own
on a copy of a small world (soak_faults.build_world: 3 tasks x 2 episodes, tiny models) and is
judged against what it should do, written down with the case before it ever ran:

- ``ok``: the command must succeed (exit 0) and, where the case says so, name the odd input
  in a problem line (an index that leaves one bad episode out and goes on);
- ``refuse``: the command must stop with the case's exit code (2 for a bad argument or config,
  1 for bad data or state), no traceback, and a message naming what is at fault.

Outcomes: ``clean`` (as it should), ``traceback``, ``wrong-exit``, ``unnamed`` (the right exit
with a message that does not name the input at fault), ``hung`` (no exit in 300 s). One line per
case, then the counts; exit 1 if any case is not clean. Unreadable files are not among the
cases: this runs as root, which reads them anyway (tests/data lists unreadable entries).

    uv run --extra cpu --group dev python benchmarks/adversarial_pass.py --root /tmp/adv
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import soak_faults  # noqa: E402  (the soak's world: same data, models and config)

EPISODE = "reach_pads_pan/0"
TIMEOUT_S = 300


@dataclass
class Case:
    name: str
    args: list[str]
    """CLI arguments after ``thinkjepa.app.cli.main``; ``{cfg}`` is the case's config file, ``{w}`` its folder."""
    expect: str  # "ok" or "refuse"
    mention: list[str] = field(default_factory=list)
    """Every one of these must appear in the output (the input at fault, named)."""
    rc: int = 1
    """Exit code of a refusal."""
    setup: Callable[[Path], None] | None = None
    """Alters the case's copy of the world (its folder) before the command runs."""
    needs_run: bool = False
    """Start from a world whose stages have run (index .. train)."""


# -- what the cases do to their world ---------------------------------------------------------


def _h5(path: Path, edit: Callable[[h5py.File], None]) -> None:
    with h5py.File(path, "r+") as f:
        edit(f)


def _replace(f: h5py.File, name: str, value: np.ndarray) -> None:
    del f[name]
    f[name] = value


def _ep(w: Path, suffix: str, episode: str = EPISODE) -> Path:
    return w / "data" / f"{episode}.{suffix}"


def joints_as_ints(w: Path) -> None:
    _h5(_ep(w, "hdf5"), lambda f: _replace(f, "transforms/leftHand", f["transforms/leftHand"][()].astype(np.int32)))


def transform_3x3(w: Path) -> None:
    _h5(_ep(w, "hdf5"), lambda f: _replace(f, "transforms/rightHand", f["transforms/rightHand"][:, :3, :3]))


def inf_pose(w: Path) -> None:
    def edit(f: h5py.File) -> None:
        x = f["transforms/leftHand"][()]
        x[5, 0, 3] = np.inf
        _replace(f, "transforms/leftHand", x)
    _h5(_ep(w, "hdf5"), edit)


def confidence_out_of_range(w: Path) -> None:
    def edit(f: h5py.File) -> None:
        c = f["confidences/leftHand"][()]
        c[:] = -3.0
        _replace(f, "confidences/leftHand", c)
    _h5(_ep(w, "hdf5"), edit)


def extra_datasets(w: Path) -> None:
    def edit(f: h5py.File) -> None:
        f["extra/notes"] = np.arange(4)
        f.attrs["llm_description"] = "reach for the pads"
    _h5(_ep(w, "hdf5"), edit)


def frames_mismatch(w: Path) -> None:
    def edit(f: h5py.File) -> None:
        for group in ("transforms", "confidences"):
            for k in list(f[group].keys()):
                _replace(f, f"{group}/{k}", f[f"{group}/{k}"][:20])
    _h5(_ep(w, "hdf5"), edit)


def mp4_is_text(w: Path) -> None:
    _ep(w, "mp4").write_text("this is not a video\n")


def empty_mp4(w: Path) -> None:
    _ep(w, "mp4").write_bytes(b"")


def empty_hdf5(w: Path) -> None:
    _ep(w, "hdf5").write_bytes(b"")


def mp4_missing(w: Path) -> None:
    _ep(w, "mp4").unlink()


def hdf5_missing(w: Path) -> None:
    _ep(w, "hdf5").unlink()


def episode_is_a_folder(w: Path) -> None:
    _ep(w, "hdf5").unlink()
    _ep(w, "hdf5").mkdir()


def zero_padded_twin(w: Path) -> None:
    """``00.hdf5`` beside ``0.hdf5``: two files, one episode number."""
    for s in ("hdf5", "mp4"):
        shutil.copy(_ep(w, s), w / "data" / "reach_pads_pan" / f"00.{s}")


def unicode_task(w: Path) -> None:
    (w / "data" / "reach_pads_pan").rename(w / "data" / "réach pads (pan) ✋")


def config_is_a_list(w: Path) -> None:
    (w / "pipelines.yaml").write_text("- workdir\n- data\n")


def config_bad_yaml(w: Path) -> None:
    (w / "pipelines.yaml").write_text("workdir: [unclosed\n\tdata: {root: x\n")


def config_unknown_section(w: Path) -> None:
    doc = yaml.safe_load((w / "pipelines.yaml").read_text())
    doc["trian"] = {"max_steps": 3}
    (w / "pipelines.yaml").write_text(yaml.safe_dump(doc))


def workdir_is_a_file(w: Path) -> None:
    doc = yaml.safe_load((w / "pipelines.yaml").read_text())
    (w / "work-file").write_text("x")
    doc["workdir"] = str(w / "work-file")
    (w / "pipelines.yaml").write_text(yaml.safe_dump(doc))


def _set_in_config(w: Path, section: str, key: str, value) -> None:
    doc = yaml.safe_load((w / "pipelines.yaml").read_text())
    doc[section][key] = value
    (w / "pipelines.yaml").write_text(yaml.safe_dump(doc))


def thinker_missing(w: Path) -> None:
    _set_in_config(w, "thinker", "model", str(w / "no-such-model"))


def thinker_is_vjepa(w: Path) -> None:
    doc = yaml.safe_load((w / "pipelines.yaml").read_text())
    _set_in_config(w, "thinker", "model", doc["encoder"]["model"])


def thinker_config_torn(w: Path) -> None:
    """A copy of the thinker's folder (the world's models are shared) with config.json cut."""
    doc = yaml.safe_load((w / "pipelines.yaml").read_text())
    model = Path(shutil.copytree(doc["thinker"]["model"], w / "qwen-copy"))
    (model / "config.json").write_text('{"model_type": "qwen3_vl", "text_con')
    _set_in_config(w, "thinker", "model", str(model))


def manifest_truncated(w: Path) -> None:
    man = next((w / "work").rglob("*.parquet"))
    man.write_bytes(man.read_bytes()[: man.stat().st_size // 2])


def checkpoint_garbage(w: Path) -> None:
    for ck in (w / "work").rglob("last.pt"):
        ck.write_bytes(os.urandom(4096))


def record_wrong_fields(w: Path) -> None:
    """The commit record of reach_pads_dolly/0@20 (sorted first) holds valid JSON of other fields."""
    recs = sorted((w / "work" / "cache" / "vlm.zarr" / "index").glob("*/*.json"))
    recs[0].write_text('{"hello": "world"}')


def store_root_json_garbage(w: Path) -> None:
    (w / "work" / "cache" / "vlm.zarr" / "zarr.json").write_text("{not json")


CASES: list[Case] = [
    # data: one odd episode among six; the index keeps the rest and names the odd one
    Case("joints stored as int32", ["data", "index", "--config", "{cfg}"], "ok", [EPISODE], setup=joints_as_ints),
    Case("a 3x3 transform", ["data", "index", "--config", "{cfg}"], "ok", [EPISODE], setup=transform_3x3),
    Case("an Inf in a pose", ["data", "index", "--config", "{cfg}"], "ok", [EPISODE], setup=inf_pose),
    Case("negative confidences", ["data", "index", "--config", "{cfg}"], "ok", [EPISODE], setup=confidence_out_of_range),
    Case("extra datasets and attributes", ["data", "index", "--config", "{cfg}"], "ok", setup=extra_datasets),
    Case("fewer pose frames than video frames", ["data", "index", "--config", "{cfg}"], "ok", [EPISODE],
         setup=frames_mismatch),
    Case("an mp4 that is text", ["data", "index", "--config", "{cfg}"], "ok", [EPISODE], setup=mp4_is_text),
    Case("an empty mp4", ["data", "index", "--config", "{cfg}"], "ok", [EPISODE], setup=empty_mp4),
    Case("an empty hdf5", ["data", "index", "--config", "{cfg}"], "ok", [EPISODE], setup=empty_hdf5),
    Case("an hdf5 without its mp4", ["data", "index", "--config", "{cfg}"], "ok", [EPISODE], setup=mp4_missing),
    Case("an mp4 without its hdf5", ["data", "index", "--config", "{cfg}"], "ok", [EPISODE], setup=hdf5_missing),
    Case("an episode name that is a folder", ["data", "index", "--config", "{cfg}"], "ok", [EPISODE], setup=episode_is_a_folder),
    # Two names are two episodes (judged "unnamed" on the first pass, expecting a problem line;
    # then accepted): the same bytes under two names is not detected, since that would mean
    # hashing every file at index time. The task split keeps both copies in one split; only
    # the episode-grouped fallback (few task folders) could put them in two.
    Case("00.hdf5 beside 0.hdf5", ["data", "index", "--config", "{cfg}"], "ok", setup=zero_padded_twin),
    Case("a task name with spaces and unicode", ["data", "index", "--config", "{cfg}"], "ok", setup=unicode_task),
    # configs and arguments
    Case("a config that is a YAML list", ["status", "--config", "{cfg}"], "refuse", ["pipelines.yaml"], rc=2,
         setup=config_is_a_list),
    Case("a config that is not YAML", ["status", "--config", "{cfg}"], "refuse", ["pipelines.yaml"], rc=2,
         setup=config_bad_yaml),
    Case("a misspelt section", ["status", "--config", "{cfg}"], "refuse", ["trian"], rc=2, setup=config_unknown_section),
    Case("a config file that does not exist", ["status", "--config", "{cfg}.missing"], "refuse", ["missing"], rc=2),
    Case("--set without '='", ["status", "--config", "{cfg}", "--set", "train.max_steps"], "refuse", ["train.max_steps"], rc=2),
    Case("--set of an unknown key", ["status", "--config", "{cfg}", "--set", "train.max_stepz=3"], "refuse", ["max_stepz"], rc=2),
    Case("--shard 3/2", ["extract", "run", "--config", "{cfg}", "--shard", "3/2"], "refuse", ["3/2"], rc=2),
    Case("--shard 0/0", ["extract", "run", "--config", "{cfg}", "--shard", "0/0"], "refuse", ["0/0"], rc=2),
    Case("--shard a/b", ["extract", "run", "--config", "{cfg}", "--shard", "a/b"], "refuse", ["a/b"], rc=2),
    Case("an unknown variant", ["train", "--config", "{cfg}", "--variant", "thinkjepa_v9"], "refuse", ["thinkjepa_v9"], rc=2),
    Case("workdir is a file", ["run", "index", "--config", "{cfg}"], "refuse", ["work-file"], rc=2, setup=workdir_is_a_file),
    Case("thinker model folder missing", ["run", "index", "extract", "--config", "{cfg}"], "refuse", ["no-such-model"],
         setup=thinker_missing),
    Case("thinker model is a V-JEPA2 checkpoint", ["run", "index", "extract", "--config", "{cfg}"], "refuse", ["vjepa2"],
         setup=thinker_is_vjepa),
    Case("thinker config.json torn", ["run", "index", "extract", "--config", "{cfg}"], "refuse", ["config.json"],
         setup=thinker_config_torn),
    # eval names the earliest thing missing (here the caches) and what to run; the first pass
    # found "no cache at ... (no zarr.json)" with no next step (the case asked for "train" then)
    Case("eval before any training", ["eval", "--config", "{cfg}"], "refuse", ["jepa.zarr", "tj run"]),
    # a workdir after a full run, then tampered with
    Case("manifest cut in half", ["status", "--config", "{cfg}"], "ok", ["parquet"], setup=manifest_truncated,
         needs_run=True),
    Case("last.pt replaced with random bytes", ["train", "--config", "{cfg}"], "ok", ["last.pt"], setup=checkpoint_garbage,
         needs_run=True),
    Case("a commit record with foreign fields", ["cache", "verify", "{w}/work/cache/vlm.zarr"], "refuse", ["reach_pads_dolly"],
         setup=record_wrong_fields, needs_run=True),
    Case("store root zarr.json not JSON", ["extract", "status", "--config", "{cfg}"], "refuse", ["zarr.json"],
         setup=store_root_json_garbage, needs_run=True),
]


def judge(case: Case, rc: int | None, out: str) -> str:
    if rc is None:
        return "hung"
    if "Traceback (most recent call last)" in out:
        return "traceback"
    want = 0 if case.expect == "ok" else case.rc
    if rc != want:
        return "wrong-exit"
    flat = " ".join(out.split())  # rich wraps long lines wherever the width falls
    if any(m not in flat for m in case.mention):
        return "unnamed"
    return "clean"


def prepare(root: Path, with_run: bool = True) -> tuple[Path, Path]:
    """A fresh world and (``with_run``) a copy of it after ``tj run index extract encode train``."""
    fresh = root / "fresh"
    if not (fresh / "pipelines.yaml").exists():
        shutil.rmtree(fresh, ignore_errors=True)
        soak_faults.build_world(fresh)
    ran = root / "ran"
    if with_run and not (ran / "done").exists():
        shutil.rmtree(ran, ignore_errors=True)
        _copy_world(fresh, ran)
        rc = subprocess.run([sys.executable, "-m", "thinkjepa.app.cli.main", "run", "index", "extract", "encode", "train",
                             "--config", str(ran / "pipelines.yaml"), "--no-progress"], env=soak_faults.env(),
                            capture_output=True, text=True)
        if rc.returncode != 0:
            raise RuntimeError(f"the reference run failed (rc {rc.returncode}):\n{rc.stdout[-2000:]}{rc.stderr[-2000:]}")
        (ran / "done").write_text("")
    return fresh, ran


def _copy_world(world: Path, w: Path) -> None:
    """A copy of ``world``'s data and workdir at ``w``, its config pointed at them. The models
    stay where they are: a model at another path is another setting, so a copied workdir's
    caches would be stale before any case touched them."""
    shutil.copytree(world, w, symlinks=True, ignore=lambda d, names: ["models"] if Path(d) == world else [])
    text = (w / "pipelines.yaml").read_text()
    for sub in ("data", "work"):
        text = text.replace(str(world / sub), str(w / sub))
    (w / "pipelines.yaml").write_text(text)


def run_case(case: Case, world: Path, w: Path) -> tuple[str, int | None, str]:
    shutil.rmtree(w, ignore_errors=True)
    _copy_world(world, w)
    if case.setup is not None:
        case.setup(w)
    cfg = str(w / "pipelines.yaml")
    cmd = [sys.executable, "-m", "thinkjepa.app.cli.main", *(a.replace("{cfg}", cfg).replace("{w}", str(w)) for a in case.args)]
    try:
        p = subprocess.run(cmd, env={**soak_faults.env(), "COLUMNS": "200"}, capture_output=True, text=True,
                           timeout=TIMEOUT_S, cwd=w)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = None, str(e.output or "")
    return judge(case, rc, out), rc, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    ap.add_argument("-k", action="append", default=[], help="only the cases whose name contains this (repeatable)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each case's output tail")
    a = ap.parse_args(argv)
    root = a.root or Path(tempfile.mkdtemp(prefix="adversarial-"))
    counts: dict[str, int] = {}
    try:
        chosen = [c for c in CASES if not a.k or any(k in c.name for k in a.k)]
        fresh, ran = prepare(root, with_run=any(c.needs_run for c in chosen))
        for i, case in enumerate(chosen):
            outcome, rc, out = run_case(case, ran if case.needs_run else fresh, root / "cases" / f"{i:02d}")
            counts[outcome] = counts.get(outcome, 0) + 1
            last = next((ln.strip() for ln in reversed(out.strip().splitlines()) if ln.strip()), "")
            print(f"{outcome:10s} {case.name} (rc {rc}, expected {case.expect}): {last[:160]}", flush=True)
            if a.verbose or outcome != "clean":
                print("    " + "\n    ".join(out.strip().splitlines()[-12:]), flush=True)
    finally:
        if a.root is None:
            shutil.rmtree(root, ignore_errors=True)
    total = sum(counts.values())
    print(f"adversarial pass: {total} cases, " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0 if counts.get("clean", 0) == total else 1


if __name__ == "__main__":
    sys.exit(main())
