"""experiments/records.py: a finished run's record stands for a run with the same settings,
read through today's config (a regeneration spans sessions in which options are added)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from records import learned_settings, mismatch, read_record, write_record  # noqa: E402

from raysys.config import load_config  # noqa: E402

OVERRIDES = ["train.steps=400", "data.audio.f_max=6000"]


def a_record(overrides: list[str]) -> dict:
    cfg = load_config(None, overrides)
    report = {"config": {"eval": cfg.eval.model_dump(mode="json")}}
    return {"settings": learned_settings(cfg), "archive": "abc", "report": report,
            "train_seconds": 1.0, "eval_seconds": 1.0}


def today() -> tuple[dict, dict]:
    cfg = load_config(None, OVERRIDES)
    return learned_settings(cfg), cfg.eval.model_dump(mode="json")


def test_record_round_trips_and_matches_its_own_settings(tmp_path):
    record = a_record(OVERRIDES)
    write_record(tmp_path / "seed0.json.gz", record)
    kept = read_record(tmp_path / "seed0.json.gz")
    assert kept == record
    assert mismatch(kept, *today(), "abc") == []
    assert mismatch(kept, *today(), "other") == ["the archive's contents"]


def test_option_added_since_the_record_reads_as_its_default():
    record = a_record(OVERRIDES)
    del record["settings"]["model.audio.periodicity"]  # as if the option came later
    del record["report"]["config"]["eval"]["few_shot_shots"]
    assert mismatch(record, *today(), "abc") == []
    del record["settings"]["data.audio.f_max"]  # absent, and today's run is not at the default
    assert mismatch(record, *today(), "abc") == ["data.audio.f_max"]


def test_changed_or_unreadable_settings_are_named():
    changed = a_record([*OVERRIDES[:1], "data.audio.f_max=5000"])
    assert mismatch(changed, *today(), "abc") == ["data.audio.f_max"]
    removed = a_record(OVERRIDES)
    removed["settings"]["data.audio.gone"] = 1
    (why,) = mismatch(removed, *today(), "abc")
    assert why.startswith("settings today's config cannot read") and "data.audio.gone" in why
    other_eval = a_record(OVERRIDES)
    other_eval["report"]["config"]["eval"]["few_shot_shots"] = [3]
    assert mismatch(other_eval, *today(), "abc") == ["evaluation (few_shot_shots)"]
