"""Cache throughput and size against plain files, measured in one process.

    python benchmarks/bench_cache.py [--clips N] [--workdir DIR]

Prints (all ratios against a baseline run here, on the same bytes):
- write MB/s of ``CacheWriter.commit`` vs one plain file per clip (``open().write``) and vs
  zarr-python's own writer (``zarr.create_array(..., shards=...)`` with the cache's chunk
  layout and codecs, which writes the same bytes: tests/cache_schema/test_zarr_interop.py);
- token read MB/s of ``CacheReader.stream`` vs zarr-python reading those arrays
  (``zarr.open_array(...)[...]``) into the same zero-padded float32 batch;
- streaming read MB/s of the token arrays through ``CacheReader.stream`` (float32 out) vs
  reading those files back and converting to float32, with numpy's ``astype`` (the plain
  way) and with the reader's own vectorised conversion into the same zero-padded batch
  shape (like for like: what is left is the reader's own overhead: checksums, chunk
  decoding, prefetch thread), and vs the raw read alone;
- the means path (``stream`` of ``prefill_mean``/``generated_mean``, batches of 16): entries/s
  vs reading the same float32 means out of the plain files;
- bytes per clip on disk vs the reference code's format (``np.savez_compressed`` of fp16
  states, prefill padded to 1280 tokens, 8 layers x 2048);
- bytes fetched per training sample: token means only vs full token streams;
- (printed first) commit cost of a small entry (the decode-heavy capture bench's shape: 4 layers x 128, 90
  prompt and 15 generated tokens) per durability mode of a local store, CPU and wall ms per
  entry: one ``syncfs`` per entry (the Linux default) vs an fsync per file and folder
  (``THINKJEPA_CACHE_FSYNC=files``) vs none (``=0``, the floor), the modes taking turns.

Except in the last figure, both sides hit the page cache (no fsync, no cache dropping): the
ratios compare software overhead, not the disk. The states are random normal values, which (like real fp16 hidden
states, to within a few percent) do not compress. Reads run ``--reps`` rounds, every variant
once per round in turn; the median of each figure and of each per-round ratio is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from thinkjepa.cache_schema import (
    TOKEN_TEXT,
    TOKEN_VISION,
    CacheReader,
    CacheWriter,
    StoreMeta,
    VLMEntry,
    escape_key,
)
from thinkjepa.cache_schema.encoding import storage_into_f32
from thinkjepa.cache_schema.fsio import syncfs_available
from thinkjepa.cache_schema.store import FSYNC_ENV

LAYERS = [0, 4, 8, 12, 16, 20, 24, 27]
HIDDEN = 2048
PAD_PREFILL = 1280
N_GENERATED = 15


def make_clips(n: int, seed: int) -> list[VLMEntry]:
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        n_pre = int(rng.integers(1000, PAD_PREFILL + 1))  # ~1024 video tokens + chat/text tokens
        n_vis = n_pre - 60
        scale = rng.uniform(0.5, 4.0, size=(len(LAYERS), 1, HIDDEN)).astype(np.float32)
        pre = (rng.standard_normal((len(LAYERS), n_pre, HIDDEN), dtype=np.float32) * scale).astype(np.float16)
        gen = (rng.standard_normal((len(LAYERS), N_GENERATED, HIDDEN), dtype=np.float32) * scale).astype(np.float16)
        kind = np.full(n_pre, TOKEN_TEXT, np.uint8)
        kind[30:30 + n_vis] = TOKEN_VISION
        frames = np.full(n_pre, -1, np.int32)
        frames[30:30 + n_vis] = np.arange(n_vis) * 32 // n_vis
        clips.append(VLMEntry(
            key=f"bench_task/{i}@64", prefill=pre, generated=gen,
            prefill_ids=rng.integers(0, 150000, n_pre).astype(np.int32),
            generated_ids=rng.integers(0, 150000, N_GENERATED).astype(np.int32),
            prefill_kind=kind, frame_index=frames, text="<think>" + "x" * 60,
            provenance={"prompt": "Describe this video.", "frames": list(range(0, 64, 2))}, fingerprint="bench"))
    return clips


def payload(e: VLMEntry) -> list[np.ndarray]:
    """The arrays a cache entry holds, as stored (what the plain-file baseline writes)."""
    means = [e.prefill.astype(np.float32).mean(1), e.generated.astype(np.float32).mean(1)]
    return [e.prefill, e.generated, *means, e.prefill_ids, e.generated_ids, e.prefill_kind, e.frame_index]


def raw_write(folder: Path, clips: list[VLMEntry]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, e in enumerate(clips):
        with open(folder / f"{i}.bin", "wb") as f:
            for a in payload(e):
                f.write(np.ascontiguousarray(a))


def raw_read(folder: Path, clips: list[VLMEntry], conv: str | None) -> None:
    """The token arrays of every clip, read back; ``conv``: None, "numpy" (``astype``) or
    "padded" (vectorised conversion into a zero-padded [L, max_tokens, H] buffer, the shape
    the cache reader hands to training)."""
    for i, e in enumerate(clips):
        with open(folder / f"{i}.bin", "rb") as f:
            for name, pad in (("prefill", PAD_PREFILL), ("generated", N_GENERATED)):
                a = getattr(e, name)
                x = np.frombuffer(f.read(a.nbytes), dtype=np.float16).reshape(a.shape)
                if conv == "numpy":
                    x.astype(np.float32)
                elif conv == "padded":
                    out = np.empty((a.shape[0], pad, a.shape[2]), np.float32)
                    storage_into_f32(out[:, :a.shape[1]], x, "float16")
                    out[:, a.shape[1]:] = 0


def raw_read_means(folder: Path, clips: list[VLMEntry]) -> None:
    """The two float32 means of every clip (stored right after the token arrays)."""
    for i, e in enumerate(clips):
        with open(folder / f"{i}.bin", "rb") as f:
            f.seek(e.prefill.nbytes + e.generated.nbytes)
            n = len(LAYERS) * HIDDEN * 4
            np.frombuffer(f.read(n), np.float32), np.frombuffer(f.read(n), np.float32)


def zarr_write(folder: Path, clips: list[VLMEntry]) -> None:
    """Every array of every clip through zarr-python's writer, with the cache's layout and
    codecs (bytes + crc32c, one shard per large array), one group per clip."""
    import zarr
    from zarr.codecs import BytesCodec, Crc32cCodec

    from thinkjepa.cache_schema.schema import CHUNK_SEP, chunk_layout

    for i, e in enumerate(clips):
        names = ("prefill", "generated", "prefill_mean", "generated_mean", "prefill_ids", "generated_ids", "prefill_kind", "frame_index")
        for name, a in zip(names, payload(e)):
            chunks, shard = chunk_layout(a.shape, a.dtype.itemsize)
            z = zarr.create_array(store=str(folder / str(i) / name), shape=a.shape, dtype=a.dtype, chunks=chunks, shards=shard,
                                  serializer=BytesCodec(endian="little"), compressors=[Crc32cCodec()], filters=None,
                                  fill_value=0, chunk_key_encoding={"name": "default", "separator": CHUNK_SEP},
                                  config={"write_empty_chunks": True}, zarr_format=3)
            z[...] = a


def zarr_read(folder: Path, clips: list[VLMEntry]) -> None:
    """The token arrays of every clip through zarr-python, into the zero-padded float32 batch
    shape the cache reader hands to training (as ``raw_read(..., "padded")``)."""
    import zarr

    for i in range(len(clips)):
        for name, pad in (("prefill", PAD_PREFILL), ("generated", N_GENERATED)):
            x = zarr.open_array(str(folder / str(i) / name), mode="r")[...]
            out = np.empty((x.shape[0], pad, x.shape[2]), np.float32)
            storage_into_f32(out[:, :x.shape[1]], x, "float16")
            out[:, x.shape[1]:] = 0


def small_entries(n: int, seed: int) -> tuple[StoreMeta, list[VLMEntry]]:
    """Entries of the decode-heavy capture bench's shape (tiny thinker, 8 frames of 64 px)."""
    rng = np.random.default_rng(seed)
    layers, hidden, n_pre, n_gen = [0, 1, 2, 3], 128, 90, 15
    kind = np.full(n_pre, TOKEN_TEXT, np.uint8)
    kind[10:74] = TOKEN_VISION
    frames = np.full(n_pre, -1, np.int32)
    frames[10:74] = np.arange(64) // 8
    meta = StoreMeta(kind="vlm", model="tiny", revision=None, layers=layers, layer_convention="decoder_output_prenorm",
                     hidden_size=hidden, storage_dtype="float16", extra={"bench": True})
    return meta, [VLMEntry(
        key=f"small/{i}@0", prefill=rng.standard_normal((len(layers), n_pre, hidden), dtype=np.float32),
        generated=rng.standard_normal((len(layers), n_gen, hidden), dtype=np.float32),
        prefill_ids=np.arange(n_pre, dtype=np.int32), generated_ids=np.arange(n_gen, dtype=np.int32),
        prefill_kind=kind, frame_index=frames, text="x" * 40, provenance={"prompt": "p" * 300},
        fingerprint="bench") for i in range(n)]


def commit_cost(url: str, meta: StoreMeta, entries: list[VLMEntry], mode: str) -> tuple[float, float]:
    """CPU and wall seconds per entry of ``CacheWriter.commit`` with ``THINKJEPA_CACHE_FSYNC=mode``
    (the writer's open and first commit not counted)."""
    old = os.environ.get(FSYNC_ENV)
    os.environ[FSYNC_ENV] = mode
    try:
        with CacheWriter(url, meta, part="bench") as w:
            w.commit(entries[0])
            c0, t0 = time.process_time(), time.perf_counter()
            for e in entries[1:]:
                w.commit(e)
            n = len(entries) - 1
            return (time.process_time() - c0) / n, (time.perf_counter() - t0) / n
    finally:
        if old is None:
            os.environ.pop(FSYNC_ENV, None)
        else:
            os.environ[FSYNC_ENV] = old


def cache_write(url: str, meta: StoreMeta, clips: list[VLMEntry]) -> None:
    with CacheWriter(url, meta, part="bench") as w:
        for e in clips:
            w.commit(e)


def cache_read(url: str | CacheReader, fields: tuple[str, ...], max_tokens: dict | None, batch_size: int = 1) -> None:
    """One pass over the cache; ``url`` may be an open reader (training keeps one open for the
    whole run, so opening it is no per-pass cost there)."""
    r = url if isinstance(url, CacheReader) else CacheReader(url)
    for _keys, _batch in r.stream(fields=fields, batch_size=batch_size, max_tokens=max_tokens):
        pass
    if r is not url:
        r.close()


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def median_rounds(reps: int, variants: dict) -> dict[str, list[float]]:
    """Seconds of every variant per round, the variants taking turns within each round."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, (fn, *args) in variants.items():
            times[name].append(timed(fn, *args))
    return times


def med(xs) -> float:
    return float(np.median(list(xs)))


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small-entries", type=int, default=201, help="entries per round of the durability figure")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_cache_", dir=args.workdir))
    try:
        clips = make_clips(args.clips, args.seed)
        meta = StoreMeta(kind="vlm", model="Qwen/Qwen3-VL-2B-Thinking", revision=None, layers=LAYERS,
                         layer_convention="decoder_output_prenorm", hidden_size=HIDDEN, storage_dtype="float16",
                         extra={"bench": True})
        logical = sum(a.nbytes for e in clips for a in payload(e))
        token_bytes = sum(e.prefill.nbytes + e.generated.nbytes for e in clips)
        print(f"{args.clips} clips, {len(LAYERS)} layers x {HIDDEN}, fp16, prefill {min(e.prefill.shape[1] for e in clips)}"
              f"-{max(e.prefill.shape[1] for e in clips)} tokens, {N_GENERATED} generated; "
              f"{logical / 1e6:.0f} MB per pass")

        # durability: what making each small entry survive a power cut costs its commit (first:
        # the big writes below leave the kernel writing back for a while, which slows every mode)
        small_meta, small = small_entries(args.small_entries, args.seed)
        modes = {"syncfs": "1", "files": "files", "none": "0"} if syncfs_available() else {"files": "1", "none": "0"}
        cost: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
        for rep in range(args.reps):
            for name, value in modes.items():
                d = work / f"small-{name}-{rep}.zarr"
                cost[name].append(commit_cost(str(d), small_meta, small, value))
                shutil.rmtree(d)
        cpu = {m: med(c for c, _ in v) * 1e3 for m, v in cost.items()}
        wall = {m: med(w for _, w in v) * 1e3 for m, v in cost.items()}
        for name in modes:
            print(f"commit  small entry, {name:<6} {cpu[name]:6.2f} ms CPU {wall[name]:6.2f} ms wall per entry   "
                  f"ratio {cpu['files'] / cpu[name]:.2f}x / {wall['files'] / wall[name]:.2f}x fsync per file "
                  f"(CPU / wall, median of {args.reps} x {len(small) - 1} entries)")

        # write: alternate baseline and cache so both see the same machine state
        t_raw, t_cache, t_zarr = float("inf"), float("inf"), float("inf")
        for rep in range(args.reps):
            d = work / f"raw{rep}"
            t_raw = min(t_raw, timed(raw_write, d, clips))
            t_cache = min(t_cache, timed(cache_write, str(work / f"cache{rep}.zarr"), meta, clips))
            t_zarr = min(t_zarr, timed(zarr_write, work / f"zarr{rep}", clips))
            if rep:
                for f in (d, work / f"cache{rep}.zarr", work / f"zarr{rep}"):
                    shutil.rmtree(f)
        mb = logical / 1e6
        print(f"write   plain files  {mb / t_raw:8.0f} MB/s")
        print(f"write   zarr-python  {mb / t_zarr:8.0f} MB/s   (same layout, codecs and bytes as the cache)")
        print(f"write   cache        {mb / t_cache:8.0f} MB/s   ratio {t_raw / t_cache:.2f}x plain, "
              f"{t_zarr / t_cache:.2f}x zarr-python (best of {args.reps})")

        url, raw_dir = str(work / "cache0.zarr"), work / "raw0"
        mt = {"prefill": PAD_PREFILL, "generated": N_GENERATED}
        cache_read(url, ("prefill", "generated"), mt)  # first use: imports, page cache
        t = median_rounds(args.reps, {
            "bytes": (raw_read, raw_dir, clips, None), "numpy": (raw_read, raw_dir, clips, "numpy"),
            "vec": (raw_read, raw_dir, clips, "padded"), "zarr": (zarr_read, work / "zarr0", clips),
            "cache": (cache_read, url, ("prefill", "generated"), mt)})
        tmb = token_bytes / 1e6

        def ratio(base: str) -> float:  # median of the per-round ratios
            return med(b / c for b, c in zip(t[base], t["cache"]))

        print(f"read    plain files, bytes only                 {tmb / med(t['bytes']):8.0f} MB/s")
        print(f"read    plain files + float32 (numpy astype)    {tmb / med(t['numpy']):8.0f} MB/s")
        print(f"read    plain files + float32 (vectorised, padded) {tmb / med(t['vec']):5.0f} MB/s")
        print(f"read    zarr-python + float32 (vectorised, padded) {tmb / med(t['zarr']):5.0f} MB/s")
        print(f"read    cache stream (float32 out)              {tmb / med(t['cache']):8.0f} MB/s   "
              f"ratio {ratio('numpy'):.2f}x plain+astype, {ratio('vec'):.2f}x plain+vectorised+padded, "
              f"{ratio('bytes'):.2f}x bytes only, {ratio('zarr'):.2f}x zarr-python  (median of {args.reps})")

        # the means path: tiny reads, so per-entry overhead is all there is; many passes
        passes = max(1, 64 // len(clips))
        opened = CacheReader(url)
        tm = median_rounds(args.reps, {
            "plain": (lambda: [raw_read_means(raw_dir, clips) for _ in range(passes)],),
            "cache": (lambda: [cache_read(url, ("prefill_mean", "generated_mean"), None, 16) for _ in range(passes)],),
            "open": (lambda: [cache_read(opened, ("prefill_mean", "generated_mean"), None, 16) for _ in range(passes)],)})
        opened.close()
        n_read = passes * len(clips)
        print(f"means   plain files                             {n_read / med(tm['plain']):8.0f} entries/s")
        print(f"means   cache stream (batches of 16)            {n_read / med(tm['cache']):8.0f} entries/s   "
              f"ratio {med(p / c for p, c in zip(tm['plain'], tm['cache'])):.2f}x plain (reader opened every pass)")
        print(f"means   cache stream, one reader for all passes {n_read / med(tm['open']):8.0f} entries/s   "
              f"ratio {med(p / c for p, c in zip(tm['plain'], tm['open'])):.2f}x plain (as training reads)")

        # bytes per clip: the cache entry on disk vs the reference format (few clips: zlib is slow)
        n_ref = min(3, len(clips))
        ref_dir = work / "ref"
        ref_dir.mkdir()
        t0 = time.perf_counter()
        for i, e in enumerate(clips[:n_ref]):
            pre = np.zeros((len(LAYERS), PAD_PREFILL, HIDDEN), np.float16)
            pre[:, :e.prefill.shape[1]] = e.prefill
            mask = np.zeros(PAD_PREFILL, bool)
            mask[:e.prefill.shape[1]] = True
            np.savez_compressed(ref_dir / f"{i}.npz", prefill=pre, prefill_mask=mask, generated=e.generated)
        t_ref = (time.perf_counter() - t0) / n_ref
        ref_bytes = dir_bytes(ref_dir) / n_ref
        r = CacheReader(url)
        recs = {rec["key"]: rec for rec in r.records()}
        cache_bytes = sum(dir_bytes(Path(url) / recs[e.key]["path"])
                          + (Path(url) / "index" / "bench" / f"{escape_key(e.key)}.json").stat().st_size
                          for e in clips[:n_ref]) / n_ref
        print(f"size    reference npz (fp16, padded to {PAD_PREFILL}) {ref_bytes / 1e6:7.2f} MB/clip "
              f"({t_ref:.2f} s/clip to write)")
        print(f"size    cache entry (+ means, ids, kinds, frames)  {cache_bytes / 1e6:7.2f} MB/clip   "
              f"ratio {cache_bytes / ref_bytes:.2f}x reference")

        # bytes fetched per training sample
        keys = r.keys()
        b0 = r.bytes_read
        for k in keys:
            r.read_means(k)
        b_means = (r.bytes_read - b0) / len(keys)
        b0 = r.bytes_read
        for k in keys:
            r.read_tokens(k, "prefill", PAD_PREFILL)
            r.read_tokens(k, "generated", N_GENERATED)
        b_tokens = (r.bytes_read - b0) / len(keys)
        print(f"sample  means only  {b_means / 1e3:9.1f} KB/sample")
        print(f"sample  tokens      {b_tokens / 1e3:9.1f} KB/sample   means-only reads {b_tokens / b_means:.0f}x fewer bytes")
        r.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
