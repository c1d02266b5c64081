"""benchmarks/spy_workers.py: py-spy raw stacks split by process, two workers compared."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "spy_workers.py"


def _spy():
    spec = importlib.util.spec_from_file_location("spy_workers", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["spy_workers"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _stack(pid: int, *frames: str, count: int) -> str:
    loop = ["WorkerProc.worker_busy_loop (vllm/v1/executor/multiproc_executor.py:10)",
            "GPUModelRunner.execute_model (vllm/v1/worker/gpu_model_runner.py:20)"]
    return ";".join(['process 1:"client"', f'process {pid}:"worker"', *loop, *frames]) + f" {count}\n"


def test_workers_are_compared_and_client_code_is_counted():
    spy = _spy()
    lines = [
        _stack(10, "Model.forward (m.py:1)", count=100),
        _stack(20, "Model.forward (m.py:1)", count=120),
        _stack(20, "RejectionSampler.forward (r.py:5)", count=30),
        'process 1:"client";run (b.py:3);CacheWriter.commit (w.py:9) 7\n',
        "malformed line without a count\n",
    ]
    procs = spy.parse(lines)
    assert {p.pid for p in procs.values() if p.worker} == {10, 20}
    assert procs[10].steps == 100 and procs[20].steps == 150
    assert procs[20].inclusive["RejectionSampler.forward (r.py)"] == 30  # line numbers folded
    assert procs[1].anywhere["CacheWriter.commit"] == 7 and procs[1].steps == 0
    text = spy.report(procs)
    assert "(1.50x)" in text
    lines_out = text.splitlines()
    rejection = next(line for line in lines_out if "RejectionSampler.forward" in line)
    assert "+30" in rejection and "60%" in rejection  # 30 of the 50 extra samples
    assert not any("worker_busy_loop" in line for line in lines_out[3:])  # common ancestors left out


def test_one_worker_is_not_compared():
    spy = _spy()
    assert "found 1" in spy.report(spy.parse([_stack(10, "f (a.py:1)", count=5)]))
