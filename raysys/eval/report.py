"""The evaluation report: `report.md` plus PNG plots, rendered from an `eval.json` dict.

Pure rendering (numpy + matplotlib's Agg canvas, no pyplot state, no Ray). `write_report`
lists every plot it wrote; a plot whose data is missing is replaced by a sentence saying why.

    plots = write_report(out_dir, report, history=records, projections={...})
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

SIDES = (("trained", "trained"), ("random_init", "random init"))
LOSS_TERMS = ("loss", "binary", "continuous", "loev", "cola")


def _figure(width: float = 6.4, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number, or the reason it is missing (`skipped`, `n/a`)."""
    if isinstance(value, bool) or value is None:
        return "n/a"
    if isinstance(value, int | float):
        return format(value, spec)
    if isinstance(value, Mapping) and "skipped" in value:
        return "skipped"
    return str(value)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# -- projections --------------------------------------------------------------------------------

def project_2d(x: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """`[N, 2]`: the first two principal components (centred SVD), or t-SNE (scikit-learn,
    perplexity capped below N)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 3:
        raise ValueError(f"a 2-D projection needs >= 3 points, got {x.shape[0]}")
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (x.shape[0] - 1) / 3))
        return TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(x)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = centred @ vt[:2].T
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def plot_projection(points: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path,
                    title: str) -> Path:
    """One panel per side: `{side: (xy [N, 2], labels [N])}`, coloured by class."""
    fig = _figure(5.0 * len(points), 4.5)
    for i, (side, (xy, labels)) in enumerate(points.items()):
        ax = fig.add_subplot(1, len(points), i + 1)
        classes, idx = np.unique(labels, return_inverse=True)
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=idx, cmap="tab10" if classes.size <= 10 else
                        "tab20", s=14, vmin=0, vmax=max(classes.size - 1, 1))
        ax.set_title(f"{side}: {title}")
        ax.set_xticks([])
        ax.set_yticks([])
        if classes.size <= 20:
            handles, _ = sc.legend_elements(num=list(range(classes.size)))
            ax.legend(handles, [str(c) for c in classes], fontsize=6, loc="best",
                      title="class", title_fontsize=7)
    return _save(fig, path)


# -- curves over training steps -----------------------------------------------------------------

def training_records(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for r in history if "loss" in r), key=lambda r: r["step"])


def eval_records(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for r in history if any(k.startswith("eval/") for k in r)),
                  key=lambda r: r["step"])


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_loss_terms(history: list[dict[str, Any]], path: Path) -> Path | None:
    """The total loss and each term against the step; None without training records."""
    records = training_records(history)
    if not records:
        return None
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for term in LOSS_TERMS:
        steps, values = _series(records, term)
        if steps:
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=term,
                    linewidth=2.0 if term == "loss" else 1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss terms over training")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_clustering_over_steps(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Out-of-fold NCC accuracy and CDNV (log scale) per label set against the step; None without
    in-training evaluation records."""
    records = eval_records(history)
    sets = sorted({k.split("/")[1] for r in records for k in r
                   if k.startswith("eval/") and k.count("/") == 2})
    if not records or not sets:
        return None
    fig = _figure(10.0, 4.0)
    for i, (metric, title) in enumerate((("ncc", "NCC accuracy (held-out, out of fold)"),
                                         ("cdnv", "CDNV (lower = better separated)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for name in sets:
            steps, values = _series(records, f"eval/{name}/{metric}")
            if steps:
                ax.plot(steps, values, marker="o", label=name,
                        linestyle="--" if name == "random" else "-")
        if metric == "cdnv":
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.legend(fontsize=8)
    return _save(fig, path)


# -- few-shot -----------------------------------------------------------------------------------

def ci_cell(d: Any) -> str:
    """`mean ± ci95`, or why it is missing."""
    if isinstance(d, Mapping) and "mean" in d:
        return f"{d['mean']:.3f} ± {d.get('ci95', 0.0):.3f}"
    if isinstance(d, Mapping) and "skipped" in d:
        return "skipped"
    return "n/a"


def plot_few_shot(report: dict[str, Any], label_set: str, space: str, path: Path
                  ) -> Path | None:
    """Accuracy against K with 95% CI error bars, one line per model or baseline (skipped K
    left out); None when every K was skipped."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    drawn, ways, ks_all = False, None, set()
    for name, result in report["models"].items():
        curve = result["spaces"].get(space, {}).get("few_shot", {}).get(label_set, {})
        points = [(int(k), v["mean"], v["ci95"]) for k, v in curve.get("by_k", {}).items()
                  if "mean" in v]
        if points:
            ks, means, cis = zip(*sorted(points), strict=True)
            ax.errorbar(ks, means, yerr=cis, marker="o", capsize=4, label=name)
            drawn, ways = True, curve["ways"]
            ks_all.update(ks)
    if not drawn:
        return None
    ax.axhline(1.0 / ways, color="grey", linestyle=":", label="chance")
    ax.set_xscale("log")
    ks = sorted(ks_all)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlim(min(ks) / 1.3, max(ks) * 1.3)
    ax.set_xlabel("K (shots per class)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{ways}-way few-shot, '{label_set}', {space} space (95% CI)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_depth(report: dict[str, Any], path: Path) -> Path | None:
    """Nearest-centre accuracy against depth, one panel per modality: each label set (and
    the random-label control) for the trained model (solid) and its random init (dashed)."""
    depth = {n: m.get("depth", {}) for n, m in report["models"].items() if m.get("depth")}
    if "trained" not in depth:
        return None
    modalities = list(depth["trained"])
    fig = _figure(width=4.2 * len(modalities))
    for i, modality in enumerate(modalities):
        ax = fig.add_subplot(1, len(modalities), i + 1)
        layers = list(depth["trained"][modality])
        sets = list(next(iter(depth["trained"][modality].values()), {}))
        for j, label in enumerate(sets):
            for name, style in (("trained", "-"), ("random_init", "--")):
                rows = depth.get(name, {}).get(modality, {})
                ys = [rows.get(layer, {}).get(label, {}).get("ncc", {}).get("mean", np.nan)
                      for layer in layers]
                ax.plot(range(len(layers)), ys, style, marker="o", color=f"C{j}",
                        label=f"{label} ({name.replace('_', ' ')})")
        ax.set_xticks(range(len(layers)), layers, rotation=30, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("nearest-centre accuracy (k-fold)")
        ax.set_title(f"{modality}: clustering by depth")
        ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def depth_table(report: dict[str, Any]) -> str:
    """Rows: model, modality, layer (shallowest first); per label set NCC / CDNV."""
    rows, sets = [], []
    for name, result in report["models"].items():
        for modality, layers in result.get("depth", {}).items():
            for layer, cells in layers.items():
                sets = sets or list(cells)
                rows.append([name, modality, layer, *[
                    "skipped" if "skipped" in cells.get(s, {"skipped": 1})
                    else f"{fmt(cells[s]['ncc'].get('mean'))} / {fmt(cells[s]['cdnv'])}"
                    for s in sets]])
    return table(["model", "modality", "layer", *sets], rows) if rows else \
        "No layered encoder evaluated."


# -- tables -------------------------------------------------------------------------------------

def verdict_table(report: dict[str, Any]) -> str:
    """The one-screen summary: per label set and space, NCC / logistic of every model."""
    names = list(report["models"])
    rows = []
    for row in report["verdict"]:
        pair = lambda c: f"{ci_cell(c.get('ncc'))} / {ci_cell(c.get('logistic'))}"  # noqa: E731
        cells = [pair(row["cells"][n]) if "skipped" not in row["cells"][n] else "skipped"
                 for n in names]
        verdicts = [" / ".join(row[f"vs_{b}"].values()) if f"vs_{b}" in row else "n/a"
                    for b in ("random_init", "classic")]
        rows.append([row["label"], row["space"], *cells, *verdicts])
    return table(["label", "space", *[f"{n}: NCC / logistic" for n in names],
                  "trained vs random init", "trained vs classic"], rows)


def classification_table(report: dict[str, Any]) -> str:
    names = list(report["models"])
    rows = []
    for label in report["label_sets"]:
        for space in report["models"]["trained"]["spaces"]:
            blocks = {n: report["models"][n]["spaces"].get(space, {}).get("labels", {})
                      .get(label, {}) for n in names}
            first = blocks["trained"]
            if "skipped" in first:
                rows.append([label, space, "", f"skipped: {first['skipped']}",
                             *[""] * (len(names) - 1)])
                continue
            for clf in ("ncc", "logistic", "knn"):
                rows.append([label, space, clf, *[ci_cell(blocks[n].get(clf)) for n in names]])
            rows.append([label, space, "n / classes / chance",
                         f"{first.get('n')} / {first.get('classes')} / "
                         f"{fmt(first.get('chance'))}", *[""] * (len(names) - 1)])
    return table(["label", "space", "classifier", *names], rows)


def labels_per_class_table(report: dict[str, Any]) -> str:
    """Per label set, space and K: logistic / nearest-centre accuracy of each model with K
    labelled entities per class (the same draws for every model)."""
    names = list(report["models"])
    rows = []
    for label in report["label_sets"]:
        for space in report["models"]["trained"]["spaces"]:
            budgets = {n: report["models"][n]["spaces"].get(space, {})
                       .get("labels_per_class", {}).get(label, {}).get("by_k", {})
                       for n in names}
            for k, first in budgets["trained"].items():
                if "skipped" in first:
                    rows.append([label, space, k, "", f"skipped: {first['skipped']}",
                                 *[""] * (len(names) - 1)])
                    continue
                cells = [f"{ci_cell(budgets[n].get(k, {}).get('logistic'))} / "
                         f"{ci_cell(budgets[n].get(k, {}).get('ncc'))}" for n in names]
                rows.append([label, space, k, f"{first['classes']} / {first['test']} / "
                             f"{fmt(first['chance'])}", *cells])
    return table(["label", "space", "K", "classes / tested / chance", *names], rows) if rows \
        else "Off (`eval.labels_per_class` is empty) or no label set allows it."


def few_shot_table(report: dict[str, Any]) -> str:
    names = list(report["models"])
    rows = []
    for label in report["label_sets"]:
        for space in report["models"]["trained"]["spaces"]:
            curves = {n: report["models"][n]["spaces"].get(space, {}).get("few_shot", {})
                      .get(label, {}) for n in names}
            ks = list(curves["trained"].get("by_k", {}))
            for k in ks:
                rows.append([label, space, str(curves["trained"].get("ways", "")), k,
                             *[ci_cell(curves[n].get("by_k", {}).get(k)) for n in names]])
    return table(["label", "space", "ways", "K", *names], rows) if rows else \
        "No label set allows few-shot episodes."


def retrieval_table(report: dict[str, Any]) -> str:
    rows = []
    for name, result in report["models"].items():
        cross = result["retrieval"]["cross_modal"]
        if "skipped" in cross:
            rows.append([name, "cross-modal", "skipped", "", "", "", ""])
        for pair, r in ({} if "skipped" in cross else cross).items():
            if "skipped" in r:
                rows.append([name, pair, "skipped", "", "", "", ""])
                continue
            rows.append([name, pair, *[fmt(r.get(c)) for c in ("R@1", "R@5", "R@10", "mAP@10")],
                         fmt(r.get("chance_R@10"))])
        graded = {"fused": result["retrieval"].get("relevance"),
                  **result["retrieval"].get("relevance_by_modality", {})}
        for space, rel in graded.items():
            if rel is not None:
                rows.append([name, f"graded relevance ({space})",
                             *[fmt(rel.get(c)) for c in ("R@1", "R@5", "R@10", "mAP@10")],
                             f"nDCG@10 {fmt(rel.get('nDCG@10'))}" if "nDCG@10" in rel
                             else f"skipped: {rel.get('skipped')}"])
    return table(["model", "task", "R@1", "R@5", "R@10", "mAP@10", "chance R@10 / nDCG"], rows)


def probe_table(report: dict[str, Any]) -> str:
    names = list(report["models"])
    by_model = {n: {(r["modality"], r["space"], r["factor"]): r
                    for r in report["models"][n]["probes"]} for n in names}
    rows = []
    for r in report["models"]["trained"]["probes"]:
        key = (r["modality"], r["space"], r["factor"])
        rows.append([r["modality"], r["space"], r["factor"], r.get("metric", ""),
                     fmt(r.get("chance")), fmt(r.get("agreement_chance")),
                     *[_probe_cell(by_model[n].get(key)) for n in names]])
    return table(["modality", "space", "factor", "metric", "chance", "neighbours: chance",
                  *names], rows) if rows else "No factor to probe."


def _probe_cell(row: dict[str, Any] | None) -> str:
    """`value ± ci (Acc1 ...); neighbours a`: the probe, then the neighbour agreement."""
    if row is None or "skipped" in row:
        return "skipped"
    acc1 = f" (Acc1 {ci_cell(row['acc1'])})" if row.get("acc1") else ""
    agreement = row.get("agreement")
    near = f"; neighbours {fmt(agreement)}" if isinstance(agreement, float) else ""
    return ci_cell(row.get("value")) + acc1 + near


def sensitivity_table(report: dict[str, Any]) -> str:
    """Rows: transform; columns: each model's heads (mean cosine distance to the clip)."""
    blocks = {n: m["sensitivity"] for n, m in report["models"].items()
              if "distance" in m.get("sensitivity", {})}
    if not blocks:
        return "Not measured (no audio encoder, or `eval.sensitivity_clips=0`)."
    columns = [(n, h) for n, b in blocks.items() for h in next(iter(b["distance"].values()))]
    rows = next(iter(blocks.values()))["distance"]
    return table(["", *[f"{n}: {h}" for n, h in columns]],
                 [[row, *[fmt(blocks[n]["distance"][row][h]) for n, h in columns]]
                  for row in rows])


# -- the report ---------------------------------------------------------------------------------

def _curves_section(out_dir: Path, report: dict[str, Any], history: list[dict[str, Any]]
                    ) -> tuple[list[str], list[Path]]:
    lines, plots = ["## Over training", ""], []
    if report.get("run") is None:
        return lines + ["The checkpoint is not inside a run folder (no metrics.jsonl next to "
                        "it): no curves over training steps.", ""], plots
    loss = plot_loss_terms(history, out_dir / "loss_terms.png")
    if loss is None:
        lines += ["metrics.jsonl holds no training records.", ""]
    else:
        plots.append(loss)
        lines += ["Loss terms over steps:", "", f"![loss terms]({loss.name})", ""]
    clustering = plot_clustering_over_steps(history, out_dir / "clustering_over_steps.png")
    if clustering is None:
        lines += ["No in-training evaluation records in metrics.jsonl (the run had "
                  "`eval.every=0`): no NCC/CDNV curves over steps.", ""]
    else:
        plots.append(clustering)
        lines += ["NCC (held-out test) and CDNV over steps, per label set; `random` is the "
                  "random-label control:", "", f"![NCC and CDNV]({clustering.name})", ""]
    return lines, plots


def _depth_section(out_dir: Path, report: dict[str, Any], plots: list[Path]) -> list[str]:
    lines = ["## Clustering by depth", "",
             "Nearest-centre accuracy (k-fold) / CDNV (lower = tighter classes) of each trunk "
             "layer's pooled output, the backbone and the invariant head, shallowest first; "
             "`random` is the main label permuted (should stay near chance).", "",
             depth_table(report), ""]
    path = plot_depth(report, out_dir / "depth.png")
    if path is not None:
        plots.append(path)
        lines += ["![depth](depth.png)", ""]
    return lines


def _few_shot_section(out_dir: Path, report: dict[str, Any]) -> tuple[list[str], list[Path]]:
    lines, plots = ["## Few-shot accuracy against K", ""], []
    for label in report["label_sets"]:
        path = plot_few_shot(report, label, "fused", out_dir / f"few_shot_{label}.png")
        if path is None:
            lines += [f"Label set `{label}`: every K skipped (classes too small).", ""]
        else:
            plots.append(path)
            lines += [f"![few-shot {label}]({path.name})", ""]
    lines += ["Prototype classifier on z-scored, L2-normalised features; episodes drawn from "
              "every labelled entity; mean over episodes ± 95% CI. A K larger than the classes "
              "allow is skipped (the reason is in eval.json).", "", few_shot_table(report), "",
              *supervised_lines(report)]
    return lines, plots


def supervised_lines(report: dict[str, Any]) -> list[str]:
    """The supervised-from-scratch baseline beside the prototype curve of the same label set
    and space (trained / random init / classic); nothing when it was not run."""
    blocks = report["models"]["trained"].get("supervised_few_shot", {})
    lines = []
    for label, got in blocks.items():
        if "skipped" in got:
            lines += [f"Supervised from scratch ({label}): skipped, {got['skipped']}.", ""]
            continue
        space = got["space"]
        rows = []
        for k, cell in got["by_k"].items():
            proto = [ci_cell(m["spaces"].get(space, {}).get("few_shot", {}).get(label, {})
                             .get("by_k", {}).get(k)) for m in report["models"].values()]
            rows.append([k, ci_cell(cell), *proto])
        lines += [f"Supervised from scratch on `{label}`, {space}: the audio encoder trained "
                  f"on each episode's K shots alone ({got['epochs']} epochs, at least "
                  f"{got['min_steps']} Adam steps, no augmentation, fresh initialisation per "
                  "episode), beside each model's "
                  f"prototype accuracy in the {space} space; {got['ways']}-way.", "",
                  table(["K", "supervised from scratch",
                         *[f"{n} (prototype)" for n in report["models"]]], rows), ""]
    return lines


def _header(report: dict[str, Any]) -> list[str]:
    p = report["protocol"]
    return [
        f"# Evaluation of model {report['model_id']} (step {report['step']})", "",
        f"- model: `{report['model']}`",
        f"- archive: `{report['archive']}`, split `{report['split']}`: "
        f"{report['entities']} entities",
        f"- protocol: stratified {p['folds']}-fold over every labelled entity (seed "
        f"{p['seed']}), every entity predicted once; classifiers on z-scored features; "
        "accuracy ± 95% CI (binomial); few-shot K in "
        f"{p['few_shot_shots']} from every labelled entity",
        f"- baselines: `random_init` = the same architecture at its random initialisation "
        f"(`torch.manual_seed({report['baseline_seed']})`); `classic` = hand-crafted features "
        "(MFCC/log-mel statistics, image thumbnails and histograms, log column statistics)",
        f"- label sets: {report['label_sets']}; factors: {report['factor_kinds']}",
        f"- took {report.get('seconds', 'n/a')} s", "",
    ]


def write_report(out_dir: Path, report: dict[str, Any], *, history: list[dict[str, Any]],
                 projections: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 method: str = "pca", seed: int = 0) -> list[Path]:
    """Write the PNG plots and report.md into `out_dir`; returns the plots written."""
    out_dir = Path(out_dir)
    lines = _header(report) + [
        "## Verdict", "",
        "Per label set and embedding space: nearest-centre / logistic-probe accuracy ± 95% CI, "
        "and whether the trained model is better or worse than each baseline outside the CI "
        "(|a - b| > sqrt(ci_a² + ci_b²)), for NCC / logistic.", "",
        verdict_table(report), "",
        "## Classification (k-fold, every classifier)", "", classification_table(report), "",
        "## With K labels per class", "",
        "Logistic probe / nearest centre (z-scored, as above) fitted on K labelled entities of "
        "each class that has more than K, tested on all its other entities; mean ± 95% "
        "t-interval over `eval.label_draws` draws, the same draws for every model. k-fold "
        "above trains on (folds − 1) / folds of every class.", "",
        labels_per_class_table(report), "",
    ]
    few, plots = _few_shot_section(out_dir, report)
    lines += few
    lines += ["## Factor probes (backbone and every head)", "",
              "Logistic-probe accuracy (categorical factors) or ridge R² (continuous, the ridge "
              "strength chosen on the training folds; tempo in log2 BPM, Acc1 = within ±4 %), "
              "k-fold, per modality and probe space; then the neighbour agreement: the share "
              "of each entity's `eval.agreement_k` nearest neighbours (cosine) with the same "
              "factor (tempo within ±4 %), beside its chance level.", "",
              probe_table(report), "",
              *_depth_section(out_dir, report, plots),
              "## Retrieval", "", "Cross-modal: the same entity's other modality among all "
              "entities with both. Graded relevance (in the fused space, and in each "
              "modality's own space when there are several): each query's rated candidates "
              "ranked, nDCG@10 on the ratings and R@k / mAP@10 with ratings >= 50 as "
              "positives; the queries are the entities training held out "
              "(`data.eval_fraction`), whose ratings the ListNet term never saw.",
              "", retrieval_table(report), "",
              "## Augmentation sensitivity (audio heads)", "",
              "Mean cosine distance between a clip's embedding and that of the same clip time-"
              "stretched or pitch-shifted (the training's own augmentation functions), per "
              "head; `other clips` is the distance between different clips, the scale. The "
              "vocoder at rate 1 is a control (should be ~0). A LOEV head for k should move "
              "further under k than the invariant head.", "",
              sensitivity_table(report), ""]
    curves, curve_plots = _curves_section(out_dir, report, history)
    lines += curves
    plots += curve_plots
    try:
        points = {name: (project_2d(projections[side][0], method, seed), projections[side][1])
                  for side, name in SIDES}
        path = plot_projection(points, out_dir / "projection.png", method.upper())
        plots.append(path)
        lines += ["## 2-D projection", "", f"{method.upper()} of the fused embeddings, "
                  "coloured by the main label set:", "", f"![projection]({path.name})", ""]
    except ValueError as e:
        lines += ["## 2-D projection", "", f"Skipped: {e}", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    return plots
