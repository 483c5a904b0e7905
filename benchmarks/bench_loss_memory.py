"""Peak memory and time of InfoNCE forward+backward against pool size: full matrix vs chunked.

    .venv/bin/python benchmarks/bench_loss_memory.py        # CPU, fp32, N = M = 2k..64k
    .venv/bin/python benchmarks/bench_loss_memory.py \
        --device cuda --dtype bf16 --naive-budget-gib 60 --sizes 8192 32768 131072 262144

Methods (same inputs q, k `[N, d]` with requires_grad, cosine scores, τ = 0.07, diagonal positives):
- `naive`: `F.cross_entropy(normalize(q) @ normalize(k).T / τ, arange(N))` — holds `[N, N]`.
- `chunked`: `info_nce(q, k, chunk_size=C)` — row blocks, backward recomputes them.
- `chunked-fused`: `info_nce(q, k, chunk_size=C, recompute=False)` — gradients in the forward.

Every (method, size) runs in a fresh subprocess. Memory = peak growth over the baseline taken
after the inputs exist: CPU `getrusage(RUSAGE_SELF).ru_maxrss` (peak RSS), CUDA
`max_memory_allocated`. Time = wall time of one forward+backward (the minimum of up to 5 runs
while they total under 5 s; the first run also gives the memory). A naive size whose estimate
`4 * N * M * itemsize` exceeds `--naive-budget-gib` is skipped (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

METHODS = ("naive", "chunked", "chunked-fused")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TAU = 0.07
GIB = 1024**3


def naive_step(q: torch.Tensor, k: torch.Tensor, chunk: int) -> None:
    scores = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / TAU
    F.cross_entropy(scores, torch.arange(q.shape[0], device=q.device)).backward()


def chunked_step(q: torch.Tensor, k: torch.Tensor, chunk: int, recompute: bool) -> None:
    from raysys.losses import info_nce

    info_nce(q, k, temperature=TAU, chunk_size=chunk, recompute=recompute).backward()


def run_step(method: str, q: torch.Tensor, k: torch.Tensor, chunk: int) -> None:
    if method == "naive":
        naive_step(q, k, chunk)
    else:
        chunked_step(q, k, chunk, recompute=method == "chunked")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _inputs(n: int, d: int, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(n, d, device=device, generator=gen).to(dtype).requires_grad_()
    k = torch.randn(n, d, device=device, generator=gen).to(dtype).requires_grad_()
    return q, k


def timed(method: str, q: torch.Tensor, k: torch.Tensor, chunk: int, device: str) -> float:
    q.grad = k.grad = None
    _sync(device)
    start = time.perf_counter()
    run_step(method, q, k, chunk)
    _sync(device)
    return time.perf_counter() - start


def child(args: argparse.Namespace) -> dict:
    """One (method, size) measurement in this fresh process."""
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    warm_q, warm_k = _inputs(256, args.dim, args.device, dtype)
    run_step(args.method, warm_q, warm_k, min(args.chunk_size, 256))  # load kernels, tiny peak
    del warm_q, warm_k
    q, k = _inputs(args.n, args.dim, args.device, dtype)
    _sync(args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated() if args.device == "cuda" else _peak_bytes("cpu")
    seconds = timed(args.method, q, k, args.chunk_size, args.device)
    peak = _peak_bytes(args.device) - baseline
    times = [seconds]
    while len(times) < 5 and sum(times) < 5.0:  # short runs: best of several (shared machine)
        times.append(timed(args.method, q, k, args.chunk_size, args.device))
    return {"method": args.method, "n": args.n, "peak_extra_bytes": peak, "seconds": min(times)}


def measure(args: argparse.Namespace, method: str, n: int) -> dict:
    itemsize = torch.empty(0, dtype=DTYPES[args.dtype]).element_size()
    estimate = 4 * n * n * itemsize
    if method == "naive" and estimate > args.naive_budget_gib * GIB:
        return {"method": method, "n": n, "skipped": f"skipped (est. {estimate / GIB:.0f} GiB)"}
    cmd = [sys.executable, __file__, "--child", "--method", method, "--n", str(n)]
    cmd += ["--dim", str(args.dim), "--chunk-size", str(args.chunk_size), "--device", args.device]
    cmd += ["--dtype", args.dtype, "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        return {"method": method, "n": n, "skipped": f"failed: {done.stderr.strip()[-300:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    naive_time = {
        r["n"]: r["seconds"] for r in results if r["method"] == "naive" and "seconds" in r
    }
    lines = [
        "| N = M | method | peak extra memory (MiB) | time fwd+bwd (s) | time / naive |",
        "|------:|--------|------------------------:|-----------------:|-------------:|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['n']:,} | {r['method']} | {r['skipped']} | | |")
            continue
        ratio = f"{r['seconds'] / naive_time[r['n']]:.2f}x" if r["n"] in naive_time else "-"
        mib = r["peak_extra_bytes"] / 2**20
        lines.append(f"| {r['n']:,} | {r['method']} | {mib:,.0f} | {r['seconds']:.2f} | {ratio} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2**i for i in range(11, 17)])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--chunk-size", type=int, default=256, help="query rows per block")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    p.add_argument("--naive-budget-gib", type=float, default=6.0, help="skip larger naive runs")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    p.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible")
    results = []
    for n in args.sizes:
        for method in args.methods:
            results.append(measure(args, method, n))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    print(
        f"device={args.device} dtype={args.dtype} d={args.dim} chunk={args.chunk_size} "
        f"threads={args.threads} torch={torch.__version__}\n"
    )
    print(table(results))


if __name__ == "__main__":
    main()
