"""Regression test of the learning itself: on real recorded material (a small music corpus of
sampled instruments, built here), self-supervised pretraining with the measured recipe must
beat the same network at random init on the main label, in the report `raysys evaluate` writes
(same folds, same entities). Fails if a change to the data, model, objective or trainer makes
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
# the eq augmentation, no LOEV/ListNet/queue.
RECIPE = [
    "data.modalities=[audio]", "objective.loev.enabled=false", "model.loev_heads=[]",
    "objective.w_cont=0", "objective.negatives.queue_size=0", "objective.negatives.momentum=null",
    "data.augment.audio.crop_shared=false", "data.augment.audio.eq_p=0.8", "eval.every=0",
    "data.eval_fraction=0.0",
]


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> str:
    from raysys.corpora import CorpusUnavailable, make_corpus

    root = tmp_path_factory.mktemp("learning") / "music"
    try:
        make_corpus("music", str(root), entities=ENTITIES, seed=0, missing_fraction=0.0)
    except CorpusUnavailable as e:
        pytest.skip(f"music corpus unavailable: {e}")
    return str(root)


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
