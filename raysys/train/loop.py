"""The per-worker training function that Ray Train runs on every rank.

    resume (latest registered checkpoint) -> stream this rank's shard from the restored
    position -> forward / objective / backward / step -> metrics every `log_every` steps,
    checkpoint every `checkpoint_every` steps and at the end (every rank saves its shards).
"""

from __future__ import annotations

import math
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from raysys.config import RaysysConfig
from raysys.data.pipeline import Pipeline, iter_hetero_batches
from raysys.data.quarantine import QuarantineLog
from raysys.errors import UserError
from raysys.models.multimodal import ModelInputs, MultiViewModel
from raysys.objectives.multiview import Negatives
from raysys.objectives.negatives.queue import EmbeddingQueue, MomentumEncoder
from raysys.objectives.objective import ContrastiveObjective
from raysys.train import checkpoint as ckpt
from raysys.train.callbacks import payload
from raysys.train.deepspeed_setup import initialize
from raysys.train.intrain_eval import InTrainingEval
from raysys.train.metrics import MetricsLog, peak_memory_mib, say
from raysys.train.module import (
    TrainModule,
    cast_batch,
    encode_in_sub_batches,
    make_step,
    micro_steps_per_batch,
)


class NonFiniteLoss(RuntimeError):
    """A step's loss was NaN/inf and `train.nonfinite` says stop (or too many were skipped)."""


def model_inputs(cfg: RaysysConfig, pipe: Pipeline) -> ModelInputs:
    stats = pipe.stats
    cards = tuple(len(stats.vocab(c)) + 1 for c in stats.categorical_columns) if stats else ()
    num = len(stats.numeric_columns) if stats else 0
    return ModelInputs.from_data(cfg.data, num, cards)


def signature(cfg: RaysysConfig, inputs: ModelInputs) -> dict[str, Any]:
    """What a checkpoint must match to be loadable, keyed like the config so that a difference
    reads `model.embed_dim: checkpoint 32, now 16`: the shape-defining model config, the data
    facts the model is built from, the objective's parameters and queue, and the ZeRO layout
    (stage; for stages 1-3 also the number of ranks the state is partitioned over)."""
    from dataclasses import asdict

    train: dict[str, Any] = {"zero_stage": cfg.train.zero_stage}
    if cfg.train.zero_stage >= 1:
        train["num_workers"] = cfg.train.num_workers
    neg = cfg.objective.negatives
    return {"model": cfg.model.model_dump(mode="json"),
            "inputs": {k: list(v) if isinstance(v, tuple) else v
                       for k, v in asdict(inputs).items()},
            "objective": {"cola": cfg.objective.cola,
                          "learnable_temperature": cfg.objective.learnable_temperature,
                          "negatives": {"queue_size": neg.queue_size,
                                        "momentum": neg.momentum is not None}},
            "train": train}


@dataclass
class StepStats:
    """Timing and counters between two log points."""

    wait_s: float = 0.0
    busy_s: float = 0.0
    samples: int = 0
    skipped: int = 0
    terms: dict[str, list[float]] = field(default_factory=dict)

    def add_terms(self, out: dict[str, torch.Tensor]) -> None:
        for name, value in out.items():
            self.terms.setdefault(name, []).append(float(value.detach().float()))


def _all_finite(loss: torch.Tensor) -> bool:
    ok = torch.tensor([1.0 if torch.isfinite(loss).item() else 0.0])
    if dist.is_initialized():
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item() > 0)


def nonfinite_culprits(out: dict[str, torch.Tensor], embeddings: dict[str, torch.Tensor],
                       keys: list[str]) -> tuple[list[str], list[str]]:
    """(terms non-finite on any rank, this rank's entities with a non-finite embedding).

    Every rank calls it on the skip path (all take it together), so the all-reduce is
    balanced and every rank names the same terms."""
    names = sorted(out)
    flags = torch.tensor([0.0 if bool(torch.isfinite(out[k]).all()) else 1.0 for k in names])
    if dist.is_initialized():
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    terms = [k for k, f in zip(names, flags.tolist(), strict=True) if f > 0]
    bad = torch.zeros(len(keys), dtype=torch.bool)
    for emb in embeddings.values():
        bad |= ~torch.isfinite(emb.detach().float()).reshape(len(keys), -1).all(dim=1).cpu()
    return terms, [k for k, b in zip(keys, bad.tolist(), strict=True) if b]


def reapply_schedule(scheduler: Any, lr: float) -> None:
    """After a restore: set the LR of the restored step from the *current* schedule.

    The restored optimizer holds the LR the saving run computed for its next step; if the
    resubmitted run changed `train.steps`/`lr`/`warmup_steps`, the rest of the run follows the
    new schedule from the restored position (an unchanged config gives the same LR)."""
    scheduler.base_lrs = [lr for _ in scheduler.base_lrs]
    for group, base, fn in zip(scheduler.optimizer.param_groups, scheduler.base_lrs,
                               scheduler.lr_lambdas, strict=True):
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]


def update_key_encoder(key_encoder: MomentumEncoder, online: torch.nn.Module, m: float,
                       zero_stage: int) -> None:
    """EMA update of the momentum encoder; under ZeRO-3 the online parameters are gathered
    (read-only, every rank) for the update and re-partitioned afterwards."""
    if zero_stage < 3:
        key_encoder.update(online, m)
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(online.parameters()), modifier_rank=None):
        key_encoder.update(online, m)


class Trainer:
    """State and steps of one rank. `run()` is the whole per-worker function."""

    def __init__(self, cfg: RaysysConfig, pipe: Pipeline, rank: int, world: int) -> None:
        self.cfg, self.pipe, self.rank, self.world = cfg, pipe, rank, world
        self.t = cfg.train
        self.micro = cfg.data.batch_size
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.inputs = model_inputs(cfg, pipe)
        model = MultiViewModel(cfg.model, self.inputs)
        neg = cfg.objective.negatives
        # Copied before DeepSpeed wraps the model: under ZeRO-3 its parameters are partitioned
        # afterwards (a copy then would hold empty shards).
        self.key_encoder = MomentumEncoder(model) if neg.momentum is not None else None
        objective = ContrastiveObjective(cfg.objective, cfg.model.embed_dim)
        self.module = TrainModule(model, objective)
        self.engine, self.optimizer, self.scheduler = initialize(
            self.module, self.t, self.micro, world, micro_steps_per_batch(neg, self.micro)
        )
        self.stepper = make_step(self.engine, neg, self.t.grad_accum)  # plain or grad caching
        self.device = self.engine.device
        self.dtype = torch.bfloat16 if self.t.precision == "bf16" else torch.float32
        if self.key_encoder is not None:
            self.key_encoder.to(self.device, self.dtype)
        self.queue = (EmbeddingQueue(neg.queue_size, cfg.model.embed_dim).to(self.device)
                      if neg.queue_size else None)
        self.step = 0
        self.quarantine = QuarantineLog()
        self.restored_bad = (0, 0)  # (bad, attempted) records counted before the resume
        self.resumed_from = 0  # step of the checkpoint this worker group started from
        self.group = uuid.uuid4().hex  # this worker group's id in its reports

    # -- checkpoints ---------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        bad, attempted = self.bad_counts()
        state: dict[str, Any] = {"quarantine_bad": bad, "quarantine_attempted": attempted}
        if self.queue is not None:
            state["queue"] = self.queue.state_dict()
        if self.key_encoder is not None:
            state["key_encoder"] = self.key_encoder.state_dict()
        return state

    def restore(self, directory: Path) -> None:
        self.step, state = ckpt.load(directory, engine=self.engine, rank=self.rank,
                                     signature=signature(self.cfg, self.inputs))
        if self.queue is not None and "queue" in state:
            self.queue.load_state_dict(state["queue"])
        if self.key_encoder is not None and "key_encoder" in state:
            self.key_encoder.load_state_dict(state["key_encoder"])
        self.restored_bad = (int(state.get("quarantine_bad", 0)),
                             int(state.get("quarantine_attempted", 0)))
        reapply_schedule(self.scheduler, self.t.lr)
        self.resumed_from = self.step

    def bad_counts(self) -> tuple[int, int]:
        """(bad, attempted) records of this rank since the run began (resumes included)."""
        return (self.restored_bad[0] + self.quarantine.total_bad,
                self.restored_bad[1] + self.quarantine.total_attempted)

    def save_and_report(self, metrics: dict[str, Any]) -> None:
        import ray.train

        meta = None
        if self.rank == 0:
            meta = {"signature": signature(self.cfg, self.inputs),
                    "config": self.cfg.model_dump(mode="json"),
                    "position": self.step * self.global_batch}
        with tempfile.TemporaryDirectory(prefix="raysys-ckpt-") as tmp:
            ckpt.save(Path(tmp), engine=self.engine, step=self.step, rank=self.rank,
                      extra_state=self.extra_state(), meta=meta)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=ckpt.tag_of(self.step))

    # -- data ----------------------------------------------------------------------------------

    @property
    def global_batch(self) -> int:
        return self.micro * self.world * self.t.grad_accum

    def batches(self):
        start, stop = self.step * self.global_batch, self.t.steps * self.global_batch
        n_train = len(self.pipe.train_entities)
        if n_train == 0:
            raise ValueError("the archive has no training entities (data.eval_fraction too high?)")
        epochs = math.ceil(stop / n_train)
        ds = self.pipe.dataset("train", epochs=epochs, start=start, stop=stop,
                               shard=(self.rank, self.world, self.micro))
        return iter(iter_hetero_batches(ds, self.micro, quarantine=self.quarantine,
                                        max_bad_fraction=self.cfg.data.max_bad_fraction,
                                        drop_last=True,
                                        prefetch_batches=self.cfg.data.prefetch_batches))

    # -- one step ------------------------------------------------------------------------------

    def negatives(self) -> Negatives | None:
        if self.queue is None or len(self.queue) == 0:
            return None
        return Negatives(keys=self.queue.negatives(), ids=self.queue.negative_ids())

    @torch.no_grad()
    def enqueue(self, batch, encoded) -> None:
        if self.queue is None:
            return
        if self.key_encoder is not None:
            encoded = encode_in_sub_batches(self.key_encoder, batch,
                                            self.cfg.objective.negatives.grad_cache_sub_batch)
        emb = encoded.embeddings["invariant"].float()
        present = encoded.present
        ids = encoded.entity_id.unsqueeze(1).expand_as(present)
        self.queue.enqueue(emb[present], ids[present])

    def micro_step(self, batch, stats: StepStats) -> bool:
        """Forward, backward and (at the accumulation boundary) the optimizer step of one
        micro-batch. Returns False when a non-finite loss made it skip the step."""
        batch = cast_batch(batch, self.dtype, self.device)
        out, encoded = self.stepper.forward(batch, self.negatives())
        if not _all_finite(out["loss"]):  # every rank takes the same branch (all-reduced)
            self.skip_nonfinite(out, stats, encoded.embeddings, batch.keys)
            return False
        self.stepper.backward(out)
        self.module.model.update_centre(encoded)  # running embedding means (model.centre_*)
        stats.add_terms(out)
        self.enqueue(batch, encoded)
        return True

    def skip_nonfinite(self, out: dict[str, torch.Tensor], stats: StepStats,
                       embeddings: dict[str, torch.Tensor], keys: list[str]) -> None:
        """`train.nonfinite=stop`: raise. `skip` (grad_accum=1, enforced by preflight): no
        backward and no optimizer step, so weights and optimizer state stay untouched and no
        NaN reaches them; the LR schedule still advances so it stays aligned with the step.
        The message names the non-finite terms (of any rank) and this rank's entities whose
        embeddings are non-finite (every rank with such entities prints its own)."""
        bad, culprits = nonfinite_culprits(out, embeddings, keys)
        message = f"step {self.step + 1}: non-finite loss (terms: {', '.join(bad)})"
        shown = ", ".join(culprits[:8]) + (f" and {len(culprits) - 8} more"
                                           if len(culprits) > 8 else "")
        message += (f"; rank {self.rank}: non-finite embeddings of entities {shown}"
                    if culprits else f"; rank {self.rank}: every entity's embeddings finite")
        if self.t.nonfinite == "stop":
            raise NonFiniteLoss(message + "; train.nonfinite=stop")
        stats.skipped += 1
        if stats.skipped > self.t.max_skipped_steps:
            raise NonFiniteLoss(f"{message}; more than train.max_skipped_steps="
                                f"{self.t.max_skipped_steps} steps skipped")
        if self.rank == 0 or culprits:
            say(f"{message}: step skipped")
        stats.add_terms({k: v for k, v in out.items() if torch.isfinite(v).all()})
        self.scheduler.step()

    def optimizer_step(self, it, stats: StepStats) -> None:
        for _ in range(self.t.grad_accum):
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            self.micro_step(batch, stats)
            stats.wait_s += t1 - t0
            stats.busy_s += time.perf_counter() - t1
            stats.samples += batch.size * self.world
        if self.key_encoder is not None:
            update_key_encoder(self.key_encoder, self.module.model,
                               self.cfg.objective.negatives.momentum, self.t.zero_stage)
        if self.module.objective.temperature.learnable:
            with torch.no_grad():
                self.module.objective.temperature.clamp_()
        self.step += 1

    def metrics(self, stats: StepStats) -> dict[str, Any]:
        total = stats.wait_s + stats.busy_s
        bad = torch.tensor(self.bad_counts(), dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(bad)
        m: dict[str, Any] = {k: sum(v) / len(v) for k, v in stats.terms.items() if v}
        m.update({
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": stats.samples / max(total, 1e-9),
            "data_wait_fraction": stats.wait_s / max(total, 1e-9),
            "pool_keys": m.pop("pool/keys", float("nan")),
            "queue_size": len(self.queue) if self.queue is not None else 0,
            "peak_memory_mib": peak_memory_mib(self.device),
            "skipped_micro_batches": stats.skipped,
            "resumed_from": self.resumed_from,
            "bad_records": int(bad[0]),
            "bad_fraction": float(bad[0] / max(bad[1], 1)),
        })
        return m

    def run(self) -> None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                self.restore(Path(d))
        log = MetricsLog(self.cfg.out, total_steps=self.t.steps, resume_step=self.step,
                         tensorboard=self.t.tensorboard, enabled=self.rank == 0,
                         write=False)  # the controller writes the files (train.callbacks)
        if self.rank == 0:
            resumed = f"resumed at step {self.step}" if self.step else "starting"
            say(f"{resumed}: {self.world} workers x {self.micro} entities x "
                f"{self.t.grad_accum} accumulation = {self.global_batch} per step")
        it, stats, record = self.batches(), StepStats(), {"step": self.step}
        evaluator = InTrainingEval(self, log)  # eval.every: off the critical path (Ray actor)
        evaluator.after_step(self.step)  # the start: the random-init (or resumed) point
        while self.step < self.t.steps:
            self.optimizer_step(it, stats)
            evaluator.after_step(self.step)
            last = self.step == self.t.steps
            save = last or self.step % self.t.checkpoint_every == 0
            if save or self.step % self.t.log_every == 0:
                record = self.sent(log.log(self.step, self.metrics(stats)), log)
                stats = StepStats(skipped=stats.skipped)
                record = {**evaluator.latest, **record}  # the latest evaluation reaches Tune
                if save:
                    self.save_and_report(record)
                else:
                    ray.train.report(record)
        evaluator.finish()  # rank 0 waits for outstanding evaluations
        if evaluator.every:  # every rank: the evaluations that finished after the last step
            # (rank 0's records for metrics.jsonl; the latest evaluation reaches Tune)
            final = {**record, **evaluator.latest, "resumed_from": self.resumed_from}
            ray.train.report(self.sent(final, log))
        log.close()

    def sent(self, record: dict[str, Any], log: MetricsLog) -> dict[str, Any]:
        """What this rank reports; rank 0 adds its evaluation records and its group's id,
        which the controller needs to write metrics.jsonl (raysys.train.callbacks)."""
        return payload(record, self.group, log.take_outbox()) if self.rank == 0 else record


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker entry point: `config = {"cfg": dict, "pipeline": Pipeline}`."""
    import ray.train

    from raysys.data.pacing import pace_ray_data
    from raysys.runtime import quiet_worker_logs

    quiet_worker_logs()
    ctx = ray.train.get_context()
    cfg = RaysysConfig.model_validate(config["cfg"])
    pace_ray_data(cfg.data.executor_pause_ms)  # this worker's shard runs its executor here
    try:
        Trainer(cfg, config["pipeline"], ctx.get_world_rank(), ctx.get_world_size()).run()
    except UserError:  # e.g. TooManyBadRecords: one message on the driver, no traceback
        from raysys.train.callbacks import hide_worker_traceback

        hide_worker_traceback()
        raise
