"""experiments/claims.py's claim section, read from the runs recorded in experiments/records/:
the verdict is the paired comparison of the favoured variant, and the findings that explain a
verdict are printed with it."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from claims import CLAIMS, claim_section  # noqa: E402
from records import RECORDS, read_record  # noqa: E402


def reports(run_folder: str) -> list[dict]:
    return [read_record(RECORDS / run_folder / f"seed{seed}.json.gz")["report"]
            for seed in (0, 1, 2)]


def one_shot(report: dict) -> float:
    return report["models"]["trained"]["spaces"]["audio"]["few_shot"]["label"]["by_k"]["1"][
        "mean"]


def test_channels_claim_on_music_records_gives_the_paired_verdict_and_its_findings():
    claim = CLAIMS["channels"]
    variants = {"3 channels": reports("music/claim-base"),
                "log-mel only": reports("music/channels-log-mel_only")}
    lines = claim_section(claim, {"music": variants}, {"music": ("label", "audio")}, "x.png")
    gains = [one_shot(a) - one_shot(b) for a, b in zip(*variants.values(), strict=True)]
    shown = next(line for line in lines if "1-shot: 3 channels − log-mel only" in line)
    assert f"{sum(gains) / 3:+.3f}" in shown
    # no seed gains from three channels: not reproduced, and the findings say what is known
    assert max(gains) <= 0 and "better" not in shown
    assert "| music | **claim** | not reproduced |" in lines
    assert f"- **music**: {claim.findings['music']}" in lines


def test_claim_without_findings_for_a_corpus_prints_no_explanation():
    claim = replace(CLAIMS["channels"], findings={
        corpus: text for corpus, text in CLAIMS["channels"].findings.items()
        if corpus != "music"})
    variants = {"3 channels": reports("music/claim-base"),
                "log-mel only": reports("music/channels-log-mel_only")}
    lines = claim_section(claim, {"music": variants}, {"music": ("label", "audio")}, "x.png")
    assert not any(line.startswith("Why, as far as measured") for line in lines)
