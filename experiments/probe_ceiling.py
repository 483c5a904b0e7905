"""How far can a linear probe go on a corpus's main label? (issue 14, goal 1)

    python experiments/probe_ceiling.py --checkpoint RUN --archive ARCHIVE [--label label]

The trained model's audio embedding (as `raysys evaluate` computes it), the classic features
and the two concatenated, each under `raysys evaluate`'s folds (eval.folds = 5, eval.seed =
0) with the logistic probe at several regularisation strengths C (the protocol uses C = 1)
and an RBF SVM. Then the most frequent confusions of the C = 1 probe for each space. It asks
whether "+5 points of logistic accuracy over classic features" is within reach of *any*
features of this corpus, or close to what its labels allow.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysys.embed.spaces import classic_spaces, entity_frame  # noqa: E402
from raysys.eval.protocol import stratified_folds  # noqa: E402
from raysys.evaluate import embed_models, open_eval_archive, resolve_checkpoint  # noqa: E402
from raysys.train.export import load_model  # noqa: E402

CS = (0.01, 0.1, 1.0, 10.0, 100.0)


def out_of_fold(clf, x: np.ndarray, y: np.ndarray, folds) -> np.ndarray:
    predicted = np.empty_like(y)
    for train, test in folds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = make_pipeline(StandardScaler(), clf).fit(x[train], y[train])
        predicted[test] = model.predict(x[test])
    return predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--archive", required=True)
    parser.add_argument("--label", default="label")
    args = parser.parse_args()
    model, meta = load_model(resolve_checkpoint(args.checkpoint).model_dir)
    pipe = open_eval_archive(args.archive, meta)
    frame = entity_frame(pipe, "all")
    y = pipe.entities.select("all").labels(pipe.info)[args.label].to_numpy()
    trained = embed_models(pipe, frame, {"trained": (model, meta)}, 64)["trained"]
    classic = classic_spaces(pipe, frame, ["audio"], pipe.cfg.sample_rate)
    keep = trained.present["audio"] & classic.present["audio"] & (y != None)  # noqa: E711
    spaces = {"trained": trained.embeddings["audio"][keep],
              "classic": classic.embeddings["audio"][keep]}
    spaces["trained + classic"] = np.hstack(list(spaces.values()))
    y = y[keep].astype(str)
    folds = stratified_folds(y, 5, 0)
    print(f"\n{args.label}: {len(y)} entities, {len(set(y))} classes, 5-fold\n")
    print("| space | dims | " + " | ".join(f"logistic C={c:g}" for c in CS)
          + " | SVM C=1 | SVM C=10 |")
    print("|---" * (len(CS) + 4) + "|")
    for name, x in spaces.items():
        accs = [np.mean(out_of_fold(LogisticRegression(C=c, max_iter=3000), x, y, folds) == y)
                for c in CS]
        accs += [np.mean(out_of_fold(SVC(C=c), x, y, folds) == y) for c in (1.0, 10.0)]
        print(f"| {name} | {x.shape[1]} | " + " | ".join(f"{a:.3f}" for a in accs) + " |")
    for name, x in spaces.items():
        predicted = out_of_fold(LogisticRegression(C=1.0, max_iter=3000), x, y, folds)
        pairs = Counter((t, p) for t, p in zip(y, predicted, strict=True) if t != p).most_common(6)
        print(f"\n{name}, most frequent confusions (true -> predicted: count): "
              + "; ".join(f"{t} -> {p}: {c}" for (t, p), c in pairs))


if __name__ == "__main__":
    main()
