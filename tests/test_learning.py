"""Regression tests of the learning itself, on real recorded material (a small music corpus of
sampled instruments, built here), in the report `raysys evaluate` writes (same folds, same
entities): self-supervised pretraining with the measured recipe must beat the same network at
random init on the main label, and LOEV++'s time-stretch head must keep the tempo that the
invariant head loses. Fails if a change to the data, model, objective or trainer makes
pretraining useless again (docs/learning.md). Skipped only where the corpus's Debian packages
cannot be installed (CorpusUnavailable), with the reason.
"""

from __future__ import annotations

import pytest

from raysys.config import load_config

ENTITIES = 144  # 6 recordings per instrument, 24 instruments
STEPS = 150
# Nearest-centre accuracy on the instrument (24 classes, 5-fold over the 144 entities),
# measured with seeds 0/1/2 (2026-11-30): trained 0.736/0.771/0.750, random init
# 0.660/0.576/0.611, classic 0.528 -> gains of 0.08-0.19 and 0.21-0.24. The margins sit below
# the smallest gain; what they catch is pretraining that no longer helps (the objective of
# session 4 lost 0.29 against random init on this label).
MARGIN_RANDOM, MARGIN_CLASSIC = 0.04, 0.10
# docs/learning.md's audio recipe at test size: audio only, two different crops per entity,
# the eq augmentation (at its strength of the measurements above), no LOEV/ListNet/queue.
RECIPE = [
    "data.modalities=[audio]", "objective.loev.enabled=false", "model.loev_heads=[]",
    "objective.w_cont=0", "objective.negatives.queue_size=0", "objective.negatives.momentum=null",
    "data.augment.audio.crop_shared=false", "data.augment.audio.eq_p=0.8",
    "data.augment.audio.eq_tilt_db=[-3,3]", "data.augment.audio.eq_peak_db=[-8,8]",
    "eval.every=0", "data.eval_fraction=0.0",
]


def build_music(tmp_path_factory, entities: int) -> str:
    from raysys.corpora import CorpusUnavailable, make_corpus

    root = tmp_path_factory.mktemp("learning") / f"music{entities}"
    try:
        make_corpus("music", str(root), entities=entities, seed=0, missing_fraction=0.0)
    except CorpusUnavailable as e:
        pytest.skip(f"music corpus unavailable: {e}")
    return str(root)


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> str:
    return build_music(tmp_path_factory, ENTITIES)


@pytest.mark.slow
def test_pretraining_beats_random_init_on_the_instrument(ray_session, music, tmp_path):
    from raysys.evaluate import evaluate_checkpoint
    from raysys.train.driver import pretrain

    cfg = load_config("configs/demo.yaml", [
        f"archive={music}", f"out={tmp_path / 'run'}", f"train.steps={STEPS}",
        f"train.checkpoint_every={STEPS}", "train.log_every=50", "train.tensorboard=false",
        *RECIPE])
    pretrain(cfg)
    report = evaluate_checkpoint(tmp_path / "run", music, tmp_path / "eval",
                                 overrides=["eval.sensitivity_clips=0"]).report  # not asserted
    ncc = {name: report["models"][name]["spaces"]["audio"]["labels"]["label"]["ncc"]["mean"]
           for name in ("trained", "random_init", "classic")}
    assert ncc["trained"] > ncc["random_init"] + MARGIN_RANDOM, ncc
    assert ncc["trained"] > ncc["classic"] + MARGIN_CLASSIC, ncc


# Goal 3's LOEV++ setting (docs/learning.md, sessions 18-19) at test size: LOEV's own loss, the
# time-stretch head alone, its audio branch pooling the autocorrelation of the frame features.
LOEV_TEMPO = [
    "data.modalities=[audio]", "model.loev_heads=[time_stretch]", "model.loev_plus_plus=true",
    "objective.loev.enabled=true", "objective.loev.augmentations=[time_stretch]",
    "data.augment.audio.crop_shared=true", "model.audio.kind=tdnn", "model.audio.aggregate=all",
    "model.loev_branch_periodicity={time_stretch: 16}", "objective.w_bin=0",
    "objective.neighbour_positives=0", "eval.every=0", "data.eval_fraction=0.0",
]
TEMPO_ENTITIES, TEMPO_STEPS = 300, 150  # at 144 entities the tempo R² has a CI of ±0.15
# Measured with seeds 0/1/2 (2026-12-03), time head vs invariant head: tempo ridge R² (log2
# BPM, 5-fold) 0.124/0.127/0.073 vs -0.055/-0.073/-0.063 (gaps 0.14-0.20); the share of each
# entity's 10 nearest neighbours within ±4 % of its tempo 0.129/0.150/0.131 vs
# 0.063/0.063/0.064 (chance 0.069; gaps 0.066-0.087). Random init's time head: R² <= 0,
# neighbours at chance. The margins sit at about half the smallest gap.
R2_MARGIN, NB_MARGIN = 0.06, 0.03


@pytest.fixture(scope="module")
def music_tempo(tmp_path_factory) -> str:
    return build_music(tmp_path_factory, TEMPO_ENTITIES)


@pytest.mark.slow
def test_time_stretch_head_keeps_the_tempo_the_invariant_head_loses(ray_session, music_tempo,
                                                                    tmp_path):
    from raysys.evaluate import evaluate_checkpoint
    from raysys.train.driver import pretrain

    cfg = load_config("configs/recipe.yaml", [
        f"archive={music_tempo}", f"out={tmp_path / 'run'}", f"train.steps={TEMPO_STEPS}",
        f"train.checkpoint_every={TEMPO_STEPS}", "train.log_every=50", "train.tensorboard=false",
        *LOEV_TEMPO])
    pretrain(cfg)
    report = evaluate_checkpoint(tmp_path / "run", music_tempo, tmp_path / "eval", overrides=[
        "eval.label_sets={label: label}", "eval.factors={tempo: label_tempo}",
        "eval.random_control=false", "eval.classic=false", "eval.few_shot_episodes=5",
        "eval.sensitivity_clips=0",
    ]).report
    tempo = {row["space"]: row for row in report["models"]["trained"]["probes"]
             if row["modality"] == "audio" and row["factor"] == "tempo"}
    head, invariant = tempo["time_stretch"], tempo["invariant"]
    assert head["value"]["mean"] > invariant["value"]["mean"] + R2_MARGIN, tempo
    assert head["agreement"] > invariant["agreement"] + NB_MARGIN, tempo
