"""Evaluation during training (eval.every) and `raysys evaluate` with its report: one tiny real
run (Ray Train + DeepSpeed on CPU) shared by the module, plus fast checks of the pieces."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from raysys.config import load_config
from raysys.eval.config import EvaluationConfig
from raysys.eval.measure import (
    FUSED,
    RELEVANT_RATING,
    Spaces,
    few_shot_curve,
    fuse_mean,
    graded_relevance,
    relevance_by_space,
)
from raysys.eval.protocol import kfold_classification
from raysys.evaluate import EvaluateError, evaluate_checkpoint, verdict_rows
from raysys.train.intrain_eval import evaluate_split, metric_names, quick_metrics
from raysys.train.metrics import eval_line

PNG = b"\x89PNG\r\n\x1a\n"
STEPS, EVERY = 4, 2


def eval_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if any(k.startswith("eval/") for k in r)]


def train_steps(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if "loss" in r]


# -- fast: the pieces -----------------------------------------------------------------------------

def test_quick_metrics_are_the_out_of_fold_protocol_and_random_stays_near_chance():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    x = np.eye(8)[y] + 0.05 * rng.normal(size=(40, 8))
    cfg = EvaluationConfig()
    out = quick_metrics(x, {"fine": y, "coarse": y // 2}, cfg)
    reference = kfold_classification(x, y, folds=cfg.folds, seed=cfg.seed, knn_k=cfg.knn_k)
    for clf in ("ncc", "logistic", "knn"):
        assert out[f"eval/fine/{clf}"] == reference[clf]["mean"] == 1.0
    assert out["eval/coarse/ncc"] == 1.0
    assert out["eval/fine/cdnv"] < 0.05 < out["eval/random/cdnv"]
    assert out["eval/random/ncc"] < 0.6 and out["eval/random/logistic"] < 0.6
    single = quick_metrics(x, {"fine": np.zeros(40, int)}, EvaluationConfig(random_control=False))
    assert single == {"eval/fine/skipped": "1 class(es) with >= 2 samples: nothing to classify"}


def test_out_of_fold_metrics_with_fewer_samples_per_class_than_folds():
    """A held-out split of ~100 entities over 24 classes has classes of 2-4: folds shrink to
    the largest class instead of failing, and unlabelled entities are left out."""
    y = np.repeat(np.arange(6), 3).astype(object)
    x = np.eye(6)[y.astype(int)] + 0.01
    y[0] = None
    out = quick_metrics(x, {"fine": y}, EvaluationConfig(folds=5, random_control=False))
    assert out["eval/fine/ncc"] == 1.0


def two_modality_split(n: int = 24):
    """Audio carries the label; the image view is the audio view plus noise (retrieval finds
    it); ratings grade each query's candidates by label agreement."""
    import pandas as pd

    from raysys.train.diagnostics import EmbeddedSplit

    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), n // 4)
    audio = np.eye(8)[y] + 0.3 * rng.normal(size=(n, 8))
    image = audio + 0.01 * rng.normal(size=(n, 8))
    present = {"audio": np.ones(n, bool), "image": np.arange(n) % 6 != 0}
    image[~present["image"]] = 0
    keys = [f"e{i}" for i in range(n)]
    split = EmbeddedSplit(keys=keys, entity_ids=np.arange(n),
                          embeddings={"audio": audio, "image": image}, present=present,
                          labels=pd.DataFrame({"key": keys, "label": y}))
    ratings = pd.DataFrame([{"query": keys[i], "candidate": keys[j],
                             "relevance": 100.0 if y[i] == y[j] else 10.0}
                            for i in range(n) for j in range(n) if i != j and (i + j) % 3 == 0])
    return split, ratings


def test_evaluate_split_reports_every_named_metric_and_nothing_else():
    split, ratings = two_modality_split()
    cfg = EvaluationConfig()
    heads = {"invariant": split.embeddings}
    record = evaluate_split(split, heads, {"label": "label"}, cfg, ratings)
    names = metric_names(["label"], ["audio", "image"], cfg, graded=True)
    assert sorted(k for k in record if k != "eval/entities") == sorted(names)
    audio, image, has = split.embeddings["audio"], split.embeddings["image"], split.present["image"]
    naive = np.mean(np.argmax(audio[has] @ image[has].T / np.linalg.norm(image[has], axis=1),
                             axis=1) == np.arange(has.sum()))
    assert record["eval/retrieval/audio->image/R@1"] == pytest.approx(naive) == 1.0
    assert record["eval/image/label/ncc"] > 0.8 and record["eval/relevance/nDCG@10"] > 0.9
    assert record["eval/entities"] == 24
    alone = evaluate_split(split, heads, {"label": "label"}, cfg, None)
    assert not any(k.startswith("eval/relevance") for k in alone)


def test_graded_relevance_on_held_out_queries_matches_a_naive_ranking():
    """nDCG@k on the ratings and R@1 / mAP@k with ratings >= RELEVANT_RATING as positives,
    over the chosen queries only, each ranking only its own rated candidates."""
    from sklearn.metrics import ndcg_score

    split, ratings = two_modality_split()
    x, keys = split.embeddings["audio"], split.keys
    held = set(keys[::3])
    got = graded_relevance(x, np.ones(len(keys), bool), keys, ratings, k=5, queries=held)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    ndcg, hit1 = [], []
    for query, rows in ratings[ratings["query"].isin(held)].groupby("query"):
        q = keys.index(query)
        cand = [keys.index(c) for c in rows["candidate"]]
        sims = unit[cand] @ unit[q]
        ndcg.append(ndcg_score([rows["relevance"].to_numpy()], [sims], k=5))
        hit1.append(rows["relevance"].to_numpy()[np.argmax(sims)] >= RELEVANT_RATING)
    assert got["queries"] == len(ndcg) < len(set(ratings["query"])) and got["held_out"]
    assert got["nDCG@5"] == pytest.approx(np.mean(ndcg))
    assert got["R@1"] == pytest.approx(np.mean(hit1)) and 0 < got["mAP@5"] <= 1
    everyone = graded_relevance(x, np.ones(len(keys), bool), keys, ratings, k=5)
    assert everyone["queries"] == len(set(ratings["query"])) and not everyone["held_out"]


def test_graded_relevance_ranks_in_each_modality_when_a_view_lacks_what_is_rated():
    """The fused space mixes in an image view that carries nothing the ratings reward: each
    modality's own ranking is reported beside it, and equals graded relevance in that space."""
    split, ratings = two_modality_split()
    emb, present, keys = split.embeddings, split.present, split.keys
    noise = np.random.default_rng(4).normal(size=emb["image"].shape) * present["image"][:, None]
    views = {"audio": emb["audio"], "image": noise}
    fused, anywhere = fuse_mean(views, present)
    spaces = Spaces("two", {**views, FUSED: fused}, {**present, FUSED: anywhere})
    cfg = EvaluationConfig(map_k=5)
    got = relevance_by_space(spaces, keys, ratings, cfg, None)
    for modality, x in views.items():
        assert got["relevance_by_modality"][modality] == graded_relevance(
            x, present[modality], keys, ratings, k=5, ks=tuple(cfg.retrieval_ks))
    audio, image = (got["relevance_by_modality"][m]["nDCG@5"] for m in ("audio", "image"))
    assert audio > got["relevance"]["nDCG@5"] > image
    alone = Spaces("one", {"audio": emb["audio"], FUSED: emb["audio"]},
                   {"audio": present["audio"], FUSED: present["audio"]})
    assert list(relevance_by_space(alone, keys, ratings, cfg, None)) == ["relevance"]


def test_verdict_lists_the_fused_space_only_beside_several_modalities():
    cell = {"ncc": {"mean": 0.9, "ci95": 0.02}, "logistic": {"mean": 0.8, "ci95": 0.02}}

    def report(modalities: list[str]) -> dict:
        spaces = {s: {"labels": {"label": cell}} for s in [*modalities, FUSED]}
        return {"label_sets": {"label": "label"},
                "models": {"trained": {"spaces": spaces}, "random_init": {"spaces": spaces}}}

    assert [r["space"] for r in verdict_rows(report(["audio"]))] == ["audio"]
    rows = verdict_rows(report(["audio", "image"]))
    assert [r["space"] for r in rows] == [FUSED, "audio", "image"]
    assert rows[0]["vs_random_init"] == {"ncc": "within CI", "logistic": "within CI"}


def test_eval_line_shows_main_label_random_control_and_retrieval():
    split, ratings = two_modality_split()
    record = evaluate_split(split, {"invariant": split.embeddings}, {"label": "label"},
                            EvaluationConfig(), ratings)
    line = eval_line(10, {**record, "eval/seconds": 1.5})
    r = {k: f"{v:.3f}" for k, v in record.items() if isinstance(v, float)}
    assert line.startswith(f"eval step 10 ncc/logistic: label {r['eval/label/ncc']}/"
                           f"{r['eval/label/logistic']}, random {r['eval/random/ncc']}/")
    assert f"audio/label {r['eval/audio/label/ncc']}/{r['eval/audio/label/logistic']}" in line
    assert "retrieval/audio->image/R@1 1.000" in line and "relevance/nDCG@10" in line
    assert line.endswith("(24 entities, 1.5s)")
    assert eval_line(3, {"eval/error": "boom"}) == "eval step 3: failed: boom"


def test_few_shot_curve_skips_k_larger_than_the_classes():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(6), 8)
    x = np.eye(6)[y] + 0.1 * rng.normal(size=(48, 6))
    curve = few_shot_curve(x, y, EvaluationConfig(few_shot_episodes=50))
    assert curve["ways"] == 5
    assert curve["by_k"]["1"]["mean"] > 0.9 and curve["by_k"]["5"]["queries"] == 3
    assert "K=10" in curve["by_k"]["10"]["skipped"] and "skipped" in curve["by_k"]["20"]


def test_config_eval_section_names_the_key():
    from raysys.config import ConfigError

    assert load_config(None, ["eval.every=5"]).eval.every == 5
    with pytest.raises(ConfigError, match=r"eval\.every"):
        load_config(None, ["eval.every=-1"])
    with pytest.raises(ConfigError, match=r"eval\.label_sets"):
        load_config(None, ["eval.label_sets.fine=genre"])


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    from raysys.cli import main

    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope"), "--archive", "x"]) == 2
    assert f"--checkpoint {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err
    with pytest.raises(EvaluateError, match=r"no model\.json in it or in its model/ folder"):
        evaluate_checkpoint(tmp_path, "x")


# -- slow: one real run ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    from raysys.data.demo import make_demo_archive

    root = tmp_path_factory.mktemp("evaluate") / "archive"
    make_demo_archive(str(root), entities=40, seed=1, missing_fraction=0.1)
    return str(root)


def run_config(archive: str, out: Path, steps: int):
    return load_config("configs/tiny.yaml", [
        f"archive={archive}", f"out={out}", f"train.steps={steps}", "train.log_every=1",
        "train.checkpoint_every=2", "train.run_name=ev", "train.tensorboard=true",
        f"eval.every={EVERY}", "data.eval_fraction=0.5",
        "model.cross_head=true"])  # fusion and retrieval then live in the cross head


@pytest.fixture(scope="module")
def run(ray_session, archive, tmp_path_factory) -> Path:
    from raysys.train.driver import pretrain

    out = tmp_path_factory.mktemp("ev_run")
    assert pretrain(run_config(archive, out, STEPS))["steps"] == STEPS
    return out


@pytest.mark.slow
def test_in_training_eval_records_at_the_right_steps(run):
    records = eval_records(run)
    assert [r["step"] for r in records] == [0, 2, 4]  # the random-init point, then every 2
    assert train_steps(run) == [1, 2, 3, 4]  # training records untouched
    for r in records:
        assert "eval/error" not in r, r
        assert r["eval/entities"] >= 10 and r["eval/seconds"] > 0
        for name in ("label", "coarse", "pitch", "random"):  # discovered from the manifest
            for clf in ("ncc", "logistic", "knn"):
                assert 0.0 <= r[f"eval/{name}/{clf}"] <= 1.0
            assert r[f"eval/{name}/cdnv"] > 0
        for pair in ("audio->image", "image->tabular", "tabular->audio"):
            assert 0.0 <= r[f"eval/retrieval/{pair}/R@1"] <= 1.0
        assert 0.0 <= r["eval/audio/label/logistic"] <= 1.0
        assert 0.0 < r["eval/relevance/nDCG@10"] <= 1.0
    assert records[0] != records[-1]  # the weights changed between the snapshots
    assert any((run / "tensorboard").iterdir())


@pytest.mark.slow
def test_evaluate_writes_eval_json_report_and_every_plot(run, archive, capsys):
    from raysys.cli import main

    assert main(["evaluate", "--checkpoint", str(run), "--archive", archive]) == 0
    printed = capsys.readouterr()
    out = run / "eval"  # the default
    assert f"report: {out / 'report.md'}" in printed.out
    assert "[evaluate] 40 entities (all)" in printed.out  # k-fold over the whole archive
    report = json.loads((out / "eval.json").read_text())
    meta = json.loads((run / "model" / "model.json").read_text())
    assert report["model_id"] == meta["model_id"] and report["step"] == STEPS
    assert report["config"]["eval"]["every"] == EVERY
    assert report["label_sets"] == {"label": "label", "coarse": "label_coarse",
                                    "pitch": "label_pitch"}
    assert report["factor_kinds"]["tempo"] == "tempo"
    assert set(report["models"]) == {"trained", "random_init", "classic"}
    for block in report["models"].values():  # the baselines on the same entities
        fused = block["spaces"]["fused"]
        assert fused["entities"] == 40
        coarse = fused["labels"]["coarse"]
        assert coarse["n"] == 40 and {"ncc", "logistic", "knn"} <= set(coarse)
        assert set(fused["few_shot"]["label"]["by_k"]) == {"1", "5", "10", "20"}
        assert {"audio", "image", "tabular"} <= set(block["spaces"])
        assert "relevance" in block["retrieval"]
    trained = report["models"]["trained"]
    assert "audio->image" in trained["retrieval"]["cross_modal"]
    assert "skipped" in report["models"]["classic"]["retrieval"]["cross_modal"]
    spaces = {(r["modality"], r["space"]) for r in trained["probes"]}
    assert {(m, s) for m in ("audio", "image", "tabular")
            for s in ("backbone", "invariant", "cross")} == spaces  # tiny.yaml: no LOEV heads
    assert {r["factor"] for r in trained["probes"]} == {"label", "coarse", "pitch", "tempo"}
    assert len(report["verdict"]) == 3 * 4  # label sets x (fused + 3 modalities)
    for name in ("trained", "random_init"):  # how far the audio heads move under augmentation
        block = report["models"][name]["sensitivity"]
        assert block["clips"] >= 2, block
        rows = block["distance"]
        assert list(rows) == ["other clips", "vocoder at rate 1", "stretch 0.8", "stretch 1.25",
                              "pitch -3", "pitch +3"]
        assert all(set(r) == {"invariant", "cross"} for r in rows.values())
        assert all(abs(d) < 1e-3 for d in rows["vocoder at rate 1"].values())  # the control
        assert all(0 < d <= 2 for d in rows["pitch +3"].values())
    assert "sensitivity" not in report["models"]["classic"]
    for name in ("trained", "random_init"):  # clustering by depth, shallowest first
        depth = report["models"][name]["depth"]
        assert list(depth) == ["audio", "image", "tabular"]
        assert list(depth["audio"]) == ["layer1", "layer2", "backbone", "invariant"]
        cell = depth["audio"]["backbone"]
        assert list(cell) == ["label", "coarse", "pitch", "random"]
        assert 0 <= cell["random"]["ncc"]["mean"] <= 1 and cell["label"]["cdnv"] > 0
    assert report["models"]["classic"]["depth"] == {}
    relevance = report["models"]["trained"]["retrieval"]["relevance"]
    assert relevance["held_out"] and relevance["queries"] < 40 and "R@1" in relevance
    text = (out / "report.md").read_text()
    assert "## Augmentation sensitivity (audio heads)" in text
    assert "| vocoder at rate 1 | 0.000 |" in text
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert set(linked) == set(report["plots"])
    assert {"loss_terms.png", "clustering_over_steps.png", "few_shot_label.png",
            "projection.png", "depth.png"} <= set(linked)
    for name in linked:
        data = (out / name).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG), name
    assert text.index("## Verdict") < text.index("## Classification")
    for heading in ("## Retrieval", "## Factor probes", "## Few-shot", "## Clustering by depth",
                    "random_init", "classic"):
        assert heading in text


@pytest.mark.slow
def test_supervised_from_scratch_baseline_beside_the_prototype_curve(run, archive, tmp_path):
    result = evaluate_checkpoint(run, archive, tmp_path / "sup", overrides=[
        "eval.supervised_episodes=2", "eval.supervised_epochs=1", "eval.supervised_min_steps=3",
        "eval.classic=false",
        "eval.sensitivity_clips=0", "eval.few_shot_shots=[1,5]"])
    block = result.report["models"]["trained"]["supervised_few_shot"]["label"]
    assert block["space"] == "audio" and block["min_steps"] == 3 and block["ways"] >= 2
    assert block["by_k"]["1"]["episodes"] == 2 and 0 <= block["by_k"]["1"]["mean"] <= 1
    assert "supervised_few_shot" not in result.report["models"]["random_init"]
    text = (tmp_path / "sup" / "report.md").read_text()
    assert "Supervised from scratch on `label`, audio" in text
    assert "| K | supervised from scratch | trained (prototype) | random_init (prototype) |" \
        in text


@pytest.mark.slow
def test_evaluate_compares_other_runs_and_one_split(run, archive, tmp_path):
    export = tmp_path / "other"
    shutil.copytree(run / "model", export / "model")
    result = evaluate_checkpoint(run, archive, tmp_path / "out", split="eval",
                                 compare=[str(export)], overrides=["eval.classic=false"])
    models = result.report["models"]
    assert set(models) == {"trained", "random_init", "other"}
    assert result.report["entities"] < 40 and result.report["split"] == "eval"
    # the same weights on the same folds give the same numbers
    assert models["other"]["spaces"] == models["trained"]["spaces"]


@pytest.mark.slow
def test_evaluate_a_bare_export_says_there_are_no_curves(run, archive, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(run / "model", export)
    result = evaluate_checkpoint(export, archive, tmp_path / "out")
    text = (result.out / "report.md").read_text()
    assert "not inside a run folder" in text
    assert "loss_terms.png" not in result.report["plots"]
    assert result.report["run"] is None
    for name in result.report["plots"]:
        assert (result.out / name).read_bytes().startswith(PNG)


@pytest.mark.slow
def test_archive_without_a_trained_view_is_a_clear_error(run, archive, tmp_path):
    no_logs = tmp_path / "archive"
    shutil.copytree(archive, no_logs)
    (no_logs / "logs.parquet").unlink()
    with pytest.raises(EvaluateError, match=r"trained on \['audio', 'image', 'tabular'\].*"
                                            r"no \['tabular'\] records"):
        evaluate_checkpoint(run, str(no_logs), tmp_path / "out")


@pytest.mark.slow
def test_missing_label_column_names_the_key(run, archive, tmp_path):
    with pytest.raises(ValueError, match=r"eval\.label_sets\.coarse: column 'label_genre'"):
        evaluate_checkpoint(run, archive, tmp_path / "out",
                            overrides=["eval.label_sets.coarse=label_genre"])
    with pytest.raises(ValueError, match=r"eval\.factors\.key: column 'label_key'"):
        evaluate_checkpoint(run, archive, tmp_path / "out",
                            overrides=["eval.factors.key=label_key"])


@pytest.mark.slow
def test_resume_does_not_duplicate_eval_records(run, archive):
    """Runs last (it extends the module's run): resuming at step 4 (already evaluated) to 6."""
    from raysys.train.driver import pretrain

    assert pretrain(run_config(archive, run, STEPS + 2))["steps"] == STEPS + 2
    assert [r["step"] for r in eval_records(run)] == [0, 2, 4, 6]
    assert train_steps(run) == [1, 2, 3, 4, 5, 6]


def test_unknown_label_names_need_no_overrides(tmp_path):
    """An archive whose labels are not the demo's (`label_colour`, a float `label_speed`) is
    evaluated with discovered label sets and factors; no Ray, a random export."""
    import pandas as pd

    from raysys.data.demo import make_demo_archive
    from raysys.embed.reference import random_export

    root = tmp_path / "archive"
    make_demo_archive(str(root), entities=48, seed=2, missing_fraction=0.0)
    manifest = pd.read_parquet(root / "manifest.parquet")
    manifest = manifest.rename(columns={"label": "label_colour", "label_coarse": "label_shape"})
    manifest["label_speed"] = manifest.pop("label_tempo").astype(float) * 1.5
    manifest = manifest.drop(columns=["label_pitch"])
    manifest.to_parquet(root / "manifest.parquet")
    cfg = load_config("configs/tiny.yaml", [])
    random_export(str(root), tmp_path / "model", cfg.data, cfg.model)
    result = evaluate_checkpoint(tmp_path / "model", str(root), tmp_path / "out",
                                 overrides=["eval.few_shot_episodes=20"])
    report = result.report
    assert report["label_sets"] == {"colour": "label_colour", "shape": "label_shape"}
    assert report["factor_kinds"] == {"colour": "categorical", "shape": "categorical",
                                      "speed": "continuous"}
    fused = report["models"]["trained"]["spaces"]["fused"]
    assert fused["labels"]["colour"]["n"] == 48
    speed = [r for r in report["models"]["classic"]["probes"] if r["factor"] == "speed"]
    assert speed and all(r["metric"] == "R2" for r in speed)
    assert "| colour | fused |" in (result.out / "report.md").read_text()
