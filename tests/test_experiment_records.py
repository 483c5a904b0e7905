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


def test_plan_says_which_seeds_a_regeneration_would_train_again(tmp_path):
    """results.py --plan: a record or run folder of other settings is named, not counted."""
    from argparse import Namespace

    import yaml
    from results import record_path, run_config, seed_states

    work, records = tmp_path / "work", tmp_path / "records"
    folder, archive = work / "music", work / "music" / "archive"
    args = Namespace(seeds=[0, 1, 2], config=None, records=records)
    for seed, steps in ((0, 400), (1, 300)):  # seed 0 as planned, seed 1 with other steps
        run = folder / f"run-seed{seed}"
        cfg, evaluation = run_config(archive, run, seed, None, [f"train.steps={steps}"], [])
        write_record(record_path(work, run, records), {
            "settings": learned_settings(cfg), "archive": "abc",
            "report": {"config": {"eval": evaluation}}, "train_seconds": 1.0,
            "eval_seconds": 1.0})
    trained = folder / "run-seed2"  # a run folder trained with other steps
    (trained / "model").mkdir(parents=True)
    (trained / "model" / "model.json").write_text("{}")
    cfg, _ = run_config(archive, trained, 2, None, ["train.steps=300"], [])
    (trained / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))

    done, kept, stale = seed_states(folder, work, args, archive, "abc", ["train.steps=400"], [])
    assert (done, kept) == ([], [0])
    assert stale == ["seed 1's record has other train.steps: trained again",
                     "seed 2's run folder has other train.steps: delete it (a regeneration "
                     "stops at it)"]
