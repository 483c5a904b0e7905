"""What a pretraining run asks of the cluster, checked against what the cluster has, before
the worker group is requested: a run that can never be scheduled fails at once, naming the
keys and what would fit, instead of waiting forever ("starting" and then nothing).

    fit = fit_resources(cfg, Cluster.current())   # resolves `auto`, raises ResourceMismatch

The run holds, for its whole length:
    train.num_workers x (train.cpus_per_worker CPUs [+ 1 GPU with train.use_gpu])
    + eval.cpus (the in-training evaluation actor, when eval.every > 0)
and needs on top, to make progress, at least one Ray Data decode task of data.decode_cpus.

`auto` (the default of train.cpus_per_worker and data.decode_cpus) splits the CPUs the cluster
has: each worker gets min(1, CPUs / (2 x workers)), a decode task min(1, what is left / 2), so
the defaults run on a 2-core machine (0.5 + 0.5 for the workers, 0.5 per decode task).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raysys.errors import UserError

AUTO = "auto"


class ResourceMismatch(RuntimeError, UserError):
    """The run asks for more than the cluster has (or can autoscale to); names the keys."""


@dataclass(frozen=True)
class Cluster:
    """CPUs and GPUs of the cluster now (total and per alive node) and, with an autoscaler,
    the most it can grow to (`max_cpus`/`max_gpus`, None without one)."""

    cpus: float
    gpus: float
    node_cpus: list[float] = field(default_factory=list)
    max_cpus: float | None = None
    max_gpus: float | None = None

    @classmethod
    def current(cls) -> Cluster:
        """The connected Ray cluster's alive nodes (and its autoscaler's limits)."""
        import ray

        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
        limits = _autoscaler_limits()
        return cls(cpus=float(total.get("CPU", 0)), gpus=float(total.get("GPU", 0)),
                   node_cpus=[float(n.get("CPU", 0)) for n in nodes],
                   max_cpus=None if limits is None else float(limits.get("CPU", 0)),
                   max_gpus=None if limits is None else float(limits.get("GPU", 0)))

    @property
    def cpu_capacity(self) -> float:
        return max(self.cpus, self.max_cpus or 0.0)

    @property
    def gpu_capacity(self) -> float:
        return max(self.gpus, self.max_gpus or 0.0)

    def describe(self) -> str:
        grow = ("" if self.max_cpus is None else
                f"; its autoscaler can grow it to {self.cpu_capacity:g} CPUs, "
                f"{self.gpu_capacity:g} GPUs")
        return f"{self.cpus:g} CPUs, {self.gpus:g} GPUs{grow}"


def _autoscaler_limits() -> dict[str, float] | None:
    """The most of each resource the cluster's autoscaler may provide (Ray's reading of the
    node types in cluster.yaml); None when there is no autoscaler (a local instance, a
    `ray start` by hand)."""
    try:
        from ray._private.state import state

        return state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - no autoscaler config stored: a fixed cluster
        return None


@dataclass(frozen=True)
class Fit:
    """The resolved numbers of a run that fits."""

    cpus_per_worker: float
    decode_cpus: float
    eval_cpus: float
    held_cpus: float  # by workers and the eval actor for the whole run

    def describe(self, workers: int) -> str:
        return (f"{workers} workers x {self.cpus_per_worker:g} CPU, decode tasks "
                f"{self.decode_cpus:g} CPU each, eval actor {self.eval_cpus:g} CPU")


def auto_cpus_per_worker(cluster_cpus: float, workers: int) -> float:
    return round(min(1.0, cluster_cpus / (2 * workers)), 3)


def auto_decode_cpus(cluster_cpus: float, held: float) -> float:
    return round(max(min(1.0, (cluster_cpus - held) / 2), 0.05), 3)


def _resolved(cfg: Any, cluster: Cluster) -> Fit:
    t = cfg.train
    cpw = t.cpus_per_worker
    if cpw == AUTO:
        cpw = auto_cpus_per_worker(cluster.cpu_capacity, t.num_workers)
    eval_cpus = cfg.eval.cpus if cfg.eval.every > 0 else 0.0
    held = t.num_workers * cpw + eval_cpus
    decode = cfg.data.decode_cpus
    if decode == AUTO:
        decode = auto_decode_cpus(cluster.cpu_capacity, held)
    return Fit(float(cpw), float(decode), float(eval_cpus), held)


def problems(cfg: Any, cluster: Cluster, fit: Fit) -> list[str]:
    """Every way the run cannot be scheduled on `cluster`, each naming the keys."""
    t, out = cfg.train, []
    gpus = cluster.gpu_capacity
    if t.use_gpu and gpus < t.num_workers:
        fix = ("set train.use_gpu=false (or add GPU workers to the cluster)" if gpus == 0
               else f"set train.num_workers<={int(gpus)}")
        out.append(f"train.use_gpu=true asks for {t.num_workers} GPUs (one per worker, "
                   f"train.num_workers={t.num_workers}) but the cluster has {gpus:g}; {fix}")
    biggest = max(cluster.node_cpus, default=cluster.cpus)
    if cluster.max_cpus is None and fit.cpus_per_worker > biggest:
        out.append(f"train.cpus_per_worker={fit.cpus_per_worker:g} exceeds the largest node "
                   f"({biggest:g} CPUs): a worker must fit on one node")
    need, cpus = fit.held_cpus + fit.decode_cpus, cluster.cpu_capacity
    if need > cpus + 1e-9:
        would = auto_cpus_per_worker(cpus, t.num_workers)
        out.append(
            f"the run needs {need:g} CPUs but the cluster has {cpus:g}: "
            f"train.num_workers ({t.num_workers}) x train.cpus_per_worker "
            f"({fit.cpus_per_worker:g}) + eval.cpus ({fit.eval_cpus:g}) are held for the whole "
            f"run, and at least one decode task needs data.decode_cpus ({fit.decode_cpus:g}) "
            f"beside them; this would fit: train.cpus_per_worker={would:g} "
            f"data.decode_cpus={auto_decode_cpus(cpus, t.num_workers * would + fit.eval_cpus):g}"
            " (or `auto` for both)")
    return out


def fit_resources(cfg: Any, cluster: Cluster) -> Fit:
    """Resolve `auto` against `cluster` and check the run can be scheduled; raises
    ResourceMismatch listing every problem."""
    fit = _resolved(cfg, cluster)
    found = problems(cfg, cluster, fit)
    if found:
        raise ResourceMismatch(
            f"this run cannot be scheduled on the cluster ({cluster.describe()}):\n  "
            + "\n  ".join(found))
    return fit
