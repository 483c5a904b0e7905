"""`ContrastiveObjective`: the configured terms on an `EncodedViews`, each reported by name.

    loss = w_bin * binary + w_cont * continuous + w_loev * loev + w_cola * cola

- binary: multi-view InfoNCE over slot pairs, cosine / τ on the invariant head (multiview.py),
  optionally with each query's nearest other entities as extra positives
  (`objective.neighbour_positives`);
  when the model has a `cross` head (`model.cross_head`), the cross-modal pairs are scored on
  it instead, so only same-modality pairs shape the invariant head;
- continuous: ListNet over the batch's graded-relevance lists, invariant head (relevance.py);
- loev: weighted mean of the LOEV head losses, `loev/<head>` each (loev.py);
- cola: the multi-view pair loss on the `cola` head with bilinear scores `S = E_a W E_bᵀ`,
  no temperature, `W` a learned d x d matrix of this module.
Terms with weight 0 (or switched off) are not computed and not reported. τ is shared by the
binary and continuous scores, learnable when configured (temperature.py).

Diagnostics (detached): `temperature`, `pool/entities` (pooled entities the keys come from),
`pool/keys` (mean softmax pool size of a binary query, queue included), `binary/pairs`
(existing slot pairs), `binary/<modality pair>`, `continuous/lists` (valid lists).
A NaN or inf in an embedding used by a term makes that term and `loss` NaN (never a finite
value); degenerate batches (no pair, no list, no positive) give 0, attached to the graph.
"""

from __future__ import annotations

import torch
from torch import nn

from raysys.models.config import COLA_HEAD, CROSS_HEAD, INVARIANT_HEAD
from raysys.models.multimodal import EncodedViews
from raysys.objectives.config import ObjectiveConfig
from raysys.objectives.loev import loev_losses
from raysys.objectives.multiview import (
    Negatives,
    NeighbourPositives,
    Scorer,
    SlotPair,
    cosine_scorer,
    multiview_binary,
    slot_pairs,
)
from raysys.objectives.pool import ViewPool, build_pool
from raysys.objectives.relevance import continuous_relevance
from raysys.objectives.temperature import Temperature


def bilinear_scorer(weight: torch.Tensor) -> Scorer:
    """COLA: `s_ij = q_i W k_jᵀ` (a -> b) and `q_i Wᵀ k_jᵀ` for the reverse direction."""
    return lambda q, k, reverse: (q @ (weight.T if reverse else weight), k)


class ContrastiveObjective(nn.Module):
    def __init__(self, cfg: ObjectiveConfig, embed_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.temperature = Temperature(
            cfg.temperature, learnable=cfg.learnable_temperature,
            minimum=cfg.temperature_min, maximum=cfg.temperature_max,
        )  # fmt: skip
        self.cola_weight: nn.Parameter | None = None
        if cfg.cola:
            w = torch.empty(embed_dim, embed_dim)
            self.cola_weight = nn.Parameter(nn.init.xavier_uniform_(w))

    def enabled_terms(self) -> dict[str, float]:
        """{term: weight} of the terms this config computes."""
        c = self.cfg
        terms = {"binary": c.w_bin, "continuous": c.w_cont}
        terms["loev"] = c.w_loev if c.loev.enabled else 0.0
        terms["cola"] = c.w_cola if c.cola else 0.0
        return {k: w for k, w in terms.items() if w > 0}

    def heads_needed(self) -> list[str]:
        terms = self.enabled_terms()
        heads = [INVARIANT_HEAD] if terms.keys() & {"binary", "continuous", "loev"} else []
        if "loev" in terms:
            heads += self.cfg.loev.augmentations
        return heads + ([COLA_HEAD] if "cola" in terms else [])

    def forward(
        self, encoded: EncodedViews, negatives: Negatives | None = None
    ) -> dict[str, torch.Tensor]:
        """All enabled terms, the weighted `loss` and diagnostics (module docstring).

        `negatives`: extra keys (e.g. `EmbeddingQueue.negatives()` of invariant embeddings)
        appended to every binary direction's pool as negatives only.
        """
        heads = self.heads_needed()
        for h in heads:
            if h not in encoded.embeddings:
                raise ValueError(
                    f"objective needs the model head {h!r} (outputs: {sorted(encoded.embeddings)})"
                    "; check model.loev_heads / model.cola against objective.loev / objective.cola"
                )
        terms = self.enabled_terms()
        if "binary" in terms and CROSS_HEAD in encoded.embeddings:
            heads.append(CROSS_HEAD)
        pool = build_pool(encoded, heads, self.cfg.negatives.gather)
        tau = self.temperature()
        out: dict[str, torch.Tensor] = {}
        if "binary" in terms:
            out |= self._binary(encoded, pool, cosine_scorer(tau), negatives)
        if "continuous" in terms:
            out |= self._continuous(encoded, pool, tau)
        if "loev" in terms:
            out |= self._loev(encoded, pool)
        if "cola" in terms:
            assert self.cola_weight is not None
            cola = self._pairs_loss(encoded, pool, COLA_HEAD, bilinear_scorer(self.cola_weight))
            out["cola"] = cola["loss"]
        out["loss"] = sum(w * out[name] for name, w in terms.items())
        out["temperature"] = tau.detach()
        out["pool/entities"] = torch.tensor(float(pool.size), device=tau.device)
        return out

    def _pairs(self, encoded: EncodedViews) -> list[SlotPair]:
        c = self.cfg
        return slot_pairs(
            encoded.modalities, encoded.views_per_modality, c.mode, c.anchor_modality,
            c.pair_weight,
        )  # fmt: skip

    def _pairs_loss(
        self, encoded: EncodedViews, pool: ViewPool, head: str, scorer: Scorer,
        negatives: Negatives | None = None, cross_head: str | None = None,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        c = self.cfg
        cross = (encoded.embeddings[cross_head], pool.emb[cross_head]) if cross_head else None
        nbrs = None
        if head == INVARIANT_HEAD and c.neighbour_positives > 0:
            nbrs = NeighbourPositives(c.neighbour_positives, c.neighbour_weight)
        return multiview_binary(
            encoded.embeddings[head], encoded.present, encoded.entity_id, pool.emb[head], pool,
            self._pairs(encoded), scorer, extra=negatives, chunk_size=c.negatives.chunk_size,
            recompute=c.negatives.chunk_recompute, cross=cross, neighbours=nbrs,
        )  # fmt: skip

    def _binary(
        self, encoded: EncodedViews, pool: ViewPool, scorer: Scorer, negatives: Negatives | None
    ) -> dict[str, torch.Tensor]:
        cross = CROSS_HEAD if CROSS_HEAD in pool.emb else None
        res = self._pairs_loss(encoded, pool, INVARIANT_HEAD, scorer, negatives, cross)
        out = {"binary": res.pop("loss"), "binary/pairs": res.pop("pairs")}
        out["pool/keys"] = res.pop("keys")
        out |= {f"binary/{name}": v for name, v in res.items()}
        return out

    def _continuous(
        self, encoded: EncodedViews, pool: ViewPool, tau: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if encoded.relevance_entity_id is None or encoded.relevance is None:
            raise ValueError("objective.w_cont > 0 but the batch carries no relevance lists")
        mask = encoded.relevance_mask
        if mask is None:
            mask = encoded.relevance_entity_id >= 0
        res = continuous_relevance(
            encoded.embeddings[INVARIANT_HEAD], encoded.present, pool.emb[INVARIANT_HEAD],
            pool.present, pool.entity_id, encoded.relevance_entity_id, encoded.relevance, mask,
            temperature=tau, target_temperature=self.cfg.listnet_target_temperature,
        )  # fmt: skip
        return {"continuous": res["loss"], "continuous/lists": res["lists"]}

    def _loev(self, encoded: EncodedViews, pool: ViewPool) -> dict[str, torch.Tensor]:
        neg = self.cfg.negatives
        res = loev_losses(
            encoded.embeddings, pool.emb, pool, self.cfg.loev, chunk_size=neg.chunk_size,
            recompute=neg.chunk_recompute,
        )  # fmt: skip
        out = {"loev": res.pop("loss")}
        return out | {f"loev/{h}": v for h, v in res.items()}
