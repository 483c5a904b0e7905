"""Embedding queue (ring order, checkpointing, false-negative guard), momentum encoder, config."""

from __future__ import annotations

import io
from collections import deque

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from raysys.losses import IdTargets, info_nce
from raysys.objectives.negatives import EmbeddingQueue, MomentumEncoder, NegativesConfig
from raysys.objectives.negatives.queue import NO_ID


def test_queue_keeps_the_most_recent_keys_in_ring_order():
    gen = torch.Generator().manual_seed(0)
    queue, ref = EmbeddingQueue(size=7, dim=3), deque(maxlen=7)
    slots: dict[int, tuple] = {}
    written = 0
    for n in (2, 3, 4, 1, 9, 5):
        keys = torch.randn(n, 3, generator=gen)
        ids = torch.randint(0, 100, (n,), generator=gen)
        queue.enqueue(keys, ids)
        for key, i in zip(keys[-7:], ids[-7:], strict=True):
            ref.append((key, int(i)))
            slots[written % 7] = (key, int(i))
            written += 1
        assert len(queue) == len(ref)
        order = [slots[s] for s in range(len(ref))]
        assert torch.equal(queue.negatives(), torch.stack([key for key, _ in order]))
        assert queue.negative_ids().tolist() == [i for _, i in order]
    assert {int(i) for _, i in ref} == set(queue.negative_ids().tolist())


def test_queue_without_ids_and_bad_shapes():
    queue = EmbeddingQueue(size=4, dim=2)
    assert queue.negatives().shape == (0, 2)
    queue.enqueue(torch.ones(3, 2))
    assert queue.negative_ids().tolist() == [NO_ID] * 3
    with pytest.raises(ValueError, match=r"keys must be \[n, 2\]"):
        queue.enqueue(torch.ones(3, 5))
    with pytest.raises(ValueError, match=r"ids must be \[3\]"):
        queue.enqueue(torch.ones(3, 2), torch.arange(2))


def test_queue_state_dict_round_trip():
    queue = EmbeddingQueue(size=5, dim=2)
    for step in range(4):
        queue.enqueue(torch.full((2, 2), float(step)), torch.tensor([step, step + 10]))
    buffer = io.BytesIO()
    torch.save(queue.state_dict(), buffer)
    buffer.seek(0)
    restored = EmbeddingQueue(size=5, dim=2)
    restored.load_state_dict(torch.load(buffer))  # weights_only: plain tensors
    assert set(queue.state_dict()) == {"keys", "ids", "ptr", "filled"}
    for q in (queue, restored):
        q.enqueue(torch.full((1, 2), 9.0), torch.tensor([99]))
    assert torch.equal(restored.negatives(), queue.negatives())
    assert torch.equal(restored.negative_ids(), queue.negative_ids())
    with pytest.raises(RuntimeError, match="keys"):
        EmbeddingQueue(size=6, dim=2).load_state_dict(queue.state_dict())


def test_queued_key_of_the_same_entity_is_not_a_negative():
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    queue = EmbeddingQueue(size=4, dim=4)
    queued, queued_ids = torch.randn(4, 4, generator=gen), torch.tensor([1, 7, 0, 8])
    queue.enqueue(queued, queued_ids)
    ids = torch.tensor([0, 1, 2])
    keys, key_ids, negative_only = queue.extend(k, ids)
    targets = IdTargets(ids, key_ids, k_negative_only=negative_only)
    got = info_nce(q, keys, positive_mask=targets, temperature=0.5)
    # reference: row i's pool = all batch keys + queued keys of other entities
    qn, kn = nn.functional.normalize(q, dim=1), nn.functional.normalize(keys, dim=1)
    rows = []
    for i in range(3):
        pool = [j for j in range(7) if j < 3 or int(key_ids[j]) != int(ids[i])]
        logits = torch.stack([qn[i] @ kn[j] / 0.5 for j in pool])
        rows.append(torch.logsumexp(logits, 0) - qn[i] @ kn[i] / 0.5)
    torch.testing.assert_close(got, torch.stack(rows).mean())
    unguarded = info_nce(q, keys, positive_mask=IdTargets(ids, torch.cat([ids, queued_ids + 50])))
    assert not torch.isclose(got, unguarded)


def test_momentum_encoder_is_an_ema_without_grad():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = MomentumEncoder(online)
    start = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    online(torch.randn(8, 3))  # moves BatchNorm's running stats
    ema.update(online, m=0.9)
    for e, s, o in zip(ema.parameters(), start, online.parameters(), strict=True):
        assert not e.requires_grad
        torch.testing.assert_close(e, 0.9 * s + 0.1 * o.detach())
    torch.testing.assert_close(ema.module[1].running_mean, online[1].running_mean)
    assert not ema(torch.randn(2, 3)).requires_grad
    ema.update(online, m=0.0)
    for e, o in zip(ema.parameters(), online.parameters(), strict=True):
        assert torch.equal(e, o)
    with pytest.raises(ValueError, match="momentum"):
        ema.update(online, m=1.5)
    with pytest.raises(ValueError, match="different parameters"):
        ema.update(nn.Linear(3, 4), m=0.5)


def test_negatives_config_validation():
    cfg = NegativesConfig(gather=True, queue_size=4096, momentum=0.999, chunk_size=1024)
    assert cfg.grad_cache_sub_batch is None and cfg.chunk_recompute
    with pytest.raises(ValidationError, match="queue_size"):
        NegativesConfig(queue_size=-1)
    with pytest.raises(ValidationError, match="momentum"):
        NegativesConfig(momentum=1.0)
    with pytest.raises(ValidationError, match="chunk_size"):
        NegativesConfig(chunk_size=0)
    with pytest.raises(ValidationError, match="queue_sise"):
        NegativesConfig.model_validate({"queue_sise": 3})
