"""Ray Tune's OptunaSearch, fed only the reports that carry the sweep's metric.

A trial's reports before its first in-training evaluation has finished have no `eval/...`
value (the evaluation runs off the critical path). Ray's OptunaSearch indexes
`result[metric]` on every single-objective report, so the first such report would end the
whole sweep with a KeyError. This module imports Ray Tune and Optuna: import it lazily.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch


class EvaluatedOptunaSearch(OptunaSearch):
    """OptunaSearch that skips intermediate results without the metric (Optuna still gets
    every report that has it, and the final result of each trial)."""

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        if all(result.get(m) is not None for m in metrics):
            super().on_trial_result(trial_id, result)
