"""How the bookkeeping costs grow with the dataset: 1k to 340k (EgoDex's size) EgoDex-layout episodes.

Builds (once, under ``--base``, reused by later runs) a synthetic EgoDex-layout tree whose
episodes are hard links to one real synthetic episode (so files exist, with the right names,
at no disk cost), its clips manifest, and both feature caches with one *real commit record*
per window in 64 shard parts (the entry arrays are left out: nothing timed here reads them),
plus the stage stamps a finished ``tj run`` leaves. Then times, per size, in this process:

* ``tj status``: first with no listing cache and no kept window plan, then with the kept plans
  only (as after a commit), then warm; ``tj-extract status``;
* planning one shard of 64 (what ``tj-extract run --shard 0/64`` does before any engine);
* opening a cache reader and listing its keys;
* a no-op ``tj run`` (every stage fresh);
* ``tj data index`` after 1% of the episodes changed (whatever that command does; only at
  the sizes of ``--index-sizes``, after a first untimed full index).

Prints wall seconds (and the process's CPU seconds, ``[cpu]``: the cost without the wait for a
core on a loaded machine) per size, the growth exponent between sizes (1.0 = linear) and the peak
resident memory of each size's process (each size runs in a process of its own); with ``--repeat N``
each figure is the median of N timings in that process. The CLI
commands run in-process (typer's runner), so the interpreter and import start-up, a constant
printed once, is not in them.

    nice -n 5 uv run --extra cpu --group dev python benchmarks/bench_scale.py --sizes 1000,10000,100000,340000 \\
        --index-sizes "" --repeat 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PARTS = 64
EPISODES_PER_TASK = 500
LINKS_PER_FILE = 50_000


def _episode_number(clip_id: str) -> int:
    task, ep = clip_id.split("/")
    return int(task.removeprefix("task_")) * EPISODES_PER_TASK + int(ep)


def _overrides(base: Path, n: int) -> list[str]:
    tree = base / f"n{n}"
    return [
        f"workdir={tree / 'work'}", f"data.root={tree / 'data'}", f"thinker.model={base / 'tiny-qwen'}",
        f"encoder.model={base / 'tiny-qwen'}",  # never loaded: every window is already encoded
        "sampling.mode=stride", "sampling.past_frames=8", "sampling.future_frames=8", "sampling.thinker_frames=8",
        "thinker.layers=[0,1,2,3]",
    ]


def _config_file(base: Path) -> Path:
    """An empty pipeline file: the CLI then reads no ./pipelines.yaml of the current folder."""
    path = base / "bench.yaml"
    path.write_text("{}\n")
    return path


def _config(base: Path, n: int):
    from thinkjepa.config import load_config

    return load_config(_config_file(base), _overrides(base, n))


def _template(base: Path) -> tuple[Path, Path]:
    from thinkjepa.data.synth import synthesize_dataset

    src = base / "template"
    if not (src / ".complete").exists():
        shutil.rmtree(src, ignore_errors=True)
        synthesize_dataset(src, episodes=1, seed=0, n_frames=32, size=32, tasks=1)
        (src / ".complete").write_text("ok\n")
    task = next(p for p in src.iterdir() if p.is_dir())
    return next(task.glob("*.mp4")), next(task.glob("*.hdf5"))


def _tiny_thinker(base: Path) -> Path:
    from thinkjepa.tiny.qwen3vl import build_tiny_qwen3vl_thinking

    out = base / "tiny-qwen"
    if not (out / "config.json").exists():
        build_tiny_qwen3vl_thinking(out, seed=0)
    return out


def _write_manifest(cfg, n: int, mp4: Path, hdf5: Path) -> None:
    """The manifest `tj data index` would write for the tree (rows from the template episode)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from thinkjepa.data.egodex import read_episode
    from thinkjepa.data.manifest import SCHEMA, assign_splits

    ep = read_episode(mp4, hdf5, clip_id="t/0")
    root = Path(cfg.data.root)
    clips = [(f"task_{i // EPISODES_PER_TASK:04d}", i % EPISODES_PER_TASK) for i in range(n)]
    splits = assign_splits({t for t, _ in clips}, cfg.data.split_fractions, cfg.data.split_seed)
    rows = [{
        "clip_id": f"{t}/{e}", "video_path": str(root / t / f"{e}.mp4"), "annotation_path": str(root / t / f"{e}.hdf5"),
        "task": t, "description": "synthetic", "n_frames": ep.n_frames, "fps": ep.fps, "split": splits[t],
        "environment": "", "llm_description": "", "width": ep.width, "height": ep.height,
    } for t, e in clips]
    provenance = {"root": str(root.resolve()), "data": cfg.data.model_dump(mode="json"),
                  "sampling": cfg.sampling.model_dump(mode="json"), "problems": []}
    table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata(
        {b"thinkjepa.manifest": json.dumps(provenance).encode()})
    path = cfg.path(cfg.data.manifest)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _write_store(url: str, meta, windows: list[tuple[str, str, int]]) -> None:
    """A store with one real commit record per ``(key, fingerprint, shard)``; no entry arrays.

    The record's fields come from a real commit of a tiny entry (so they stay what the
    writer writes), renamed per key."""
    import numpy as np

    from thinkjepa.cache_schema import CacheWriter, JEPAEntry, VLMEntry
    from thinkjepa.cache_schema.schema import entry_path, record_path
    from thinkjepa.shards import part_name

    H = meta.hidden_size
    if meta.kind == "vlm":
        L = len(meta.layers)
        entry = VLMEntry(key="seed/0@0", prefill=np.zeros((L, 4, H), np.float32),
                         generated=np.zeros((L, 2, H), np.float32), prefill_ids=np.zeros(4, np.int32),
                         generated_ids=np.zeros(2, np.int32), prefill_kind=np.zeros(4, np.uint8),
                         frame_index=np.full(4, -1, np.int32), text="", provenance={}, fingerprint="x")
    else:
        entry = JEPAEntry(key="seed/0@0", past=np.zeros((4, 2, H), np.float32), future=np.zeros((4, 2, H), np.float32),
                          past_frames=np.arange(8, dtype=np.int32), future_frames=np.arange(8, 16, dtype=np.int32),
                          provenance={}, fingerprint="x")
    with CacheWriter(url, meta, part="seed") as w:
        template = w.commit(entry)
    shutil.rmtree(Path(url) / "index" / "seed")
    made: set[Path] = set()
    for key, fp, shard in windows:
        part = part_name(shard, PARTS)
        rec = dict(template, key=key, part=part, fingerprint=fp, committed_at=time.time(),
                   path=entry_path(part, key, "00000000"))
        p = Path(url) / record_path(part, key)
        if p.parent not in made:
            p.parent.mkdir(parents=True, exist_ok=True)
            made.add(p.parent)
        p.write_text(json.dumps(rec))


def _ensure_catalogs(url: str) -> None:
    """Each part's catalog, as its writer leaves it at close (built from the records, as the
    part's next writer would; a tree built before catalogs existed gets them here)."""
    from thinkjepa.cache_schema import catalog
    from thinkjepa.cache_schema.schema import CATALOG, INDEX
    from thinkjepa.cache_schema.store import open_backend

    backend = open_backend(url, durable=False)
    for folder in sorted((Path(url) / INDEX).iterdir()):
        if not (Path(url) / CATALOG / folder.name).exists():
            catalog.rebuild(backend, folder.name, [json.loads(f.read_bytes()) for f in folder.iterdir()])


def _seed_prompt_cache(cfg, sources: list[Path]) -> None:
    """What a first `tj status` leaves in ``PromptCache``, without opening every HDF5 file (all
    of them are links to one): that first pass costs ~4 ms per episode, see the 1k/10k runs."""
    from thinkjepa.cache_schema.fsio import atomic_write_json
    from thinkjepa.extract.prompt import build_prompt, prompt_metadata, read_clip_metadata
    from thinkjepa.extract.runner import PromptCache
    from thinkjepa.stage_run import listing_cache_dir, manifest_rows

    attrs = prompt_metadata(read_clip_metadata(sources[0]))  # the same bytes in every copy
    idents = [[st.st_size, st.st_mtime_ns, st.st_ino] for st in map(os.stat, sources)]
    template = cfg.thinker.prompt_template
    entries = {}
    for i, row in enumerate(sorted(manifest_rows(cfg), key=lambda r: _episode_number(r["clip_id"]))):
        meta = {k: row[k] for k in ("task", "description") if row.get(k)}
        meta.update(attrs)
        inputs = [idents[i // LINKS_PER_FILE], template, row["clip_id"], row["task"] or "",
                  row["description"] or ""]
        entries[row["annotation_path"]] = [inputs, build_prompt(template, meta, row["clip_id"])]
    atomic_write_json(Path(listing_cache_dir(cfg)) / "prompts.json",
                      {"version": PromptCache.VERSION, "entries": entries}, durable=False, indent=None)


def _seed_content_memo(cfg, sources: list[tuple[Path, Path]]) -> float:
    """What a first pass leaves in the content-fingerprint memo, hashing each source once (every
    episode is a hard link to one of them). Returns the seconds one episode's digests took,
    what a real first pass pays per episode."""
    from thinkjepa.data.content import for_workdir, hash_hdf5, hash_video
    from thinkjepa.stage_run import manifest_rows

    digest, first = {}, 0.0
    for mp4, hdf5 in sources:
        t0 = time.perf_counter()
        digest[os.stat(mp4).st_ino] = hash_video(mp4)
        digest[os.stat(hdf5).st_ino] = hash_hdf5(hdf5)
        first = first or time.perf_counter() - t0
    memo = for_workdir(cfg.workdir)
    for row in manifest_rows(cfg):
        for key in ("video_path", "annotation_path"):
            st = os.stat(row[key])
            memo.record(row[key], digest[st.st_ino], st)
    memo.save()
    return first


def _restamp(cfg) -> None:
    """The stamps a finished `tj run` leaves for the data as it is now."""
    from thinkjepa.app import pipeline

    listing = pipeline._listing(cfg)
    for name in ("index", "train", "eval"):
        pipeline._write_state(cfg, pipeline._stage(name), pipeline.compute_stamps(cfg, listing), listing, {"bench": True})


def build(base: Path, n: int):
    """The tree, manifest, caches and stamps of size ``n`` (reused when already complete)."""
    from thinkjepa.app import pipeline

    _tiny_thinker(base)
    cfg = _config(base, n)
    tree = base / f"n{n}"
    if (tree / ".complete").exists():
        for url in (cfg.url(cfg.thinker.cache), cfg.url(cfg.encoder.cache)):
            _ensure_catalogs(url)
        _restamp(cfg)  # stamps of this code's version, as its `tj run` would leave them
        return cfg
    t0 = time.perf_counter()
    shutil.rmtree(tree, ignore_errors=True)
    mp4, hdf5 = _template(base)
    root = Path(cfg.data.root)
    sources: list[tuple[Path, Path]] = []
    for i in range(n):
        if i % LINKS_PER_FILE == 0:  # a file system allows so many links per file (ext4: 65000)
            k = i // LINKS_PER_FILE
            copy = tree / "sources" / str(k)
            copy.mkdir(parents=True, exist_ok=True)
            shutil.copy2(mp4, copy / mp4.name)
            shutil.copy2(hdf5, copy / hdf5.name)
            sources.append((copy / mp4.name, copy / hdf5.name))
        task, ep = f"task_{i // EPISODES_PER_TASK:04d}", i % EPISODES_PER_TASK
        (root / task).mkdir(parents=True, exist_ok=True)
        src_mp4, src_hdf5 = sources[-1]
        os.link(src_mp4, root / task / f"{ep}.mp4")
        os.link(src_hdf5, root / task / f"{ep}.hdf5")
    _write_manifest(cfg, n, mp4, hdf5)

    from thinkjepa.extract.encode import fingerprints, jepa_store_meta, plan_encode
    from thinkjepa.extract.layers import LAYER_CONVENTION
    from thinkjepa.extract.runner import fingerprint_of, plan_clips, vlm_store_meta
    from thinkjepa.shards import shard_of

    _seed_prompt_cache(cfg, [h for _, h in sources])
    per_episode = _seed_content_memo(cfg, sources)
    print(f"  content fingerprint of one episode (video + HDF5; a real first pass pays this per episode): "
          f"{1e3 * per_episode:.1f} ms", flush=True)
    plans = plan_clips(cfg, shards=PARTS)
    _write_store(cfg.url(cfg.thinker.cache),
                 vlm_store_meta(cfg, layers=cfg.thinker.layers, layer_convention=LAYER_CONVENTION, hidden_size=16),
                 [(it.key, fingerprint_of(cfg, it), p.shard) for p in plans for it in p.items])
    items, _ = plan_encode(cfg)
    fps = fingerprints(cfg.encoder, items)
    _write_store(cfg.url(cfg.encoder.cache), jepa_store_meta(cfg, 16),
                 [(it.key, fps[it.key], shard_of(it.clip_id, PARTS)) for it in items])
    for url in (cfg.url(cfg.thinker.cache), cfg.url(cfg.encoder.cache)):
        _ensure_catalogs(url)
    for name in ("train", "eval"):  # their outputs, as a finished run leaves them
        for out in pipeline._stage(name).outputs(cfg):
            Path(out).mkdir(parents=True, exist_ok=True)
    _restamp(cfg)
    (tree / ".complete").write_text("ok\n")
    print(f"  built {n} episodes in {time.perf_counter() - t0:.1f} s", flush=True)
    return cfg


CPU_TIMES: dict[float, float] = {}
"""Process CPU seconds of each ``_timed`` call, by its wall seconds: on a loaded machine the
wall time is mostly waiting for a core, the CPU time is what the command costs."""


def _timed(fn) -> float:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall = time.perf_counter() - t0
    CPU_TIMES[wall] = time.process_time() - c0
    return wall


def _touch_one_percent(cfg, n: int) -> None:
    """Replace 1% of the episodes' annotation files by fresh copies (new inode and mtime)."""
    root = Path(cfg.data.root)
    for i in range(0, n, 100):
        p = root / f"task_{i // EPISODES_PER_TASK:04d}" / f"{i % EPISODES_PER_TASK}.hdf5"
        tmp = p.with_name(".bench.tmp")
        tmp.write_bytes(p.read_bytes())
        os.replace(tmp, p)


def measure(cfg, base: Path, n: int, with_index: bool) -> dict[str, float]:
    # imported before the clock starts: imports are not what is measured
    import h5py  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import zarr  # noqa: F401
    from typer.testing import CliRunner

    import thinkjepa.extract.encode  # noqa: F401
    import thinkjepa.extract.status  # noqa: F401
    import thinkjepa.train.seeds  # noqa: F401  (`tj status` asks it about training runs: torch)
    from thinkjepa.app.cli.main import app
    from thinkjepa.cache_schema import CacheReader
    from thinkjepa.extract.runner import plan_shard
    from thinkjepa.stage_run import listing_cache_dir

    runner = CliRunner()
    sets = ["--config", str(_config_file(base))] + [a for o in _overrides(base, n) for a in ("--set", o)]

    def cli(*args: str) -> str:
        res = runner.invoke(app, [*args, *sets])
        if res.exit_code != 0:
            raise RuntimeError(f"`tj {' '.join(args)}` failed: {res.output[-2000:]}")
        return res.output

    out: dict[str, float] = {}

    def drop_listing_caches() -> None:
        # "cold": none of the listing caches (record summaries, dataset folders, kept statuses)
        # but the kept prompts (without them every HDF5 file is opened once per workdir and
        # template, ~4 ms each: 6 s at 1k episodes) and content fingerprints
        for f in Path(listing_cache_dir(cfg)).glob("*.json"):
            if f.name != "prompts.json":
                f.unlink()

    # first with no kept window plans either (``thinkjepa.plan_memo``): every clip planned
    drop_listing_caches()
    for f in (Path(cfg.workdir) / ".thinkjepa").glob("plan-*.parquet"):
        f.unlink()
    out["tj status (cold, no kept plan)"] = _timed(lambda: cli("status", "--json"))
    # then as after a shard's commit or another process's listing: the plans kept, nothing else
    drop_listing_caches()
    out["tj status (cold)"] = _timed(lambda: cli("status", "--json"))
    out["tj status"] = _timed(lambda: cli("status", "--json"))
    rows = json.loads(cli("status", "--json"))
    stale = [r["stage"] for r in rows if r["stale"]]
    if stale:
        raise RuntimeError(f"the bench tree should be all fresh; stale: {stale}: {rows}")
    out["tj-extract status (first)"] = _timed(lambda: cli("extract", "status", "--json"))
    out["tj-extract status"] = _timed(lambda: cli("extract", "status", "--json"))
    out["plan shard 0/64"] = _timed(lambda: plan_shard(cfg, (0, PARTS)))
    out["reader open + keys"] = _timed(lambda: CacheReader(cfg.url(cfg.thinker.cache)).keys())
    out["no-op tj run"] = _timed(lambda: cli("run"))
    if with_index:  # last: it changes the dataset, which makes the index stale
        manifest = Path(cfg.workdir) / "index-bench.parquet"
        if not manifest.exists():
            cli("data", "index", "--out", str(manifest), "--json")  # the first, full index (untimed)
        _touch_one_percent(cfg, n)
        out["tj data index (1% changed)"] = _timed(lambda: cli("data", "index", "--out", str(manifest), "--json"))
        _restamp(cfg)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--index-sizes", default="1000", help="sizes at which to time `tj data index`")
    ap.add_argument("--base", type=Path, default=Path("/tmp/thinkjepa-bench-scale"))
    ap.add_argument("--one-size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--with-index", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=1, help="time each size this many times, print the medians")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one_size:
        one_size(args.base, args.one_size, args.with_index, args.repeat)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    index_sizes = {int(s) for s in args.index_sizes.split(",") if s}
    args.base.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import thinkjepa.app.cli.main"], check=True)
    print(f"interpreter + `import thinkjepa.app.cli.main` (not in the figures below): {time.perf_counter() - t0:.2f} s")

    results: dict[int, dict[str, float]] = {}
    peaks: dict[int, float] = {}
    for n in sizes:
        print(f"size {n}: building / reusing {args.base / f'n{n}'}", flush=True)
        # one process per size, so its peak resident memory is this size's alone
        proc = subprocess.run([sys.executable, __file__, "--one-size", str(n), "--base", str(args.base),
                               "--repeat", str(args.repeat),
                               *(["--with-index"] if n in index_sizes else [])],
                              stdout=subprocess.PIPE, text=True, check=True)
        lines = proc.stdout.splitlines()
        print("\n".join(lines[:-1]), flush=True)
        doc = json.loads(lines[-1])
        results[n], peaks[n] = doc["seconds"], doc["peak_rss_mib"]
        print("  " + ", ".join(f"{k} {v:.2f} s" for k, v in results[n].items())
              + f"; peak resident memory {peaks[n]:.0f} MiB", flush=True)

    names = list(dict.fromkeys(k for r in results.values() for k in r))
    grow = [f"{a}->{b}" for a, b in zip(sizes, sizes[1:])]
    print("\nseconds per size, and growth exponent between sizes (1.0 = linear)")
    print(f"{'operation':30s}" + "".join(f"{n:>10d}" for n in sizes) + "".join(f"{g:>14s}" for g in grow))
    for name in names:
        cells = "".join(f"{results[n][name]:10.2f}" if name in results[n] else f"{'-':>10s}" for n in sizes)
        exps = ""
        for a, b in zip(sizes, sizes[1:]):
            ta, tb = results[a].get(name), results[b].get(name)
            exps += f"{math.log(tb / ta) / math.log(b / a):14.2f}" if ta and tb else f"{'-':>14s}"
        print(f"{name:30s}{cells}{exps}")
    print(f"{'peak memory (MiB, all above)':30s}" + "".join(f"{peaks[n]:10.0f}" for n in sizes))


def one_size(base: Path, n: int, with_index: bool, repeat: int = 1) -> None:
    """Build (or reuse) size ``n`` and time it; the last line printed is the JSON result."""
    import resource
    import statistics

    cfg = build(base, n)
    runs = []
    for k in range(repeat):  # the index timing changes the dataset: only in the last run
        got = measure(cfg, base, n, with_index and k == repeat - 1)
        got.update({f"{name} [cpu]": CPU_TIMES[v] for name, v in list(got.items())})
        runs.append(got)
    # the median of each figure: one run's exponent between two sizes swings by +-0.08 on a shared box
    seconds = {name: statistics.median(r[name] for r in runs if name in r) for name in runs[-1]}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak}), flush=True)


if __name__ == "__main__":
    main()
