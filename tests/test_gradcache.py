"""Gradient caching gives the gradients of the plain large-batch step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raysys.losses import info_nce
from raysys.objectives.negatives import grad_cache_step


class Encoder(nn.Module):
    def __init__(self, d_in: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, 8), nn.Tanh(), nn.Dropout(dropout), nn.Linear(8, 4)
        )

    def forward(self, x):
        return self.net(x)


class DictEncoder(nn.Module):
    """Takes a dict input, like the tabular views."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 4)

    def forward(self, x):
        return self.lin(x["num"] * x["mask"])


def setup(dropout: float):
    torch.manual_seed(0)
    enc_a, enc_b = Encoder(6, dropout), DictEncoder()
    log_tau = nn.Parameter(torch.tensor(-2.0))  # a parameter inside the loss
    xa = torch.randn(10, 6)
    xb = {"num": torch.randn(10, 5), "mask": (torch.rand(10, 5) > 0.2).float()}
    return enc_a, enc_b, log_tau, xa, xb


def params(enc_a, enc_b, log_tau):
    return [*enc_a.parameters(), *enc_b.parameters(), log_tau]


def loss_of(log_tau):
    def loss_fn(a, b):
        tau = log_tau.exp()
        terms = {"a2b": info_nce(a, b, temperature=tau), "b2a": info_nce(b, a, temperature=tau)}
        return {"loss": terms["a2b"] + terms["b2a"], **terms}

    return loss_fn


@pytest.mark.parametrize("sub_batch", [1, 3, 10, 64])
def test_grad_cache_equals_plain_large_batch_step(sub_batch):
    enc_a, enc_b, log_tau, xa, xb = setup(dropout=0.0)
    plain = loss_of(log_tau)(enc_a(xa), enc_b(xb))
    plain["loss"].backward()
    want = [p.grad.clone() for p in params(enc_a, enc_b, log_tau)]
    for p in params(enc_a, enc_b, log_tau):
        p.grad = None
    calls = []

    def backward(t):
        calls.append(t.shape)
        t.backward()

    out = grad_cache_step([enc_a, enc_b], [xa, xb], loss_of(log_tau), sub_batch, backward)
    assert set(out) == {"loss", "a2b", "b2a"} and not out["loss"].requires_grad
    torch.testing.assert_close(out["loss"], plain["loss"].detach())
    n_sub = -(-10 // sub_batch)
    assert len(calls) == 1 + 2 * n_sub  # the loss, then each (encoder, sub-batch) surrogate
    for p, g in zip(params(enc_a, enc_b, log_tau), want, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)


def test_dropout_is_replayed_identically():
    """With dropout, the gradients are those of the same sub-batched forward with graph."""
    enc_a, enc_b, log_tau, xa, xb = setup(dropout=0.5)
    torch.manual_seed(123)
    a = torch.cat([enc_a(xa[r : r + 4]) for r in range(0, 10, 4)])  # same RNG draws as pass 1
    b = enc_b(xb)
    ref_loss = loss_of(log_tau)(a, b)["loss"]
    ref_loss.backward()
    want = [p.grad.clone() for p in params(enc_a, enc_b, log_tau)]
    after_ref = torch.rand(1)
    for p in params(enc_a, enc_b, log_tau):
        p.grad = None
    torch.manual_seed(123)
    out = grad_cache_step([enc_a, enc_b], [xa, xb], loss_of(log_tau), sub_batch=4)
    torch.testing.assert_close(out["loss"], ref_loss.detach())
    for p, g in zip(params(enc_a, enc_b, log_tau), want, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)
    # the global RNG continues as after the first pass (the replay ran in a forked RNG)
    assert torch.equal(torch.rand(1), after_ref)


def test_bad_arguments():
    enc_a, enc_b, log_tau, xa, xb = setup(dropout=0.0)
    with pytest.raises(ValueError, match="2 encoders but 1 inputs"):
        grad_cache_step([enc_a, enc_b], [xa], loss_of(log_tau), 4)
    with pytest.raises(ValueError, match="sub_batch"):
        grad_cache_step([enc_a, enc_b], [xa, xb], loss_of(log_tau), 0)
    with pytest.raises(ValueError, match="without a 'loss' key"):
        grad_cache_step([enc_a, enc_b], [xa, xb], lambda a, b: {"x": (a * b).sum()}, 4)
    bad = {"num": torch.randn(10, 5), "mask": torch.ones(9, 5)}
    with pytest.raises(ValueError, match="different lengths"):
        grad_cache_step([enc_a, enc_b], [xa, bad], loss_of(log_tau), 4)


def test_sub_batched_encoding_equals_whole_batch_encoding():
    """The trainer's pass 1: slicing a HeteroBatch (views, augmentation flags, relevance lists)
    and concatenating the sub-batches' EncodedViews gives the whole batch's EncodedViews."""
    from raysys.data.batch import HeteroBatch, ModalityViews
    from raysys.models import ModelConfig, ModelInputs, MultiViewModel
    from raysys.train.module import encode_in_sub_batches, slice_batch

    torch.manual_seed(0)
    b, v, w = 7, 2, 4
    model = MultiViewModel(ModelConfig(embed_dim=8, proj_hidden=16, loev_heads=["pitch_shift"]),
                           ModelInputs(("audio", "image", "tabular"), 3, 2, (5,), w))
    tab = {"tabular_num": torch.randn(b, v, w, 2), "tabular_num_mask": torch.rand(b, v, w, 2) > .2,
           "tabular_cat": torch.randint(0, 6, (b, v, w, 1)),
           "tabular_row_mask": torch.rand(b, v, w) > 0.3}
    present = torch.rand(b) > 0.3
    pitch = {"applied": torch.rand(b, v) > 0.5, "semitones": torch.randn(b, v)}
    batch = HeteroBatch(
        [f"k{i}" for i in range(b)], torch.arange(b) * 3 + 1,
        {"audio": ModalityViews(torch.randn(b, v, 3, 8, 8), present, aug={"pitch_shift": pitch}),
         "image": ModalityViews(torch.randn(b, v, 3, 16, 16), torch.ones(b, dtype=torch.bool)),
         "tabular": ModalityViews(tab, ~present)},
        relevance_entity_id=torch.randint(0, 20, (b, 3)), relevance=torch.rand(b, 3) * 100,
        relevance_mask=torch.rand(b, 3) > 0.5,
    )  # fmt: skip
    assert slice_batch(batch, slice(2, 5)).keys == ["k2", "k3", "k4"]
    with torch.no_grad():
        whole = model(batch)
        parts = encode_in_sub_batches(model, batch, 3)  # sub-batches of 3, 3, 1
    for h in whole.embeddings:
        torch.testing.assert_close(parts.embeddings[h], whole.embeddings[h], rtol=1e-5, atol=1e-6)
    for name in ("present", "entity_id", "relevance_entity_id", "relevance", "relevance_mask"):
        assert torch.equal(getattr(parts, name), getattr(whole, name)), name
    assert parts.applied.keys() == whole.applied.keys()
    assert all(torch.equal(parts.applied[k], whole.applied[k]) for k in whole.applied)
    assert torch.equal(parts.slot_modality, whole.slot_modality)
