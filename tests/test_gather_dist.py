"""Cross-worker gather on 2 gloo processes against the single-process result on the whole batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from raysys.losses import IdTargets, info_nce
from raysys.objectives.negatives import (
    EmbeddingQueue,
    all_gather_no_grad,
    all_gather_with_grad,
    rank,
    world_size,
)

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(r: int, fn, port: int, out: str, args: tuple) -> None:
    torch.set_num_threads(1)
    init = f"tcp://127.0.0.1:{port}"
    dist.init_process_group("gloo", init_method=init, rank=r, world_size=WORLD)
    try:
        torch.save(fn(*args), Path(out) / f"rank{r}.pt")
    finally:
        dist.destroy_process_group()


def run_two_ranks(fn, tmp_path: Path, *args) -> list:
    """Run `fn(*args)` on 2 gloo ranks; returns each rank's result, in rank order."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_entry, args=(fn, free_port(), str(tmp_path), args), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


def _gather_worker() -> dict:
    r = rank()
    x = torch.full((2 + r, 3), float(r + 1), requires_grad=True)  # unequal sizes: 2 and 3 rows
    gathered = all_gather_with_grad(x)
    weights = torch.arange(15.0).reshape(5, 3)
    ((r + 1) * weights * gathered).sum().backward()  # rank-dependent use of every row
    flags = all_gather_no_grad(torch.tensor([r == 0] * (r + 1)))
    return {"gathered": gathered.detach(), "grad": x.grad, "flags": flags, "ws": world_size()}


def test_all_gather_unequal_sizes_and_gradient_scale(tmp_path):
    results = run_two_ranks(_gather_worker, tmp_path)
    want = torch.cat([torch.full((2, 3), 1.0), torch.full((3, 3), 2.0)])
    weights = torch.arange(15.0).reshape(5, 3)
    for r, res in enumerate(results):
        assert res["ws"] == WORLD
        assert torch.equal(res["gathered"], want)
        assert torch.equal(res["flags"], torch.tensor([True, False, False]))
        # owner gets Σ_r' ∂L_r'/∂x_r = (1 + 2) * its rows of `weights`: not divided by W
        rows = slice(0, 2) if r == 0 else slice(2, 5)
        torch.testing.assert_close(res["grad"], 3 * weights[rows])


def make_model_and_data():
    gen = torch.Generator().manual_seed(0)
    enc_q, enc_k = nn.Linear(6, 4), nn.Linear(6, 4)
    with torch.no_grad():
        for p in [*enc_q.parameters(), *enc_k.parameters()]:
            p.copy_(torch.randn(p.shape, generator=gen))
    x_q, x_k = torch.randn(8, 6, generator=gen), torch.randn(8, 6, generator=gen)
    return enc_q, enc_k, x_q, x_k


def symmetric_loss(q, k, q_ids, k_ids, chunk):
    """CLIP-style symmetric InfoNCE of local queries against gathered keys and vice versa."""
    q_all, k_all = all_gather_with_grad(q), all_gather_with_grad(k)
    a = info_nce(q, k_all, positive_mask=IdTargets(q_ids, k_ids), chunk_size=chunk)
    b = info_nce(k, q_all, positive_mask=IdTargets(q_ids, k_ids), chunk_size=chunk)
    return (a + b) / 2


def grads_of(*modules: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for m in modules for p in m.parameters()]


def _loss_worker(chunks) -> dict:
    out = {}
    for chunk in chunks:
        enc_q, enc_k, x_q, x_k = make_model_and_data()
        n = x_q.shape[0] // WORLD
        local = slice(rank() * n, (rank() + 1) * n)
        q_ids, k_ids = torch.arange(x_q.shape[0])[local], torch.arange(x_q.shape[0])
        loss = symmetric_loss(enc_q(x_q[local]), enc_k(x_k[local]), q_ids, k_ids, chunk)
        loss.backward()
        out[chunk] = {"loss": loss.detach(), "grads": grads_of(enc_q, enc_k)}
    return out


def test_gathered_loss_and_grads_equal_single_process(tmp_path):
    enc_q, enc_k, x_q, x_k = make_model_and_data()
    ids = torch.arange(8)
    single = symmetric_loss(enc_q(x_q), enc_k(x_k), ids, ids, None)
    single.backward()
    want = grads_of(enc_q, enc_k)
    chunks = (None, 3)
    per_rank = run_two_ranks(_loss_worker, tmp_path, chunks)
    for chunk in chunks:
        results = [res[chunk] for res in per_rank]
        mean_loss = sum(res["loss"] for res in results) / WORLD
        torch.testing.assert_close(mean_loss, single.detach(), rtol=1e-5, atol=1e-7)
        # data-parallel averaging of the per-rank parameter gradients
        averaged = [sum(gs) / WORLD for gs in zip(*(res["grads"] for res in results), strict=True)]
        for got, ref in zip(averaged, want, strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def _queue_worker() -> dict:
    queue = EmbeddingQueue(size=5, dim=2)
    for step in range(3):
        keys = torch.full((1 + rank(), 2), float(10 * step + rank()))
        queue.enqueue(keys, ids=torch.full((1 + rank(),), 100 * step + rank()))
    return {"keys": queue.negatives().clone(), "ids": queue.negative_ids().clone()}


def test_queue_is_identical_on_every_rank(tmp_path):
    results = run_two_ranks(_queue_worker, tmp_path)
    # steps enqueue [r0 x1, r1 x2] = 3 rows each; a 5-slot ring after 9 rows holds rows 4..8
    stream = [
        (10 * s + r, 100 * s + r) for s in range(3) for r in range(WORLD) for _ in range(r + 1)
    ]
    slots = {i % 5: row for i, row in enumerate(stream)}
    want_keys = torch.tensor([[float(slots[i][0])] * 2 for i in range(5)])
    want_ids = torch.tensor([slots[i][1] for i in range(5)])
    for res in results:
        assert torch.equal(res["keys"], want_keys)
        assert torch.equal(res["ids"], want_ids)
