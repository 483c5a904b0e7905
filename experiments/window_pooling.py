"""Does the way a clip's windows are embedded and pooled change the main-label probes?
(issue 14, goal 1)

    python experiments/window_pooling.py --archive ARCHIVE --runs RUN... [--hops 1.0 0.5]

`raysys evaluate` embeds a clip as `raysys embed` does: windows of the model's clip length,
not overlapping (hop = clip length), mean-pooled. For each trained run (one per seed) this
embeds every entity with each window hop in `--hops` (seconds) and pools the windows of the
invariant head and of the backbone two ways: `mean` (the head re-normalised, as embed does)
and `mean+std` (the windows' mean and spread concatenated, as the classic features pool their
frames). Each is measured with the protocol's classifiers: k-fold logistic and nearest
centre, and the logistic probe with K labels per class (eval.labels_per_class's draws).
Prints mean ± 95% t-interval over runs per setting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from seedstats import over_seeds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysys.embed.config import AudioWindows  # noqa: E402
from raysys.embed.embedder import audio_inputs, audio_layout  # noqa: E402
from raysys.embed.plan import Export  # noqa: E402
from raysys.embed.spaces import encode_views, entity_frame, preprocess  # noqa: E402
from raysys.eval.protocol import (  # noqa: E402
    kfold_classification,
    labels_per_class_classification,
)
from raysys.evaluate import open_eval_archive  # noqa: E402
from raysys.train.export import load_model  # noqa: E402

SPACES = ("invariant", "backbone")
BUDGETS = (5, 10, 20)


def pooled_windows(net, meta, batches) -> dict[tuple[str, str], dict[int, np.ndarray]]:
    """(space, pooling) -> entity index -> pooled vector, over preprocessed batches."""
    out: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    start = 0
    for batch in batches:
        ok = np.asarray(batch["error.audio"], dtype=object) == ""
        rows, x, counts = audio_inputs(batch, ok, audio_layout(meta))
        if rows:
            with torch.no_grad():
                per_window = encode_views(net.eval(), "audio", x[:, None])
            for space in SPACES:
                for i, w in zip(rows, torch.split(per_window[space], counts), strict=True):
                    mean = w.mean(0)
                    spread = torch.cat([mean, w.std(0, unbiased=False)])
                    if space == "invariant":  # a head is re-normalised after pooling, as embed does
                        mean = F.normalize(mean, dim=-1)
                    out.setdefault((space, "mean"), {})[start + i] = mean.numpy()
                    out.setdefault((space, "mean+std"), {})[start + i] = spread.numpy()
        start += len(batch["key"])
    return out


def measure(vectors: dict[int, np.ndarray], labels: np.ndarray) -> dict[str, dict]:
    index = np.array(sorted(vectors))
    x, y = np.stack([vectors[i] for i in index]), labels[index]
    kfold = kfold_classification(x, y, classifiers=("logistic", "ncc"))
    budget = labels_per_class_classification(x, y, budgets=BUDGETS, draws=10,
                                             classifiers=("logistic",))["by_k"]
    got = {"k-fold logistic": kfold["logistic"], "k-fold ncc": kfold["ncc"]}
    got.update({f"logistic, {k}/class": budget[str(k)]["logistic"] for k in BUDGETS
                if "logistic" in budget[str(k)]})
    return got


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archive", required=True)
    p.add_argument("--runs", nargs="+", required=True, help="trained run folders (one a seed)")
    p.add_argument("--hops", nargs="+", type=float, default=[1.0, 0.5, 0.25])
    p.add_argument("--label", default="label")
    args = p.parse_args()
    torch.set_num_threads(2)
    results: dict[str, dict[str, list]] = {}
    for run in args.runs:
        net, meta = load_model(run)
        pipe = open_eval_archive(args.archive, meta)
        frame = entity_frame(pipe, "all")
        labels = np.asarray(pipe.entities.select("all").labels(pipe.info)[args.label])
        data = Export(b"", meta).data_config(list(net.modalities))
        for hop in args.hops:
            batches = preprocess(pipe, data, meta.get("tabular_stats"), frame, 64,
                                 AudioWindows(hop_seconds=hop))
            for (space, pooling), vectors in pooled_windows(net, meta, batches).items():
                setting = f"hop {hop:g} s, {space}, {pooling}"
                for measure_name, cell in measure(vectors, labels).items():
                    results.setdefault(setting, {}).setdefault(measure_name, []).append(cell)
                print(f"[window_pooling] {run}: {setting} done", file=sys.stderr, flush=True)
    names = list(next(iter(results.values())))
    print("| setting | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for setting, cells in results.items():
        print(f"| {setting} | " + " | ".join(over_seeds(cells[n]) for n in names) + " |")


if __name__ == "__main__":
    main()
