"""The entity plan: split, epoch order, relevance grouping, stream slicing (no Ray)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysys.data.archive import load_archive
from raysys.data.batch import entity_id_of
from raysys.data.plan import EntityTable, EpochPlan, grouped_order, is_eval


@pytest.fixture(scope="module")
def table(demo_archive) -> EntityTable:
    return EntityTable.build(load_archive(demo_archive), max_candidates=8, eval_fraction=0.2,
                             seed=0)


def test_split_is_stable_and_near_the_fraction() -> None:
    ids = np.random.default_rng(0).integers(0, 2**62, 20000)
    held = is_eval(ids, 0.2, seed=0)
    assert abs(held.mean() - 0.2) < 0.02
    np.testing.assert_array_equal(held, is_eval(ids, 0.2, seed=0))
    assert not np.array_equal(held, is_eval(ids, 0.2, seed=1))


def test_grouped_order_is_a_permutation_with_queries_next_to_candidates() -> None:
    rng = np.random.default_rng(1)
    n = 200
    candidates = [rng.choice(n, 8, replace=False) for _ in range(n)]
    order = grouped_order(candidates, 4, np.random.default_rng(2))
    assert sorted(order.tolist()) == list(range(n))
    # walk the groups: a query is followed by members of its own list
    position = {int(e): i for i, e in enumerate(order)}
    followers = sum(int(order[position[q] + 1]) in set(candidates[q].tolist())
                    for q in range(n) if position[q] + 1 < n)
    assert followers > 5 * n * 8 / n  # a random order would give ~8 (8 of n in each list)
    np.testing.assert_array_equal(order, grouped_order(candidates, 4, np.random.default_rng(2)))


def test_grouping_puts_candidates_in_the_batch(table) -> None:
    train = table.select("train")
    batch = 8

    def valid_lists(plan: EpochPlan) -> float:
        order = plan.order(0)
        ids = train.frame["entity_id"].to_numpy()
        rel, mask = train.relevance["relevance_entity_id"], train.relevance["relevance_mask"]
        found = []
        for b in range(0, len(order) - batch + 1, batch):
            rows = order[b : b + batch]
            in_batch = set(ids[rows].tolist())
            found += [sum(int(e) in in_batch for e in rel[r][mask[r]]) >= 2 for r in rows]
        return float(np.mean(found))

    grouped = valid_lists(EpochPlan(train, 1, seed=0, group=4))
    plain = valid_lists(EpochPlan(train, 1, seed=0, group=0))
    assert grouped > plain


def test_rows_slice_the_stream_exactly(table) -> None:
    plan = EpochPlan(table, epochs=3, seed=5, group=3)
    full = plan.rows()
    assert len(full) == 3 * len(table)
    np.testing.assert_array_equal(full["position"], np.arange(len(full)))
    part = plan.rows(start=len(table) - 2, stop=len(table) + 5)
    assert part["key"].tolist() == full["key"].iloc[len(table) - 2 : len(table) + 5].tolist()
    assert part["epoch"].tolist() == [0, 0, 1, 1, 1, 1, 1]
    for epoch in range(3):
        assert sorted(full[full["epoch"] == epoch]["key"]) == sorted(table.frame["key"])


def _full_table(n: int) -> EntityTable:
    """n synthetic entities of the train split, each with every modality."""
    keys = [f"e{i}" for i in range(n)]
    frame = pd.DataFrame({"key": keys, "entity_id": [entity_id_of(k) for k in keys],
                          "audio": [f"audio/{k}.wav" for k in keys],
                          "image": [f"image/{k}.png" for k in keys],
                          "has_logs": True, "split": "train"})
    return EntityTable(frame, {"relevance": np.zeros((n, 4), np.float32)})


MODALITIES = ["audio", "image", "tabular"]


def test_withheld_views_are_the_share_asked_per_modality_and_independent() -> None:
    table = _full_table(6000)
    seen = table.for_training(MODALITIES, withhold=0.3, incomplete="mask", seed=0)
    hidden = np.stack([~seen.present(m) for m in MODALITIES])
    assert len(seen) == len(table) and np.abs(hidden.mean(axis=1) - 0.3).max() < 0.02
    assert abs(hidden.all(axis=0).mean() - 0.3 ** 3) < 0.01  # drawn per modality
    again = table.for_training(MODALITIES, withhold=0.3, incomplete="mask", seed=0)
    pd.testing.assert_frame_equal(seen.frame, again.frame)
    other = table.for_training(MODALITIES, withhold=0.3, incomplete="mask", seed=1)
    assert not other.frame.equals(seen.frame)
    assert table.present("audio").all()  # the table itself is untouched
    audio_only = table.for_training(["audio"], withhold=0.3, incomplete="mask", seed=0)
    assert audio_only.present("image").all() and audio_only.present("tabular").all()


def test_dropping_incomplete_entities_keeps_the_complete_ones_and_their_lists() -> None:
    table = _full_table(3000)
    table.frame.loc[::10, "image"] = None  # the archive's own missing views
    kept = table.for_training(MODALITIES, withhold=0.2, incomplete="drop", seed=0)
    assert all(kept.present(m).all() for m in MODALITIES)
    assert abs(len(kept) / len(table) - 0.9 * 0.8 ** 3) < 0.03
    assert len(kept.relevance["relevance"]) == len(kept)
    assert len(table.for_training(MODALITIES, withhold=0.0, incomplete="mask", seed=0)) == 3000
    assert len(table.for_training(MODALITIES, withhold=0.0, incomplete="drop", seed=0)) == 2700


def test_training_sees_withheld_views_and_evaluation_every_view(demo_archive) -> None:
    from raysys.data.config import DataConfig
    from raysys.data.pipeline import open_archive
    from raysys.data.rows import RowBuilder

    cfg = DataConfig(clip_seconds=0.5, image_size=32, tabular_window=6, audio={"n_bins": 32},
                     withhold_views=0.5, eval_fraction=0.3)
    plain = open_archive(demo_archive, cfg.model_copy(update={"withhold_views": 0.0}))
    pipe = open_archive(demo_archive, cfg)
    pd.testing.assert_frame_equal(pipe.plan("eval", shuffle=False).rows(),
                                  plain.plan("eval", shuffle=False).rows())
    pd.testing.assert_frame_equal(pipe.entities.frame, plain.entities.frame)
    train = pipe.plan("train", shuffle=False).rows()
    before = plain.plan("train", shuffle=False).rows()
    assert (train["has_logs"] < before["has_logs"]).any()
    built = RowBuilder(pipe.cfg, pipe.stats, pipe.info.logs)(train)
    for modality in MODALITIES:
        np.testing.assert_array_equal(built[f"{modality}_present"] & ~pipe.train_entities
                                      .present(modality), False)
    assert not built["tabular_present"][~train["has_logs"].to_numpy(bool)].any()
    with pytest.raises(Exception, match="withhold_views"):
        DataConfig(withhold_views=1.0)
