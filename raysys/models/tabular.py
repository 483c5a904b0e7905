"""Tabular encoder over the masked row window of one view.

Input (a dict, leading dims `[N, W]`): `tabular_num [N, W, Fn]` float, `tabular_num_mask
[N, W, Fn]` bool, `tabular_cat [N, W, Fc]` int ids (0 = missing, 1..card_j valid),
`tabular_row_mask [N, W]` bool. Each row becomes
`r = Linear([num * mask, mask, emb_1(cat_1), ..., emb_Fc(cat_Fc)])` of width `hidden`, then
- `mlp`: a 2-layer row MLP, masked mean over real rows, then a Linear+ReLU last stage;
- `transformer`: learned positions + pre-norm TransformerEncoder layers with the padding rows
  as masked keys; the last layer is the last stage, followed by the masked mean.
A window without any real row pools to a zero vector (no NaN). Output `[N, hidden]`.
Memory per view: O(W * hidden) (mlp) or O(W^2 * heads + W * hidden) (transformer).
"""

from __future__ import annotations

import torch
from torch import nn

from raysys.models.base import StagedEncoder
from raysys.models.config import TabularEncoderConfig

Tokens = dict[str, torch.Tensor]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x [N, W, H]` over rows where `mask [N, W]`; zeros where no row is real."""
    m = mask.unsqueeze(-1).to(x.dtype)
    total = torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x)).sum(1)
    return total / m.sum(1).clamp(min=1.0)


class RowEmbedding(nn.Module):
    """One vector per row from its numbers, their observed-mask and its category ids."""

    def __init__(self, num_features: int, cardinalities: list[int], cat_dim: int, hidden: int):
        super().__init__()
        if num_features < 0 or any(c < 1 for c in cardinalities):
            raise ValueError(
                f"tabular inputs: need num_features >= 0 and cardinalities >= 1 "
                f"(got {num_features}, {cardinalities})"
            )
        if num_features == 0 and not cardinalities:
            raise ValueError("tabular inputs: no numeric and no categorical features")
        self.num_features = num_features
        self.cardinalities = list(cardinalities)
        self.embeds = nn.ModuleList(nn.Embedding(c + 1, cat_dim) for c in cardinalities)
        self.proj = nn.Linear(2 * num_features + cat_dim * len(cardinalities), hidden)

    def check(self, x: Tokens) -> None:
        num, cat = x["tabular_num"], x["tabular_cat"]
        if num.shape[-1] != self.num_features or cat.shape[-1] != len(self.cardinalities):
            raise ValueError(
                f"tabular encoder: expected Fn={self.num_features}, Fc={len(self.cardinalities)}"
                f", got tabular_num {list(num.shape)}, tabular_cat {list(cat.shape)}"
            )
        for j, card in enumerate(self.cardinalities):
            col = cat[..., j]
            if col.numel() and (int(col.min()) < 0 or int(col.max()) > card):
                raise ValueError(
                    f"tabular_cat column {j}: ids must lie in [0, {card}] "
                    f"(got {int(col.min())}..{int(col.max())})"
                )

    def forward(self, x: Tokens) -> torch.Tensor:
        self.check(x)
        observed = x["tabular_num_mask"]
        num = torch.where(observed, x["tabular_num"], torch.zeros_like(x["tabular_num"]))
        parts = [num, observed.to(num.dtype)]
        parts += [emb(x["tabular_cat"][..., j]) for j, emb in enumerate(self.embeds)]
        return self.proj(torch.cat(parts, dim=-1))


class MLPTrunk(nn.Module):
    def __init__(self, rows: RowEmbedding, hidden: int) -> None:
        super().__init__()
        self.rows = rows
        self.mlp = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, x: Tokens) -> torch.Tensor:
        return masked_mean(self.mlp(self.rows(x)), x["tabular_row_mask"])


class TransformerTrunk(nn.Module):
    """Row tokens + positions through all but the last layer; returns tokens and row mask."""

    def __init__(self, rows: RowEmbedding, cfg: TabularEncoderConfig, window: int) -> None:
        super().__init__()
        self.rows = rows
        self.pos = nn.Parameter(torch.randn(window, cfg.hidden) * 0.02)
        self.layers = nn.ModuleList(make_layer(cfg) for _ in range(cfg.layers - 1))

    def forward(self, x: Tokens) -> Tokens:
        row_mask = x["tabular_row_mask"]
        if row_mask.shape[-1] > self.pos.shape[0]:
            raise ValueError(
                f"tabular encoder: window {row_mask.shape[-1]} exceeds the model's "
                f"{self.pos.shape[0]} (ModelInputs.tabular_window)"
            )
        h = self.rows(x) + self.pos[: row_mask.shape[-1]]
        pad = attention_padding(row_mask)
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=pad)
        return {"tokens": h, "row_mask": row_mask}


class TokenPoolStage(nn.Module):
    """Last transformer layer followed by the masked mean over real rows."""

    def __init__(self, cfg: TabularEncoderConfig) -> None:
        super().__init__()
        self.layer = make_layer(cfg)

    def forward(self, t: Tokens) -> torch.Tensor:
        h = self.layer(t["tokens"], src_key_padding_mask=attention_padding(t["row_mask"]))
        return masked_mean(h, t["row_mask"])


def make_layer(cfg: TabularEncoderConfig) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        cfg.hidden, cfg.heads, dim_feedforward=2 * cfg.hidden, dropout=0.0,
        batch_first=True, norm_first=True,
    )


def attention_padding(row_mask: torch.Tensor) -> torch.Tensor:
    """Key padding mask (True = ignore). A window with no real row keeps its first key so
    attention is defined (an all-masked softmax is NaN); pooling still yields zeros."""
    pad = ~row_mask
    empty = ~row_mask.any(-1)
    pad[..., 0] = pad[..., 0] & ~empty
    return pad


class TabularEncoder(StagedEncoder):
    def __init__(
        self, cfg: TabularEncoderConfig, num_features: int, cardinalities: list[int], window: int
    ) -> None:
        super().__init__()
        rows = RowEmbedding(num_features, cardinalities, cfg.cat_dim, cfg.hidden)
        if cfg.kind == "mlp":
            self.trunk = MLPTrunk(rows, cfg.hidden)
            self.last = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU())
        elif cfg.kind == "transformer":
            self.trunk = TransformerTrunk(rows, cfg, window)
            self.last = TokenPoolStage(cfg)
        else:
            raise ValueError(f"model.tabular.kind: unknown encoder {cfg.kind!r}")
        self.out_dim = cfg.hidden


def build_tabular_encoder(
    cfg: TabularEncoderConfig, num_features: int, cardinalities: list[int], window: int
) -> StagedEncoder:
    return TabularEncoder(cfg, num_features, cardinalities, window)
