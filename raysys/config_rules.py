"""Every rule that spans config sections, in one place: `RaysysConfig`'s validator runs them,
so a broken combination fails wherever a config is built (CLI, job, worker), before Ray starts.

Each rule returns a message naming the dotted keys involved and the fix, or None.
Rules that need the archive (label columns, a held-out split) are not here: they live with
the code that opens the archive (raysys.train.intrain_eval.check).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Rule = Callable[[Any], "str | None"]


def _loev_heads(cfg: Any) -> str | None:
    obj, model, data = cfg.objective, cfg.model, cfg.data
    if not obj.loev.enabled:
        return None
    from raysys.data.augment import AUG_PARAMS  # imports torch: only when LOEV is on
    recorded = {name for m in data.modalities for name in AUG_PARAMS[m]}
    for aug in obj.loev.augmentations:
        if aug not in model.loev_heads:
            return (f"objective.loev.augmentations: {aug!r} has no head; add it to "
                    f"model.loev_heads (now {model.loev_heads})")
        if aug not in recorded:
            return (f"objective.loev.augmentations: {aug!r} is not recorded by data.modalities "
                    f"{data.modalities} (recorded: {sorted(recorded)})")
    views = data.views_per_modality * len(data.modalities)
    if views < 3:
        # head k's positives are views with k applied to neither: with 2 views of an entity, a
        # row that has a positive never holds its own clip with k applied as a negative, so the
        # head never learns to tell them apart (docs/learning.md, session 10)
        return (f"objective.loev: {views} views per entity (data.views_per_modality="
                f"{data.views_per_modality} x {len(data.modalities)} modality) give the "
                f"heads {obj.loev.augmentations} no contrast between a clip and its augmented "
                "self; set data.views_per_modality >= 3 (4 measured: docs/learning.md) or add "
                "a modality")
    return None


def _cola(cfg: Any) -> str | None:
    if cfg.objective.cola and not cfg.model.cola:
        return "objective.cola needs model.cola: true (the COLA head)"
    return None


def _anchor(cfg: Any) -> str | None:
    obj = cfg.objective
    if obj.mode == "anchor" and obj.anchor_modality not in cfg.data.modalities:
        return (f"objective.anchor_modality {obj.anchor_modality!r} is not in "
                f"data.modalities {cfg.data.modalities}")
    return None


def _grad_cache(cfg: Any) -> str | None:
    sub = cfg.objective.negatives.grad_cache_sub_batch
    if sub is not None and sub >= cfg.data.batch_size:
        return (f"objective.negatives.grad_cache_sub_batch ({sub}) >= data.batch_size "
                f"({cfg.data.batch_size}): a micro-batch would be one sub-batch and caching "
                "would only add a second forward; set it below data.batch_size (or null for no "
                "gradient caching)")
    return None


def _momentum(cfg: Any) -> str | None:
    neg = cfg.objective.negatives
    if neg.momentum is not None and not neg.queue_size:
        return ("objective.negatives.momentum: the momentum encoder only produces queue keys; "
                "set objective.negatives.queue_size > 0 (or momentum: null)")
    return None


def _listnet(cfg: Any) -> str | None:
    if cfg.objective.w_cont > 0 and cfg.data.max_candidates < 1:
        return "objective.w_cont: the ListNet term needs data.max_candidates >= 1"
    return None


def _nonfinite(cfg: Any) -> str | None:
    t = cfg.train
    if t.nonfinite == "skip" and t.grad_accum > 1:
        return ("train.nonfinite: 'skip' needs train.grad_accum=1 (a non-finite micro-batch "
                "cannot be taken out of a partly accumulated DeepSpeed step); use "
                "train.nonfinite=stop or train.grad_accum=1")
    return None


def _checkpoint_every(cfg: Any) -> str | None:
    t = cfg.train
    if t.checkpoint_every > t.steps:
        return (f"train.checkpoint_every ({t.checkpoint_every}) > train.steps ({t.steps}): only "
                "the final checkpoint would be written; lower it")
    return None


def _held_out(cfg: Any) -> str | None:
    if cfg.eval.every > 0 and cfg.data.eval_fraction == 0:
        return (f"eval.every ({cfg.eval.every}) > 0 needs held-out entities: raise "
                "data.eval_fraction above 0 (or set eval.every=0)")
    return None


def _local_out(cfg: Any) -> str | None:
    from raysys.data import fs

    if fs.is_remote(cfg.out):
        return (f"out: the run folder must be a local path, got {cfg.out!r} (checkpoints may "
                "go to s3:// via train.storage_path)")
    return None


def _cross_backprop(cfg: Any) -> str | None:
    model = cfg.model
    if model.cross_head and len(cfg.data.modalities) < 2:
        return (f"model.cross_head: data.modalities {cfg.data.modalities} has no cross-modal "
                "pairs for a cross head to learn; drop the key (it is on by default with two "
                "or more modalities)")
    default = type(model).model_fields["cross_backprop"].default
    if not model.cross_head and model.cross_backprop != default:
        return (f"model.cross_backprop={model.cross_backprop} has no effect without a cross "
                f"head (model.cross_head is off with data.modalities {cfg.data.modalities}); "
                "drop the key or set model.cross_head: true")
    return None


RULES: tuple[Rule, ...] = (_cross_backprop, _loev_heads, _cola, _anchor, _grad_cache,
                           _momentum, _listnet, _nonfinite, _checkpoint_every, _held_out,
                           _local_out)


def resolve_defaults(cfg: Any) -> None:
    """Fill the defaults that depend on another section: `model.cross_head` left at None is
    on when the run has two or more modalities (a single modality has no cross pairs); call
    again after changing data.modalities (e.g. the archive lacks a table)."""
    model = cfg.model
    if model.cross_head is None or model._cross_head_auto:
        model._cross_head_auto = True
        model.cross_head = len(cfg.data.modalities) > 1


def cross_section_errors(cfg: Any) -> list[str]:
    """The message of every rule `cfg` (a RaysysConfig) breaks, in rule order."""
    return [message for rule in RULES if (message := rule(cfg))]
