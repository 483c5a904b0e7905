"""experiments/over_training.py: the in-training evaluation's records of several seeds as a
table over steps and the paired verdicts of claim 3 (over training) and goal 4."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from over_training import main  # noqa: E402


def write_run(folder: Path, ncc: list[float], logistic: list[float]) -> Path:
    """A run folder whose metrics.jsonl holds training records and evaluations at 0, 100, 200."""
    folder.mkdir()
    lines = []
    for i, step in enumerate((0, 100, 200)):
        lines.append({"step": step, "loss": 3.0 - i})
        lines.append({"step": step, "eval/label/ncc": ncc[i], "eval/label/logistic": logistic[i],
                      "eval/family/ncc": ncc[i] / 2, "eval/random/ncc": 0.05,
                      "eval/label/cdnv": 1.0 - ncc[i]})
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return folder


def test_claim_and_goal_4_verdicts_over_seeds(tmp_path, capsys):
    runs = [write_run(tmp_path / f"seed{s}", [0.4 + d, 0.7 + d, 0.8 + d], [0.6, 0.9 + d, 0.8])
            for s, d in enumerate((0.0, 0.01, 0.02))]
    assert main(["--runs", *map(str, runs), "--plot", str(tmp_path / "curves.png")]) == 0
    out = capsys.readouterr().out
    assert "| 100 | 0.710 ± 0.025 |" in out  # NCC at step 100: mean of 0.70, 0.71, 0.72
    assert "| label NCC rises: step 200 − 0 | better (+0.400 ± 0.000) |" in out
    assert "| label CDNV falls: step 200 − 0 | better (-0.400 ± 0.000) |" in out
    # the logistic probe peaks at step 100 on every seed and falls by 0.10-0.12: goal 4 fails
    assert "best earlier (step 100) | worse (-0.110 ± 0.025) |" in out
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_runs_without_in_training_evaluation_are_refused(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "metrics.jsonl").write_text(json.dumps({"step": 0, "loss": 1.0}) + "\n")
    with pytest.raises(SystemExit, match="no in-training evaluation .train with eval.every"):
        main(["--runs", str(plain), str(plain)])
