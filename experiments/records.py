"""Finished runs kept with the code: experiments/records/<corpus>/<run folder>/seedN.json.gz.

A record holds what results.py reads of a run (its `raysys evaluate` report, whose config holds
the eval settings, and its training and evaluation times) with what the run learned from (its
resolved config without places and names: learned_settings) and a fingerprint of its
archive. Work folders live on one machine and are lost with it; records travel with the
code, so a regeneration that takes longer than one sitting, or one machine, still adds up: a
run whose record matches (same settings, same evaluation, same archive) is not trained again.
A record that no longer matches (the recipe or the corpus changed) is reported and replaced;
a record is read through today's config first, so an option added since (at its default) or
retired (at its old default) does not undo a regeneration spread over sessions.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

RECORDS = Path(__file__).resolve().parent / "records"
PLACES = ("archive", "out", "train.run_name", "train.tensorboard")  # where a run is, what it
# is called, whether it logs for TensorBoard: none changes what it learns
TABLES = ("manifest.parquet", "logs.parquet", "relevance.parquet")
AUDIO = (".wav", ".flac", ".mp3", ".ogg")
REQUIRED = {"settings", "archive", "report", "train_seconds", "eval_seconds"}


def record_path(work: Path, run: Path, root: Path = RECORDS) -> Path:
    """WORK/music/loev-LOEV++/run-seed0 -> records/music/loev-LOEV++/seed0.json.gz."""
    folder = run.parent.relative_to(work)
    return root / folder / f"{run.name.removeprefix('run-')}.json.gz"


def archive_fingerprint(archive: Path) -> str:
    """sha256 over the archive's tables (their rows, not their bytes: parquet writers differ
    by version) and its audio files' bytes. Images are left out: the corpora draw them from
    what the tables hold (music's piano roll from the note log), and image encoders' bytes
    differ by library version."""
    import pyarrow.parquet as pq

    digest = hashlib.sha256()
    for name in TABLES:
        if (archive / name).exists():
            rows = pq.read_table(archive / name).to_pylist()
            digest.update(name.encode() + json.dumps(rows, sort_keys=True, default=str).encode())
    for path in sorted(p for p in archive.rglob("*") if p.suffix.lower() in AUDIO):
        digest.update(str(path.relative_to(archive)).encode() + path.read_bytes())
    return digest.hexdigest()


def read_record(path: Path) -> dict[str, Any] | None:
    """The record, or None when there is none or it cannot be read (said, then replaced)."""
    if not path.exists():
        return None
    try:
        with gzip.open(path, "rt") as f:
            record = json.load(f)
        if not isinstance(record, dict) or not record.keys() >= REQUIRED:
            raise ValueError(f"not a record: it needs {sorted(REQUIRED)}")
    except (OSError, EOFError, ValueError) as error:
        print(f"[results] {path}: unreadable record ({error}); the run is trained again",
              flush=True)
        return None
    return record


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Written whole or not at all (a stopped write leaves no record that looks complete);
    gzip without a timestamp, so the same record gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record).encode()  # key order kept: the page reads the first label set
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                filename="") as f:
        f.write(text)
    part.replace(path)


def learned_settings(cfg: Any) -> dict[str, Any]:
    """A run's config (a RaysysConfig) as dotted keys, without PLACES: what it learns from."""
    def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(tree, dict):
            return {prefix[:-1]: tree}
        return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()}

    return {k: v for k, v in flat(cfg.model_dump(mode="json")).items() if k not in PLACES}


def nested(settings: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys back into a config tree: {"a.b": 1} -> {"a": {"b": 1}}."""
    tree: dict[str, Any] = {}
    for key, value in settings.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def as_today(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """The record's (settings, eval section) as today's config reads them: options added
    since the record take their defaults (what the run did before they existed), retired
    ones at their old default drop out (raysys.config.RETIRED); a str says why today's
    config cannot read them (an option removed, a value no longer allowed)."""
    from raysys.config import ConfigError, build_config

    tree = nested(record["settings"])
    try:
        settings = learned_settings(build_config(tree))
        evaluation = build_config({**tree, "eval": record["report"]["config"]["eval"]}).eval
    except ConfigError as error:
        return f"settings today's config cannot read ({' '.join(str(error).split())})"
    return settings, evaluation.model_dump(mode="json")


def changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted config keys whose values differ, except settings the new run leaves `auto`
    (resolved to a machine's CPUs when a run starts)."""
    return sorted(k for k in old.keys() | new.keys()
                  if new.get(k) != "auto" and old.get(k) != new.get(k))


def mismatch(record: dict[str, Any], settings: dict[str, Any], evaluation: dict[str, Any],
             fingerprint: str) -> list[str]:
    """Why the record does not stand for this run: the settings that differ, other eval
    settings (`evaluation`: the whole eval section `raysys evaluate` would use now) or another
    archive; [] when it does."""
    today = as_today(record)
    if isinstance(today, str):
        return [today]
    was_settings, was = today
    why = changed(was_settings, settings)
    if was != evaluation:
        why.append("evaluation (" + ", ".join(changed(was, evaluation)) + ")")
    if record["archive"] != fingerprint:
        why.append("the archive's contents")
    return why
