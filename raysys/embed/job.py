"""The embedding job: plan -> Ray Data stream (preprocess tasks -> actor pool) -> shards.

    read plan rows -> map_batches(preprocess, tasks) -> map_batches(Embedder, actor pool)
        -> driver: ShardCollector writes each shard whole -> _quarantine.parquet -> _SUCCESS

Resume: `_job.json` fingerprints the job (model, output settings, archive keys, shard size);
a rerun with the same fingerprint skips every shard already present and finishes the rest, so
after any crash (driver or worker) the final output holds every (key, view) exactly once.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import pyarrow as pa

from raysys.data.archive import bad_records_table
from raysys.data.fs import read_parquet
from raysys.data.pipeline import dataset_of_frames
from raysys.embed import store
from raysys.embed.config import EmbedConfig, EmbedError, EmbedIncomplete
from raysys.embed.embedder import EMBEDDED, Embedder
from raysys.embed.plan import JobPlan, plan_job
from raysys.embed.preprocess import Preprocessor
from raysys.embed.writer import ShardCollector


@dataclass
class Progress:
    """Prints `embed: shards a/b | entities c/d | r rows/s | ETA` every `every_s` seconds."""

    shards: int
    entities: int
    every_s: float
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    start: float = 0.0  # set by the first batch
    last: float = 0.0

    def eta(self, done: int, elapsed: float) -> str:
        if done == 0:
            return "?"
        left = int(elapsed / done * (self.entities - done))
        return f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"

    def update(self, c: ShardCollector, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.start:  # the first batch: the rate leaves out cluster/actor start-up
            self.start = self.last = now
        if not force and now - self.last < self.every_s:
            return
        self.last, elapsed = now, now - self.start
        seen = c.entities_done + sum(len(v) for v in c.done.values())
        rows = c.rows_written + sum(len(v) for v in c.rows.values())
        rate = f" | {rows / elapsed:.1f} rows/s" if elapsed > 0.5 else ""  # none yet: not "-"
        print(f"embed: shards {len(c.written)}/{self.shards} | entities {seen}/{self.entities}"
              f"{rate} | ETA {self.eta(seen, elapsed)}", file=self.stream, flush=True)


def _preprocess(plan: Any, *, pre: Preprocessor) -> dict:
    return pre(plan)


def check_fingerprint(out: str, fingerprint: dict) -> None:
    """Write `_job.json`, or check that the existing one describes the same job."""
    existing = store.read_json(store.uri(out, store.JOB_FILE))
    if existing is None:
        store.write_json(store.uri(out, store.JOB_FILE), fingerprint)
        return
    differ = sorted(k for k in fingerprint.keys() | existing.keys()
                    if fingerprint.get(k) != existing.get(k))
    if differ:
        raise EmbedError(f"--output {out} holds another job's embeddings ({', '.join(differ)} "
                         "differ); use a new --output, or delete the old one to start over")


def actor_gpus(requested: float | None, cluster_gpus: float, actors: int) -> tuple[float, str]:
    """GPUs per inference actor (`embed.gpus_per_actor`; None = 1 when the cluster has GPUs
    now, else 0) and a line for the user saying where inference runs.

    An explicit request is kept even when the cluster has too few GPUs now: on an autoscaling
    cluster (cluster.yaml starts with no GPU workers) GPU nodes join when actors ask for them,
    which the default cannot know, so it falls back to the CPU and says so."""
    if requested is None:
        gpus = 1.0 if cluster_gpus > 0 else 0.0
        if not gpus:
            return 0.0, ("embed: inference on CPU (no GPU in the cluster now; set "
                         "embed.gpus_per_actor to wait for GPU nodes of an autoscaling cluster)")
    else:
        gpus = float(requested)
    if not gpus:
        return 0.0, "embed: inference on CPU (embed.gpus_per_actor=0)"
    line = f"embed: inference on GPU ({gpus:g} per actor, {actors} actor(s))"
    if gpus * actors > cluster_gpus:
        line += (f"; the cluster has {cluster_gpus:g} GPU(s) now: actors beyond that wait "
                 "for GPU nodes to join")
    return gpus, line


def build_dataset(plan: JobPlan, cfg: EmbedConfig, pending: list[int], gpus: float):
    """The Ray Data stream of the pending shards (`gpus` per inference actor)."""
    import ray

    frame = plan.entities[plan.entities["shard"].isin(pending)]
    step = cfg.rows_per_task
    ds = dataset_of_frames([frame.iloc[i : i + step] for i in range(0, len(frame), step)])
    logs = ray.put(plan.info.logs) if "tabular" in plan.views else None
    pre = Preprocessor(plan.export.data_config(plan.views), plan.export.meta["tabular_stats"],
                       logs, cfg.audio)
    tasks = ray.data.TaskPoolStrategy(size=cfg.decode_concurrency)
    ds = ds.map_batches(_preprocess, batch_format="pandas", batch_size=None,
                        fn_kwargs={"pre": pre}, num_cpus=cfg.decode_cpus, compute=tasks)
    return ds.map_batches(
        Embedder, batch_size=cfg.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.actors),
        num_cpus=cfg.cpus_per_actor, num_gpus=gpus or None,
        fn_constructor_kwargs={
            "model_ref": ray.put(plan.export.model_bytes), "meta": plan.export.meta,
            "views": plan.views, "head": cfg.head, "normalize": cfg.normalize,
            "windows": cfg.audio, "use_gpu": gpus > 0,
            "torch_threads": max(1, int(cfg.cpus_per_actor)),
        },
    )


def check_resources(cfg: EmbedConfig, cluster: Any) -> None:
    """EmbedError when the inference actors (held for the whole stream) leave no room for one
    preprocessing task: Ray would wait forever. `cluster`: raysys.train.resources.Cluster."""
    held = cfg.actors * cfg.cpus_per_actor
    need, cpus = held + cfg.decode_cpus, cluster.cpu_capacity
    if need > cpus + 1e-9:
        per_actor = max(round((cpus / 2) / cfg.actors, 3), 0.05)
        raise EmbedError(
            f"the embedding needs {need:g} CPUs but the cluster has {cpus:g}: actors "
            f"({cfg.actors}) x cpus_per_actor ({cfg.cpus_per_actor:g}) are held for the whole "
            f"stream and at least one preprocessing task needs decode_cpus "
            f"({cfg.decode_cpus:g}) beside them; this would fit: cpus_per_actor={per_actor:g} "
            f"decode_cpus={min(1.0, round(cpus / 2, 3)):g}")


def stream(plan: JobPlan, out: str, cfg: EmbedConfig, pending: list[int],
           address: str | None) -> ShardCollector:
    """Run the Ray Data stream over the pending shards, writing each one as it completes."""
    from raysys.runtime import init_ray
    from raysys.train.resources import Cluster

    ray = init_ray(address)
    check_resources(cfg, Cluster.current())
    gpus, where = actor_gpus(cfg.gpus_per_actor, ray.cluster_resources().get("GPU", 0.0),
                             cfg.actors)
    print(where, file=sys.stderr, flush=True)
    sizes = plan.shard_sizes()
    collector = ShardCollector(out, {s: sizes[s] for s in pending}, {
        "dim": plan.dim, "dtype": cfg.dtype,
        "model_id": plan.model_id, "config_hash": plan.config_hash,
        "keep_windows": cfg.audio.keep_windows})
    progress = Progress(len(pending), sum(sizes[s] for s in pending), cfg.progress_every_s)
    first_rows = None
    for batch in build_dataset(plan, cfg, pending, gpus).iter_batches(batch_size=None,
                                                                batch_format="numpy"):
        collector.add(batch)
        progress.update(collector)
        if first_rows is None:  # steady-state rate: rows after the first batch
            first_rows = int((batch["kind"] == EMBEDDED).sum())
    collector.first_batch_rows = first_rows or 0
    progress.update(collector, force=True)
    collector.stream_seconds = time.perf_counter() - progress.start if progress.start else 0.0
    missing = sorted(set(pending) - set(collector.written))
    if missing:
        raise EmbedIncomplete(f"stream ended with shards {missing[:10]} incomplete; rerun to "
                              "finish")
    return collector


def finalize(plan: JobPlan, out: str) -> dict[str, Any]:
    """Merge the quarantine, then write the `_SUCCESS` manifest (last)."""
    shards = [{"file": store.shard_name(i),
               "rows": store.shard_rows(store.uri(out, store.shard_name(i))),
               "entities": n} for i, n in sorted(plan.shard_sizes().items())]
    parts = [read_parquet(store.uri(out, f"{store.QUARANTINE_DIR}/{store.shard_name(i)}"))
             for i in range(plan.num_shards)]
    archive_bad = bad_records_table(plan.archive_bad())
    quarantine = pa.concat_tables([archive_bad, *parts]) if parts else archive_bad
    store.write_table(store.uri(out, store.QUARANTINE_FILE), quarantine)
    manifest = {**plan.fingerprint, "archive": plan.info.root, "shards": shards,
                "rows": sum(s["rows"] for s in shards), "quarantined": quarantine.num_rows,
                "schema": ["key", "view", "embedding", "model_id", "config_hash"]}
    store.write_json(store.uri(out, store.SUCCESS_FILE), manifest)
    return manifest


def run_embed(checkpoint: str, archive: str, output: str, cfg: EmbedConfig | None = None, *,
              address: str | None = None) -> dict[str, Any]:
    """Embed an archive (resumable); returns the summary (embedded, skipped, quarantined)."""
    cfg = cfg or EmbedConfig()
    start = time.perf_counter()
    plan = plan_job(checkpoint, archive, cfg)  # every check before any work
    check_fingerprint(output, plan.fingerprint)
    done = [s for s in store.complete_shards(output) if s < plan.num_shards]
    pending = sorted(set(range(plan.num_shards)) - set(done))
    collector = stream(plan, output, cfg, pending, address) if pending else None
    manifest = finalize(plan, output)
    store.remove_stale_temporaries(output)
    written = collector.rows_written if collector else 0
    seconds = time.perf_counter() - start
    streamed = collector.stream_seconds if collector else 0.0
    return {"output": output, "model_id": plan.model_id, "config_hash": plan.config_hash,
            "views": plan.views, "shards": plan.num_shards, "shards_embedded": len(pending),
            "shards_skipped": len(done), "rows_embedded": written,
            "rows_skipped": manifest["rows"] - written,
            "quarantined": manifest["quarantined"],
            "quarantined_this_run": collector.quarantined if collector else 0,
            "seconds": round(seconds, 2), "stream_seconds": round(streamed, 2),
            **embed_rate(written, collector.first_batch_rows if collector else 0, streamed,
                         seconds)}


def embed_rate(written: int, first_batch_rows: int, streamed_s: float, seconds: float
               ) -> dict[str, Any]:
    """`rows_per_s` in the steady state (after the first batch, which carries the start-up),
    or over the whole run when every row came in the first batch (a small job); None when
    nothing was embedded. `rows_per_s_over` says which."""
    steady = written - first_batch_rows
    if steady > 0 and streamed_s > 0:
        return {"rows_per_s": round(steady / streamed_s, 2), "rows_per_s_over": "steady state"}
    if written > 0 and seconds > 0:
        return {"rows_per_s": round(written / seconds, 2),
                "rows_per_s_over": "whole run (one batch: no steady state)"}
    return {"rows_per_s": None, "rows_per_s_over": "nothing embedded"}
