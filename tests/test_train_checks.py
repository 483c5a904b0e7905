"""Fast trainer checks without a Ray Train run: config errors caught before any worker starts,
unreachable storage, and the step logic of `Trainer` (non-finite loss, ZeRO-3 momentum encoder)
on a real DeepSpeed engine in a 1-process gloo group."""

from __future__ import annotations

import math
import os
import time

import pytest
import torch
import torch.distributed as dist

from raysys.config import ConfigError, load_config
from raysys.train.driver import pretrain
from raysys.train.preflight import StorageUnreachable

TINY = "configs/tiny.yaml"


def tiny(tmp_path, *overrides: str):
    return load_config(TINY, [f"archive={tmp_path}/missing-archive", f"out={tmp_path}/run",
                              *overrides])


def assert_nothing_started(tmp_path) -> None:
    """No run folder content and no checkpoint folder: no worker (or driver run) began."""
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- config errors: before any worker starts, naming the key ----------------------------------


def test_unknown_key_names_it(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.stepz: unknown key"):
        tiny(tmp_path, "train.stepz=3")


def test_wrong_value_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.zero_stage: .*less than or equal to 3"):
        tiny(tmp_path, "train.zero_stage=4")
    with pytest.raises(ConfigError, match=r"train\.storage_path: .*unsupported URI scheme"):
        tiny(tmp_path, "train.storage_path=gs://bucket/x")


@pytest.mark.parametrize(("overrides", "key"), [
    (["objective.negatives.grad_cache_sub_batch=8"], "objective.negatives.grad_cache_sub_batch"),
    (["objective.negatives.momentum=0.9"], "objective.negatives.momentum"),
    (["train.grad_accum=2"], "train.nonfinite"),
    (["train.checkpoint_every=7"], "train.checkpoint_every"),
])
def test_cross_section_errors_fail_when_the_config_loads(tmp_path, overrides, key):
    """The rules live in the config's validator (raysys.config_rules): before any work."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        tiny(tmp_path, *overrides)
    assert_nothing_started(tmp_path)


def test_warmup_cross_field(tmp_path):
    with pytest.raises(ConfigError, match=r"train: .*warmup_steps \(6\) must be smaller"):
        tiny(tmp_path, "train.warmup_steps=6")


@pytest.mark.s3
def test_unreachable_storage_retried_then_fails(tmp_path, s3_endpoint):
    cfg = tiny(tmp_path, "train.storage_path=s3://no-such-bucket/ckpt", "train.storage_retries=2")
    start = time.perf_counter()
    with pytest.raises(StorageUnreachable, match=r"train\.storage_path: .*after 3 attempts"):
        pretrain(cfg)
    assert time.perf_counter() - start >= 0.5 + 1.0  # backoff 0.5 s, then 1 s
    assert_nothing_started(tmp_path)


# -- the step logic on a real DeepSpeed engine (1 process, gloo) -------------------------------


@pytest.fixture(scope="module")
def gloo_group():
    from s3_fixture import free_port

    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def real_batch(ray_session, demo_archive):
    """One real micro-batch of 8 entities from the demo archive, and the opened pipeline."""
    from raysys.data.pipeline import iter_hetero_batches, open_archive

    cfg = load_config(TINY, [f"archive={demo_archive}"])
    pipe = open_archive(cfg.archive, cfg.data)
    ds = pipe.dataset("train", stop=8, shard=(0, 1, 8))
    return pipe, next(iter(iter_hetero_batches(ds, 8, drop_last=True)))


def make_trainer(pipe, tmp_path, *overrides: str):
    from raysys.train.loop import Trainer

    cfg = load_config(TINY, [f"out={tmp_path}", "train.num_workers=1", *overrides])
    return Trainer(cfg, pipe, rank=0, world=1)


def poisoned(batch):
    """The batch with NaN audio inputs: the audio embeddings, hence the loss, are NaN."""
    import copy

    bad = copy.deepcopy(batch)
    bad.views["audio"].x.fill_(float("nan"))
    return bad


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_nonfinite_skip_leaves_weights_and_optimizer(gloo_group, real_batch, tmp_path, capsys):
    from raysys.train.loop import StepStats

    pipe, batch = real_batch
    tr = make_trainer(pipe, tmp_path, "train.nonfinite=skip", "train.zero_stage=2")
    stats = StepStats()
    assert tr.micro_step(batch, stats)  # a finite step first: optimizer state exists
    before, lr_epoch = snapshot(tr.module), tr.scheduler.last_epoch
    moments = {k: v.clone() for k, v in tr.optimizer.state_dict()["base_optimizer_state"]
               ["state"][0].items()}
    assert not tr.micro_step(poisoned(batch), stats)
    printed = capsys.readouterr().out
    assert "step 1: non-finite loss (terms: binary" in printed
    assert f"rank 0: non-finite embeddings of entities {batch.keys[0]}, " in printed
    after = snapshot(tr.module)
    assert all(torch.equal(before[k], after[k]) for k in before)
    state = tr.optimizer.state_dict()["base_optimizer_state"]["state"][0]
    assert all(torch.equal(moments[k], state[k]) for k in moments)
    assert stats.skipped == 1 and tr.scheduler.last_epoch == lr_epoch + 1
    assert all(math.isfinite(v) for vs in stats.terms.values() for v in vs)
    assert tr.micro_step(batch, stats)  # training goes on after the skip


def test_nonfinite_stop_names_step_and_term(gloo_group, real_batch, tmp_path):
    from raysys.train.loop import NonFiniteLoss, StepStats

    pipe, batch = real_batch
    tr = make_trainer(pipe, tmp_path, "train.nonfinite=stop", "train.zero_stage=0")
    before = snapshot(tr.module)
    with pytest.raises(NonFiniteLoss, match=r"step 1: non-finite loss \(terms: binary.*loss"):
        tr.micro_step(poisoned(batch), StepStats())
    assert all(torch.equal(before[k], v) for k, v in snapshot(tr.module).items())


def test_too_many_skips_stop(gloo_group, real_batch, tmp_path):
    from raysys.train.loop import NonFiniteLoss, StepStats

    pipe, batch = real_batch
    tr = make_trainer(pipe, tmp_path, "train.max_skipped_steps=1", "train.zero_stage=0")
    stats = StepStats()
    tr.micro_step(poisoned(batch), stats)
    with pytest.raises(NonFiniteLoss, match=r"train\.max_skipped_steps=1"):
        tr.micro_step(poisoned(batch), stats)


def test_momentum_encoder_under_zero3(gloo_group, real_batch, tmp_path):
    """ZeRO-3 partitions the online parameters; the EMA update gathers them."""
    import deepspeed

    from raysys.train.loop import StepStats

    pipe, batch = real_batch
    tr = make_trainer(pipe, tmp_path, "train.zero_stage=3", "objective.negatives.queue_size=32",
                      "objective.negatives.momentum=0.5")
    online = tr.module.model
    params = list(online.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        start = {k: v.detach().clone() for k, v in online.named_parameters()}
    key_start = dict(tr.key_encoder.module.named_parameters())
    assert all(torch.equal(start[k], key_start[k]) for k in start)  # a copy of the full model
    assert any(p.numel() == 0 for p in params)  # partitioned outside the gather (ZeRO-3)
    tr.optimizer_step(iter([batch]), StepStats())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        new = {k: v.detach().clone() for k, v in online.named_parameters()}
    assert any(not torch.equal(start[k], new[k]) for k in start)
    for name, p in tr.key_encoder.module.named_parameters():
        torch.testing.assert_close(p, 0.5 * start[name] + 0.5 * new[name])
    assert 0 < len(tr.queue) <= 32  # the keys of the step were enqueued
