"""The entity plan: split, epoch order, relevance grouping, stream slicing (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from raysys.data.archive import load_archive
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
