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
RETRIEVAL_COLUMNS = ("R@1", "R@5", "R@10", "mAP@10", "nDCG@10")


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
    """NCC test accuracy and CDNV (log scale) per label set against the step; None without
    in-training evaluation records."""
    records = eval_records(history)
    sets = sorted({k.split("/")[1] for r in records for k in r
                   if k.startswith("eval/") and k.count("/") == 2})
    if not records or not sets:
        return None
    fig = _figure(10.0, 4.0)
    for i, (metric, title) in enumerate((("ncc_test", "NCC accuracy (held-out test)"),
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

def plot_few_shot(report: dict[str, Any], label_set: str, path: Path) -> Path | None:
    """Accuracy against K with 95% CI error bars, trained vs random init (skipped K left out);
    None when every K was skipped."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    drawn = False
    for side, name in SIDES:
        curve = report[side]["few_shot"].get(label_set, {})
        points = [(int(k), v["mean"], v["ci95"]) for k, v in curve.get("by_k", {}).items()
                  if "mean" in v]
        if points:
            ks, means, cis = zip(*sorted(points), strict=True)
            ax.errorbar(ks, means, yerr=cis, marker="o", capsize=4, label=name)
            drawn = True
    if not drawn:
        return None
    curve = report["trained"]["few_shot"][label_set]
    ax.axhline(1.0 / curve["ways"], color="grey", linestyle=":", label="chance")
    ax.set_xscale("log")
    ks = sorted(int(k) for k in curve["by_k"])
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlim(min(ks) / 1.3, max(ks) * 1.3)
    ax.set_xlabel("K (shots per class)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{curve['ways']}-way few-shot, label set '{label_set}' (95% CI)")
    ax.legend(fontsize=8)
    return _save(fig, path)


# -- tables -------------------------------------------------------------------------------------

def label_table(report: dict[str, Any]) -> str:
    header = ["label set", "metric", "trained", "random init"]
    rows = []
    for name, block in report["trained"]["labels"].items():
        other = report["random_init"]["labels"].get(name, {})
        if "skipped" in block:
            rows.append([name, "skipped", block["skipped"], fmt(other.get("skipped"))])
            continue
        for metric in ("ncc_train", "ncc_test", "cdnv", "knn", "linear_probe"):
            if metric in block:
                rows.append([name, metric, fmt(block[metric]), fmt(other.get(metric))])
    return table(header, rows)


def few_shot_table(report: dict[str, Any]) -> str:
    rows = []
    for name, curve in report["trained"]["few_shot"].items():
        base = report["random_init"]["few_shot"].get(name, {}).get("by_k", {})
        for k, v in curve.get("by_k", {}).items():
            b = base.get(k, {})
            cell = lambda d: (f"{d['mean']:.3f} ± {d['ci95']:.3f}" if "mean" in d  # noqa: E731
                              else f"skipped: {d.get('skipped', 'n/a')}")
            rows.append([name, str(curve["ways"]), k, str(v.get("queries", "")), cell(v),
                         cell(b)])
    return table(["label set", "ways", "K", "queries", "trained", "random init"], rows)


def retrieval_table(report: dict[str, Any]) -> str:
    rows = []
    t, r = report["trained"]["retrieval"], report["random_init"]["retrieval"]
    tasks = [(f"cross-modal {pair}", t["cross_modal"][pair], r["cross_modal"].get(pair, {}))
             for pair in t.get("cross_modal", {})]
    if "relevance" in t:
        tasks.append(("graded relevance (fused)", t["relevance"], r.get("relevance", {})))
    for task, a, b in tasks:
        if "skipped" in a:
            rows.append([task, *["skipped"] * (2 * len(RETRIEVAL_COLUMNS))])
            continue
        rows.append([task, *[fmt(a.get(c)) for c in RETRIEVAL_COLUMNS],
                     *[fmt(b.get(c)) for c in RETRIEVAL_COLUMNS]])
    header = ["task", *[f"{c} (trained)" for c in RETRIEVAL_COLUMNS],
              *[f"{c} (random)" for c in RETRIEVAL_COLUMNS]]
    return table(header, rows) if rows else "No retrieval task applies to this split."


def probe_table(report: dict[str, Any]) -> str:
    t, r = report["trained"]["subspace_probes"], report["random_init"]["subspace_probes"]
    if isinstance(t, Mapping):
        return f"Subspace probes skipped: {t.get('skipped')}"
    base = {(row["space"], row["factor"]): row for row in r} if isinstance(r, list) else {}
    rows = []
    for row in t:
        b = base.get((row["space"], row["factor"]), {})
        rows.append([row["space"], row["factor"], row["kind"], row["probe_metric"],
                     fmt(row["probe"]), fmt(b.get("probe")), fmt(row["probe_chance"]),
                     fmt(row["agreement"]), fmt(b.get("agreement")),
                     fmt(row["agreement_chance"])])
    return table(["space", "factor", "kind", "probe metric", "probe (trained)", "probe (random)",
                  "probe chance", "kNN agreement (trained)", "agreement (random)",
                  "agreement chance"], rows)


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


def _few_shot_section(out_dir: Path, report: dict[str, Any]) -> tuple[list[str], list[Path]]:
    lines, plots = ["## Few-shot accuracy against K", ""], []
    for name in report["trained"]["few_shot"]:
        path = plot_few_shot(report, name, out_dir / f"few_shot_{name}.png")
        if path is None:
            lines += [f"Label set `{name}`: every K skipped (classes too small).", ""]
        else:
            plots.append(path)
            lines += [f"![few-shot {name}]({path.name})", ""]
    lines += ["Prototype classifier, mean over episodes ± 95% CI; a K larger than the "
              "classes allow is skipped (the reason is in eval.json).", "",
              few_shot_table(report), ""]
    return lines, plots


def write_report(out_dir: Path, report: dict[str, Any], *, history: list[dict[str, Any]],
                 projections: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 method: str = "pca", seed: int = 0) -> list[Path]:
    """Write the PNG plots and report.md into `out_dir`; returns the plots written."""
    out_dir = Path(out_dir)
    t = report["trained"]
    lines = [
        f"# Evaluation of model {report['model_id']} (step {report['step']})", "",
        f"- model: `{report['model']}`", f"- archive: `{report['archive']}`, split "
        f"`{report['split']}`: {report['entities']} entities",
        f"- baseline: the same architecture at its random initialisation "
        f"(`torch.manual_seed({report['baseline_seed']})`), on the same entities",
        f"- space: {t['space']} invariant embeddings (mean of the present modalities), "
        f"{t['entities']} entities; split {t['split']['train']} train / "
        f"{t['split']['test']} test, {t['split']['how']}", "",
        "## Clustering and classification (trained vs random init)", "",
        "CDNV: lower = better separated; `<set>/random` rows are the random-label control.", "",
        label_table(report), "",
    ]
    curves, plots = _curves_section(out_dir, report, history)
    few, few_plots = _few_shot_section(out_dir, report)
    lines += curves + few
    plots += few_plots
    lines += ["## Retrieval", "", "Cross-modal: the same entity's other modality among all "
              "entities with both (R@k = hit in top k); graded relevance: nDCG@10 of the rated "
              "candidates.", "", retrieval_table(report), "",
              "## Subspace probes (LOEV heads vs backbone)", "", probe_table(report), ""]
    try:
        points = {name: (project_2d(projections[side][0], method, seed), projections[side][1])
                  for side, name in SIDES}
        path = plot_projection(points, out_dir / "projection.png", method.upper())
        plots.append(path)
        lines += ["## 2-D projection", "", f"{method.upper()} of the fused embeddings, "
                  "coloured by the first label set:", "", f"![projection]({path.name})", ""]
    except ValueError as e:
        lines += ["## 2-D projection", "", f"Skipped: {e}", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    return plots
