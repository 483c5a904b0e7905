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
MARGIN = 0.05  # nearest-centre accuracy over the 144 entities (binomial CI ~ +-0.08)
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
    report = evaluate_checkpoint(tmp_path / "run", music, tmp_path / "eval").report
    audio = {name: report["models"][name]["spaces"]["audio"]["labels"]["label"]
             for name in ("trained", "random_init")}
    ncc = {name: got["ncc"]["mean"] for name, got in audio.items()}
    assert ncc["trained"] > ncc["random_init"] + MARGIN, ncc
