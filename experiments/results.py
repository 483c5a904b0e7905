"""Regenerate docs/results.md: the measured recipe on every benchmark corpus, evaluated
against its random initialisation and the classic features (raysys evaluate's protocol), and
the papers' claims (experiments/claims.py).

    .venv/bin/python experiments/results.py [--work results-work] [--seeds 0 1 2]
        [--corpora music speech demo] [--claims relevance channels scoring missing loev]
        [--entities 600] [--config configs/recipe.yaml] [key=value ...]

For each corpus: build it (deterministic, seed 0; the music and speech builders install their
Debian packages when missing), then for each seed pretrain with `--config` (+ the corpus's
overrides, CORPUS_OVERRIDES: what configs/recipe.yaml says to add for such an archive; the
demo a shorter run) and run `raysys evaluate` over every entity (5-fold); then each claim's
variants, on the claim base (CLAIM_OVERRIDES: the recipe's short setting). The tables give,
per label set, the mean over seeds of the logistic-probe and nearest-centre accuracy with a
95% interval over seeds (t distribution; with one seed, the within-run binomial CI), for the
trained model, its random initialisation and the classic features, plus few-shot and
cross-modal retrieval. Runs and reports stay under --work; only docs/results.md (and its
plots) are written into the repository.

A finished run is reused, after checking that it learned from the same settings: from --work
(its export and an evaluation with the same options), or from its record in
experiments/records/ (records.py: its report, settings and archive fingerprint; written for
every finished run and meant to be committed, since work folders stay on one machine). A
regeneration can so be spread over several sittings and machines, each picking up where the
last stopped. Everything (3 corpora, 3 seeds, every claim: 81 runs) took 7.7 h of training and
evaluation on 2 CPU cores (session 27); `--plan` lists the runs a call needs and which of them
are done.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from claims import (
    CLAIMS,
    claim_plot,
    claim_section,
    depth_plot,
    depth_section,
    few_shot_plot,
    few_shot_section,
    variant_dir,
)
from label_budget import label_budget_plot, label_budget_section
from panels import panels, save
from records import (
    RECORDS,
    archive_fingerprint,
    changed,
    learned_settings,
    mismatch,
    read_record,
    record_path,
    write_record,
)
from seedstats import MODELS, get, over_seeds, paired_gain, seed_stats, verdict

ROOT = Path(__file__).resolve().parents[1]
# The recipe before sessions 31 and 32 (the milder microphone colouring of the config defaults
# then, and the recipe's temperature 0.1; docs/learning.md): kept where runs were measured with
# it and not retrained.
EARLIER_RECIPE = ["data.augment.audio.eq_p=0.8", "data.augment.audio.eq_tilt_db=[-3,3]",
                  "data.augment.audio.eq_peak_db=[-8,8]", "objective.temperature=0.1"]
CORPUS_OVERRIDES = {
    # audio only: with the cross head's cross_backprop=0 the image and log views do not
    # shape the audio encoder, and 3 modalities cost ~1.7x the time (docs/learning.md)
    "music": ["data.modalities=[audio]"],
    # the recipe's speech advice: an encoder that keeps frequency and pools every frame
    # layer's statistics, no pitch shift
    "speech": ["data.modalities=[audio]", "model.audio.kind=tdnn", "model.audio.aggregate=all",
               "data.augment.audio.pitch_shift_p=0"],
    # the synthetic demo (not evidence) keeps the earlier recipe: its 30 runs not retrained
    "demo": ["train.steps=200", *EARLIER_RECIPE],
}
# What every claim's runs add to the corpus's overrides: the recipe of session 17, where the
# claims were first measured (400 steps without neighbour positives, the earlier recipe's
# colouring and temperature). 2.5x cheaper than the headline's
# 1000 steps, and claim 2's measured setting. The demo's 200 steps stay.
SHORT = ["train.steps=400", "objective.neighbour_positives=0", *EARLIER_RECIPE]
CLAIM_OVERRIDES = {"music": SHORT, "speech": SHORT, "demo": []}
# `raysys evaluate` overrides for the headline runs: claim 4's third arm, the audio encoder
# trained from scratch on each few-shot episode's shots, 5 episodes per K (~1.5 min more per
# evaluation on 2 cores; the seed-level interval over 3 x 5 episodes is wide: raise it where
# there is time, e.g. on a GPU).
HEADLINE_EVALUATION = ["eval.supervised_episodes=5"]


def build(name: str, out: Path, entities: int) -> float:
    started = time.perf_counter()
    if (out / "manifest.parquet").exists():
        return 0.0
    if name == "demo":
        from raysys.data.demo import make_demo_archive

        make_demo_archive(str(out), entities=entities, seed=0)
    else:
        from raysys.corpora import make_corpus

        make_corpus(name, str(out), entities=entities, seed=0)
    return time.perf_counter() - started


def train_and_evaluate(archive: Path, fingerprint: str, run: Path, record: Path, seed: int,
                       config: str, overrides: list[str], evaluation: list[str]
                       ) -> tuple[dict[str, Any], float, float, bool]:
    """Pretrain into `run` unless it already holds an export or `record` (records.py) stands
    for it, then evaluate it with the `evaluation` overrides (eval.*) unless its eval.json
    already answers them, and record it; (report, training seconds, evaluation seconds,
    reused). A reused run keeps its own training time. `fingerprint`: the archive's
    (records.archive_fingerprint)."""
    from raysys.cli import start_or_join_ray
    from raysys.evaluate import evaluate_checkpoint
    from raysys.train.driver import pretrain

    cfg, eval_settings = run_config(archive, run, seed, config, overrides, evaluation)
    settings = learned_settings(cfg)
    reused = is_trained(run)
    kept = read_record(record)
    if kept is not None and not reused:
        why = mismatch(kept, settings, eval_settings, fingerprint)
        if not why:
            return kept["report"], kept["train_seconds"], kept["eval_seconds"], True
        print(f"[results] {record}: recorded with other {', '.join(why)}; training again",
              flush=True)
    if reused:
        differ = folder_mismatch(run, cfg)
        if differ:
            raise SystemExit(f"results.py: {run} was trained with other settings ({differ}); "
                             "delete it or choose another --work")
    else:
        start_or_join_ray()
        pretrain(cfg)
    trained = training_seconds(run)
    report = earlier_evaluation(run, eval_settings)
    if report is None:
        start_or_join_ray()
        report = evaluate_checkpoint(run, str(archive), run / "eval", overrides=evaluation).report
    write_record(record, {"settings": settings, "archive": fingerprint, "report": report,
                          "train_seconds": trained, "eval_seconds": float(report["seconds"])})
    return report, trained, float(report["seconds"]), reused


def run_config(archive: Path, run: Path, seed: int, config: str, overrides: list[str],
               evaluation: list[str]) -> tuple[Any, dict[str, Any]]:
    """The run's config (a RaysysConfig) and the eval section `raysys evaluate` would use."""
    from raysys.config import load_config

    cfg = load_config(config, [f"archive={archive}", f"out={run}", f"seed={seed}",
                               f"train.run_name=seed{seed}", *overrides])
    return cfg, load_config(config, [*overrides, *evaluation]).eval.model_dump(mode="json")


def folder_mismatch(run: Path, cfg: Any) -> list[str]:
    """The settings a trained run folder differs in from `cfg`; [] when it stands for it."""
    from raysys.config import load_config

    return changed_settings(load_config(run / "config.yaml"), cfg)


def training_seconds(run: Path) -> float:
    """The run's training time: summary.json's `seconds`; a run from before it was recorded:
    from config.yaml's write (at the start) to summary.json's (at the end)."""
    summary = run / "summary.json"
    seconds = json.loads(summary.read_text()).get("seconds")
    if seconds is not None:
        return float(seconds)
    return summary.stat().st_mtime - (run / "config.yaml").stat().st_mtime


def changed_settings(old: Any, new: Any) -> list[str]:
    """Dotted config keys whose values differ between two runs' configs: not where the run
    and its archive are, its name or its logging (PLACES), nor settings left `auto`."""
    return changed(learned_settings(old), learned_settings(new))


def is_trained(run: Path) -> bool:
    return (run / "model" / "model.json").exists()


def earlier_evaluation(run: Path, eval_settings: dict[str, Any]) -> dict[str, Any] | None:
    """The run's eval.json when it was made for this export with exactly `eval_settings`, the
    eval section `raysys evaluate` would use now (a quicker evaluation with other options is
    not reused), and reports everything the page reads (the depth table); None otherwise."""
    path = run / "eval" / "eval.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    model = json.loads((run / "model" / "model.json").read_text())
    current = "depth" in report["models"]["trained"] and report["model_id"] == model["model_id"]
    return report if current and report["config"]["eval"] == eval_settings else None


def run_seconds(times: dict[str, float]) -> float:
    return times["build"] + times["train"] + times["eval"]


def reused_text(times: dict[str, Any]) -> str:
    return (f"; {times['reused']} trained earlier with the same settings (work folder or "
            "record), their own training time counted" if times.get("reused") else "")


def build_text(times: dict[str, float]) -> str:
    return f"build {times['build']:.0f} s, " if times["build"] else "archive reused, "


HEADLINE_MEASURES = {  # name in the table: path under spaces.<space>
    "logistic": ("labels", "logistic"),
    "ncc": ("labels", "ncc"),
    "1-shot": ("few_shot", "by_k", "1"),
    "5-shot": ("few_shot", "by_k", "5"),
    "logistic, 5/class": ("labels_per_class", "by_k", "5", "logistic"),
    "logistic, 10/class": ("labels_per_class", "by_k", "10", "logistic"),
}


def main_space(report: dict[str, Any]) -> str:
    spaces = report["models"]["trained"]["spaces"]
    return "audio" if "audio" in spaces else next(iter(spaces))


def measure_path(space: str, label: str, measure: str) -> tuple[str, ...]:
    """Where a headline measure of `label` sits in a model's report."""
    kind, *rest = HEADLINE_MEASURES[measure]
    return ("spaces", space, kind, label, *rest)


def headline_cells(reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{measure: {model: {mean, ci95} | None}} of the corpus's main label in its audio space."""
    main, space = next(iter(reports[0]["label_sets"])), main_space(reports[0])
    return {measure: {m: seed_stats([get(r, m, *measure_path(space, main, measure))
                                     for r in reports]) for m in MODELS}
            for measure in HEADLINE_MEASURES}


def headline(name: str, reports: list[dict[str, Any]]) -> list[str]:
    """The corpus's main label in the audio (or first) space: logistic, nearest-centre and
    5-way 1- and 5-shot accuracy of each model, and the trained model's verdict against each
    baseline."""
    from raysys.eval.protocol import compare

    main, space = next(iter(reports[0]["label_sets"])), main_space(reports[0])
    rows = []
    for measure, cell in headline_cells(reports).items():
        text = [f"{c['mean']:.3f} ± {c['ci95']:.3f}" if c else "n/a" for c in cell.values()]
        rows.append(f"| {name} | {main} | {space} | {measure} | " + " | ".join(text) + " | "
                    + paired_verdict(reports, space, main, measure) + " | "
                    + compare(cell["trained"], cell["classic"]) + " |")
    return rows


def paired_verdict(reports: list[dict[str, Any]], space: str, label: str, measure: str) -> str:
    """Trained vs its own random init, paired by seed (seedstats.paired_gain)."""
    where = measure_path(space, label, measure)
    return verdict(paired_gain([(get(r, "trained", *where), get(r, "random_init", *where))
                                for r in reports]))


def headline_plot(by_corpus: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """One panel per corpus: each headline measure's mean and 95% CI for the three models."""
    fig, axes = panels(len(by_corpus), 4.2, 3.4)
    width = 0.27
    for ax, (name, reports) in zip(axes, by_corpus.items(), strict=True):
        cells = headline_cells(reports)
        x = np.arange(len(cells))
        for i, model in enumerate(MODELS):
            got = [cells[m][model] or {"mean": np.nan, "ci95": 0.0} for m in cells]
            ax.bar(x + (i - 1) * width, [g["mean"] for g in got], width,
                   yerr=[g["ci95"] for g in got], capsize=2, label=model.replace("_", " "))
        ax.set_xticks(x, list(cells), rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{name}: {next(iter(reports[0]['label_sets']))}, {main_space(reports[0])}")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("accuracy (mean ± 95% CI over seeds)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncol=len(MODELS),
               fontsize=8, frameon=False)
    save(fig, path, top=0.93)


def corpus_section(name: str, reports: list[dict[str, Any]], times: dict[str, float]) -> list[str]:
    first = reports[0]
    spaces = [s for s in first["models"]["trained"]["spaces"] if s != "fused"]
    spaces += ["fused"] if len(spaces) > 1 else []  # one modality: fused is the same vectors
    lines = [f"## {name}", "",
             f"{first['entities']} entities; label sets {list(first['label_sets'])}; "
             f"{len(reports)} training seed(s); {build_text(times)}training "
             f"{times['train'] / times['runs']:.0f} s and evaluation "
             f"{times['eval'] / times['runs']:.0f} s per run (mean of {times['runs']}"
             f"{reused_text(times)}).", "",
             "Logistic probe / nearest-centre accuracy, 5-fold over every entity (chance = the "
             "largest class's share):", "",
             "| label | space | chance | trained | random init | classic | trained − random "
             "(logistic) |", "|---|---|---|---|---|---|---|"]
    for label in first["label_sets"]:
        for space in spaces:
            cells = []
            for model in MODELS:
                per = [get(r, model, "spaces", space, "labels", label) for r in reports]
                if all("skipped" in p or not p for p in per):
                    cells.append("skipped")
                    continue
                cells.append(f"{over_seeds([p.get('logistic') for p in per])} / "
                             f"{over_seeds([p.get('ncc') for p in per])}")
            gaps = [{"mean": get(r, "trained", "spaces", space, "labels", label, "logistic",
                                 "mean") - get(r, "random_init", "spaces", space, "labels",
                                               label, "logistic", "mean"), "ci95": 0.0}
                    for r in reports
                    if isinstance(get(r, "trained", "spaces", space, "labels", label,
                                      "logistic", "mean"), float)]
            chance = get(first, "trained", "spaces", space, "labels", label, "chance")
            chance_text = f"{chance:.3f}" if isinstance(chance, float) else "–"
            lines.append(f"| {label} | {space} | {chance_text} | " + " | ".join(cells) +
                         f" | {over_seeds(gaps) if gaps else 'n/a'} |")
    main = next(iter(first["label_sets"]))
    space = main_space(first)
    lines += ["", f"5-way few-shot (prototype, {main}, {space} space), mean over 600 episodes:",
              "", "| K | trained | random init | classic |", "|---|---|---|---|"]
    for k in first["protocol"]["few_shot_shots"]:
        cells = [over_seeds([get(r, m, "spaces", space, "few_shot", main, "by_k", str(k))
                             for r in reports]) for m in MODELS]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    cross = get(first, "trained", "retrieval", "cross_modal")
    if isinstance(cross, dict) and cross and "skipped" not in cross:
        lines += ["", "Cross-modal retrieval R@10 (chance in brackets):", "",
                  "| pair | trained | random init |", "|---|---|---|"]
        for pair, r in cross.items():
            if "R@10" not in r:
                continue
            cells = [over_seeds([{"mean": get(x, m, "retrieval", "cross_modal", pair, "R@10"),
                                  "ci95": 0.0} for x in reports]) for m in MODELS[:2]]
            lines.append(f"| {pair} (chance {r['chance_R@10']:.3f}) | " + " | ".join(cells)
                         + " |")
    probes = [p for p in get(first, "trained", "probes") if p["modality"] == "audio" and (
        p.get("kind") != "categorical" or p.get("factor") in ("key", "pitch"))]
    if probes:
        lines += ["", "Factor probes of the audio encoder (trained / random init; accuracy or "
                  "R², k-fold):", "", "| factor | space | trained | random init |",
                  "|---|---|---|---|"]
        for p in probes:
            per = {m: [next((q.get("value") for q in get(r, m, "probes") if
                             (q["modality"], q["space"], q["factor"]) ==
                             (p["modality"], p["space"], p["factor"])), None) for r in reports]
                   for m in MODELS[:2]}
            lines.append(f"| {p['factor']} ({p['metric']}) | {p['modality']}/{p['space']} | "
                         f"{over_seeds(per['trained'])} | {over_seeds(per['random_init'])} |")
    return lines + [""]


def claim_settings(name: str, claim: str, variant: str) -> tuple[str, ...]:
    """A claim variant's overrides on top of the corpus's headline overrides."""
    return (*CLAIM_OVERRIDES[name], *CLAIMS[claim].variants[variant])


def settings_key(config: str, overrides: tuple[str, ...]) -> str:
    """What a run learns from, whichever overrides spell it."""
    from raysys.config import load_config

    return json.dumps(learned_settings(load_config(config, list(overrides))), sort_keys=True)


def corpus_plan(name: str, work: Path, args: argparse.Namespace
                ) -> tuple[dict[str, tuple[tuple[str, ...], Path, list[str]]], dict[Any, str]]:
    """Every distinct setting the corpus needs, the headline first: ({settings: (overrides, run
    folder, evaluation overrides)}, {(claim, variant): settings}). Variants that learn the
    same (every claim's base; the demo's 'masked 0%' and its headline) share runs."""
    from raysys.config import ConfigError

    def key(overrides: tuple[str, ...]) -> str:
        everything = (*CORPUS_OVERRIDES[name], *overrides, *args.overrides)
        try:
            return settings_key(args.config, everything)
        except ConfigError as error:  # say which run's settings are wrong
            raise SystemExit(f"results.py: {name} with {' '.join(everything)}: {error}"
                             ) from error

    plan = {key(()): ((), work / name, HEADLINE_EVALUATION)}
    of_variant = {}
    for claim in args.claims:
        if name in CLAIMS[claim].corpora:
            for variant in CLAIMS[claim].variants:
                overrides = claim_settings(name, claim, variant)
                of_variant[claim, variant] = settings = key(overrides)
                plan.setdefault(settings, (overrides, work / name / variant_dir(
                    CLAIMS[claim], variant), []))
    return plan, of_variant


def recorded_pace(records: Path) -> tuple[float, float] | None:
    """(training seconds per step, evaluation seconds per run) over every record: the pace
    --plan's estimate assumes; None before the first record."""
    steps = train = evaluate = 0.0
    found = [r for path in sorted(records.rglob("*.json.gz")) if (r := read_record(path))]
    for record in found:
        steps += record["settings"]["train.steps"]
        train += record["train_seconds"]
        evaluate += record["eval_seconds"]
    return (train / steps, evaluate / len(found)) if found else None


def print_plan(name: str, work: Path, args: argparse.Namespace,
               pace: tuple[float, float] | None) -> float:
    """List the corpus's runs, which seeds a regeneration would take from a run folder or a
    record and which it would train again (stale: trained or recorded with other settings,
    evaluation or archive); the estimated seconds left at `pace` (recorded_pace), 0 without
    one."""
    plan, of_variant = corpus_plan(name, work, args)
    archive = work / name / "archive"
    fingerprint = archive_fingerprint(archive) if archive.exists() else None
    print(f"{name}: {len(plan)} settings x {len(args.seeds)} seeds")
    left = 0.0
    for settings, (overrides, folder, evaluation) in plan.items():
        done, kept, stale = seed_states(folder, work, args, archive, fingerprint,
                                        [*CORPUS_OVERRIDES[name], *overrides, *args.overrides],
                                        evaluation)
        used_by = ["headline"] * (folder == work / name) + [
            f"{claim}/{variant}" for (claim, variant), s in of_variant.items() if s == settings]
        print(f"  {folder.relative_to(work)}  trained seeds {done or 'none'}, recorded "
              f"{kept or 'none'}  "
              f"({', '.join(used_by)})  {' '.join(overrides) or '(no overrides)'}")
        for line in stale:
            print(f"    stale: {line}")
        if pace:
            steps = json.loads(settings)["train.steps"]
            to_train = len(set(args.seeds) - set(done) - set(kept))
            to_evaluate = len(set(args.seeds) - set(kept))
            left += to_train * steps * pace[0] + to_evaluate * pace[1]
    return left


def seed_states(folder: Path, work: Path, args: argparse.Namespace, archive: Path,
                fingerprint: str | None, overrides: list[str], evaluation: list[str]
                ) -> tuple[list[int], list[int], list[str]]:
    """(seeds with a run folder of these settings, seeds with a record that stands for the
    run, why the others' folders or records do not): what train_and_evaluate would decide.
    Without the archive (`fingerprint` None) a record's archive is not judged."""
    done, kept, stale = [], [], []
    for seed in args.seeds:
        run = folder / f"run-seed{seed}"
        cfg, eval_settings = run_config(archive, run, seed, args.config, overrides, evaluation)
        if is_trained(run):
            differ = folder_mismatch(run, cfg)
            if differ:
                stale.append(f"seed {seed}'s run folder has other {', '.join(differ)}: delete "
                             "it (a regeneration stops at it)")
            else:
                done.append(seed)
        record = record_path(work, run, args.records)
        if (found := read_record(record)) is not None:
            why = mismatch(found, learned_settings(cfg), eval_settings,
                           fingerprint or found["archive"])
            if why:
                then = "evaluated and recorded again" if seed in done else "trained again"
                stale.append(f"seed {seed}'s record has other {', '.join(why)}: {then}")
            else:
                kept.append(seed)
    return done, kept, stale


def run_corpus(name: str, work: Path, args: argparse.Namespace, plan: dict[str, Any],
               of_variant: dict[Any, str], save: bool = True) -> dict[str, Any]:
    """Build, train every seed of the corpus's plan (corpus_plan), evaluate; {reports (the
    headline's), claims: {claim: {variant: reports}}, times}, also saved to reports.json
    unless `save` is false (a part of the plan: `--only`)."""
    archive = work / name / "archive"
    times = {"build": build(name, archive, args.entities), "train": 0.0, "eval": 0.0,
             "runs": 0, "reused": 0}
    fingerprint = archive_fingerprint(archive)
    total = len(plan) * len(args.seeds)
    earlier = sum(is_trained(folder / f"run-seed{seed}") or record_path(
        work, folder / f"run-seed{seed}", args.records).exists()
        for _, folder, _ in plan.values() for seed in args.seeds)
    print(f"[results] {name}: {len(plan)} settings x {len(args.seeds)} seeds = {total} runs, "
          f"{earlier} with a run folder or record of an earlier call (used if the settings "
          "match)", flush=True)

    def seeds(overrides: tuple[str, ...], folder: Path, evaluation: list[str]
              ) -> list[dict[str, Any]]:
        reports = []
        for seed in args.seeds:
            run = folder / f"run-seed{seed}"
            report, t_train, t_eval, reused = train_and_evaluate(
                archive, fingerprint, run, record_path(work, run, args.records), seed,
                args.config,
                [*CORPUS_OVERRIDES[name], *overrides, *args.overrides], evaluation)
            reports.append(report)
            times["train"] += t_train
            times["eval"] += t_eval
            times["runs"] += 1
            times["reused"] += reused
            print(f"[results] {name} run {times['runs']}/{total}: "
                  f"{folder.relative_to(work)} seed {seed}: train {t_train:.0f} s, "
                  f"eval {t_eval:.0f} s{' (trained earlier)' if reused else ''}", flush=True)
        return reports

    runs = {settings: seeds(*run) for settings, run in plan.items()}
    claims: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for (claim, variant), settings in of_variant.items():
        claims.setdefault(claim, {})[variant] = runs[settings]
    saved = {"reports": next(iter(runs.values())), "claims": claims, "times": times}
    if save:
        (work / name / "reports.json").write_text(json.dumps(saved))
    return saved


def only_runs(plans: dict[str, Any], work: Path, only: list[str]) -> dict[str, Any]:
    """The corpora's plans cut to the run folders `only` names (as --plan shows them)."""
    folders = {str(folder.relative_to(work)) for plan, _ in plans.values()
               for _, folder, _ in plan.values()}
    unknown = sorted(set(only) - folders)
    if unknown:
        raise SystemExit(f"results.py --only: {unknown} are not run folders of this plan; "
                         f"choose from {sorted(folders)}")
    cut = {name: {settings: run for settings, run in plan.items()
                  if str(run[1].relative_to(work)) in only} for name, (plan, _) in plans.items()}
    return {name: (plan, {}) for name, plan in cut.items() if plan}


def load_saved(path: Path) -> dict[str, Any]:
    """reports.json of an earlier run; files from before the claims held per-seed mean times
    and no claims."""
    saved = json.loads(path.read_text())
    times = saved["times"]
    if "runs" not in times:
        n = len(saved["reports"])
        saved["times"] = {**times, "train": times["train"] * n, "eval": times["eval"] * n,
                          "runs": n}
    saved.setdefault("claims", {})
    return saved


def header(command: str, args: argparse.Namespace, total: float, plot: str) -> list[str]:
    overrides = "".join(f"\n| {name} | `{' '.join(CORPUS_OVERRIDES[name] + args.overrides)}` | "
                        f"`{' '.join(CLAIM_OVERRIDES[name]) or '(nothing)'}` |"
                        for name in args.corpora)
    return [
        "# Results: the measured recipe against doing nothing", "",
        f"Regenerated by `{command}` ({total:.0f} s of building, training and evaluating on "
        f"{platform.machine()} with {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}). "
        f"Config: `{Path(args.config).name}` with, per corpus (experiments/results.py's "
        f"CORPUS_OVERRIDES); each corpus built with seed 0:", "",
        "| corpus | overrides | the claims' runs add |", "|---|---|---|" + overrides, "",
        "Protocol (`raysys evaluate`, docs/evaluation.md): every entity is embedded as `raysys "
        "embed` does (whole clip, windows mean-pooled), classifiers are fitted on z-scored "
        "features on a seeded stratified 5-fold split shared by all models; `trained ± CI` is "
        "the mean over training seeds with a 95% t-interval over seeds (one seed: the "
        "binomial CI of that run). `random init` is the same architecture untrained; `classic`"
        " are MFCC/log-mel statistics, image thumbnails and histograms, log column statistics.",
        "", "## Headline: the main label", "",
        "Trained vs random init: the gain paired by seed (each seed's own initialisation), "
        "mean ± 95% t-interval over seeds, `better`/`worse` when the interval excludes 0. "
        "Trained vs classic (one deterministic feature set): `better`/`worse` when the "
        "difference is outside the 95% CIs (|a − b| > sqrt(ci_a² + ci_b²)), else `within "
        "CI`. 1-shot and 5-shot: 5-way prototype episodes. `logistic, K/class`: the "
        "logistic probe fitted on K labelled entities of every class, tested on the rest "
        "(section \"Goal 1 at 5-20 labels per class\"). What the figures mean for the "
        "issue's goals: docs/learning.md.", "",
        "After the per-corpus tables come the papers' claims (docs/learning.md, issue 14): "
        "clustering by depth and few-shot against supervised training from scratch, read from "
        "the headline runs, then each claim of experiments/claims.py that `--claims` ran "
        "(config variants of the claim base: the corpus's overrides plus the claims' column "
        "above, every seed), with a verdict paired by seed. Runs that learn the same are "
        "trained once and shared.",
        "", f"![headline]({plot})", "",
        "| corpus | label | space | measure | trained | random init | classic | vs random "
        "init | vs classic |", "|---|---|---|---|---|---|---|---|---|",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="results-work", help="archives, runs and reports")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--corpora", nargs="+", default=["music", "speech", "demo"],
                   choices=list(CORPUS_OVERRIDES))
    p.add_argument("--entities", type=int, default=600)
    p.add_argument("--config", default=str(ROOT / "configs" / "recipe.yaml"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--claims", nargs="*", default=list(CLAIMS), choices=list(CLAIMS),
                   help="the papers' claims to reproduce (experiments/claims.py); none: "
                   "the headline only")
    p.add_argument("--records", type=Path, default=RECORDS,
                   help="finished runs kept with the code (experiments/records.py); an "
                   "empty folder trains everything again")
    p.add_argument("--plan", action="store_true",
                   help="list the runs each corpus needs and which are trained, then stop")
    p.add_argument("--only", nargs="+", metavar="RUN_FOLDER",
                   help="train, evaluate and record only these run folders of the plan (as "
                   "--plan names them, e.g. music/loev-LOEV++), without writing the doc")
    p.add_argument("--tables-only", action="store_true",
                   help="rewrite the doc from WORK/<corpus>/reports.json of an earlier run")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    work = Path(args.work).absolute()
    if args.plan:
        pace = recorded_pace(args.records)
        left = sum(print_plan(name, work, args, pace) for name in args.corpora)
        if pace:
            print(f"left: ~{left / 3600:.1f} h of training and evaluation at the recorded "
                  f"runs' pace ({pace[0]:.2f} s a step, {pace[1] / 60:.1f} min an evaluation; "
                  "archives to build not counted)")
        return 0
    if args.tables_only:
        saved = {name: load_saved(work / name / "reports.json") for name in args.corpora}
    else:
        plans = {name: corpus_plan(name, work, args) for name in args.corpora}  # validates
        # every run's config before Ray starts (when a run needs training or evaluation)
        if args.only:
            for name, plan in only_runs(plans, work, args.only).items():
                run_corpus(name, work, args, *plan, save=False)
            print(f"[results] recorded {' '.join(args.only)}; a call without --only writes "
                  "the doc")
            return 0
        saved = {name: run_corpus(name, work, args, *plans[name]) for name in args.corpora}
    doc = Path(args.doc)
    plot = doc.with_name(doc.stem + "-headline.png")
    headline_plot({name: got["reports"] for name, got in saved.items()}, plot)
    total = sum(run_seconds(got["times"]) for got in saved.values())
    argv_shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--tables-only"]
    lines = header(" ".join(["python experiments/results.py", *argv_shown]), args, total,
                   plot.name)
    for name, got in saved.items():
        lines += headline(name, got["reports"])
    lines.append("")
    for name, got in saved.items():
        lines += corpus_section(name, got["reports"], got["times"])
    main_of = {name: (next(iter(got["reports"][0]["label_sets"])), main_space(got["reports"][0]))
               for name, got in saved.items()}
    depth_png = doc.with_name(f"{doc.stem}-depth.png")
    headline_runs = {name: got["reports"] for name, got in saved.items()}
    depth_plot(headline_runs, main_of, depth_png)
    lines += depth_section(headline_runs, main_of, depth_png.name)
    few_shot_png = doc.with_name(f"{doc.stem}-few-shot.png")
    few_shot_plot(headline_runs, main_of, few_shot_png)
    lines += few_shot_section(headline_runs, main_of, few_shot_png.name)
    budget_png = doc.with_name(f"{doc.stem}-label-budget.png")
    label_budget_plot(headline_runs, main_of, budget_png)
    lines += label_budget_section(headline_runs, main_of, budget_png.name)
    for key in args.claims:
        by_corpus = {name: got["claims"][key] for name, got in saved.items()
                     if key in got["claims"]}
        if by_corpus:
            claim_png = doc.with_name(f"{doc.stem}-{key}.png")
            claim_plot(CLAIMS[key], by_corpus, main_of, claim_png)
            lines += claim_section(CLAIMS[key], by_corpus, main_of, claim_png.name,
                                   not_run=[n for n in saved if n not in by_corpus
                                            and n in CLAIMS[key].corpora])
    doc.write_text("\n".join(lines))
    print(f"[results] wrote {doc} and its plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
