"""The attention model (PyTorch): a causal self-attention encoder over a user's context.

Per position: the sum of embeddings of every feature of :mod:`stream_app.model.features` and of the absolute
position, ``n_layers`` pre-norm transformer blocks with a causal mask, a final layer norm. The hidden
state at the newest position is the user interest vector ``h``. From it:

- next item and next category, each a pointer-generator mixture: ``p = g * p_copy + (1 - g) * p_gen``
  where ``p_gen`` is a softmax over the vocabulary, tied to the input embeddings, and ``p_copy`` an
  attention from ``h`` over the context's own entries (keys: the same embeddings, plus a learned bias
  per recency). Users repeat themselves (Taobao categories: the next category is often a recent one)
  and the gate ``g`` learns how much;
- the churn probability: a linear function of the newest event's count, gap, user-age and pace
  buckets read as numbers (log scales: the recency/frequency signal, monotone, so it survives the shift
  between a short training period and later ones) plus an MLP on ``h``.

:class:`WindowGraph` and :class:`StepGraph` are exported for the offline parity checks; the worker serves
:class:`ChunkGraph` (any number of new events per user on the cache) and :class:`ItemsGraph` (exact item
top-K from the user vectors).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stream_app.model.features import CONTEXT_START, FEATURE_NAMES, FeatureSpec

CHURN_FEATURES = ("count", "gap", "age", "pace")  # read as numbers: log count / gap / user age / pace
NEG = -1e4  # score of PAD / UNKNOWN items and categories: never ranked, never a softmax target


@dataclass(frozen=True)
class ModelConfig:
    n_items: int  # vocabulary size including PAD and UNKNOWN
    n_categories: int
    window_length: int
    n_types: int = 3
    gap_buckets: int = 32
    hour_buckets: int = 24
    count_buckets: int = 80
    age_buckets: int = 128
    pace_buckets: int = 112
    d_model: int = 64
    n_heads: int = 2
    n_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.2
    # category copy head: a learned bias per rank among the context's distinct categories by their
    # newest occurrence (the repeat-last order); False in artifacts written before it existed
    category_distinct_rank: bool = False

    @classmethod
    def for_spec(cls, spec: FeatureSpec, n_items: int, n_categories: int, **kw: object) -> ModelConfig:
        return cls(n_items=n_items, n_categories=n_categories, window_length=spec.window_length,
                   n_types=spec.n_types, gap_buckets=spec.gap_buckets, hour_buckets=spec.hour_buckets,
                   count_buckets=spec.count_buckets, age_buckets=spec.age_buckets,
                   pace_buckets=spec.pace_buckets, **kw)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.h, self.dk = cfg.n_heads, cfg.d_head
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.ff2 = nn.Linear(cfg.d_ff, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def _split(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = y.shape
        q, k, v = self.qkv(y).view(B, T, 3, self.h, self.dk).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v  # each (B, H, T, dk)

    def _finish(self, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        B, _, T, _ = att.shape
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(B, T, self.h * self.dk)))
        return x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.ln2(x))))))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self._split(self.ln1(x))
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dk) + mask, dim=-1)
        return self._finish(x, self.drop(w) @ v), k, v

    def step(self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, mask: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One new position ``x`` (B, 1, d) attending to the cache (B, H, L, dk) and itself."""
        q, k, v = self._split(self.ln1(x))
        keys = torch.cat([past_k, k], dim=2)
        values = torch.cat([past_v, v], dim=2)
        w = torch.softmax(q @ keys.transpose(-1, -2) / math.sqrt(self.dk) + mask, dim=-1)
        return self._finish(x, w @ values), k, v

    def chunk(self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, past_valid: torch.Tensor,
              causal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``T`` new positions ``x`` (B, T, d) attending to the cache (B, H, P, dk) where ``past_valid``
        (B, 1, 1, P) and, causally, to each other. The cache is only read (no concatenation): the
        scores against it and against the chunk are softmaxed together."""
        q, k, v = self._split(self.ln1(x))
        scale = 1.0 / math.sqrt(self.dk)
        s_past = torch.where(past_valid, (q @ past_k.transpose(-1, -2)) * scale, NEG)
        s_new = (q @ k.transpose(-1, -2)) * scale + causal
        w = torch.softmax(torch.cat([s_past, s_new], dim=-1), dim=-1)
        P = past_k.shape[2]
        att = w[..., :P] @ past_v + w[..., P:] @ v
        return self._finish(x, att), k, v


class CopyMixture(nn.Module):
    """Pointer-generator head over one vocabulary whose embedding table is ``table``."""

    def __init__(self, cfg: ModelConfig, distinct_rank: bool = False) -> None:
        super().__init__()
        self.query = nn.Linear(cfg.d_model, cfg.d_model)
        self.recency = nn.Embedding(cfg.window_length, 1)
        self.gate = nn.Linear(cfg.d_model, 1)
        with torch.no_grad():  # start close to "the most recent entries first" (repeat-last)
            self.recency.weight.copy_(-0.3 * torch.arange(float(cfg.window_length)).unsqueeze(1))
        self.scale = 1.0 / math.sqrt(cfg.d_model)
        # optional: bias by the rank of an entry among the context's distinct entries ordered by their
        # newest occurrence (0 = the newest entry; the repeat-last order); index L: an older
        # occurrence of an entry that occurs again later in the context
        # occurrence; the same ranks also add a learned bonus to the generator's logits of the
        # context's entries (a repeat-aware softmax), started at a repeat-last-like prior
        self.distinct: nn.Embedding | None = None
        self.gen_bonus: nn.Embedding | None = None
        if distinct_rank:
            L = cfg.window_length
            self.distinct = nn.Embedding(L + 1, 1)
            nn.init.zeros_(self.distinct.weight)
            self.gen_bonus = nn.Embedding(L + 1, 1, padding_idx=L)
            with torch.no_grad():
                self.gen_bonus.weight.copy_((3.0 - 0.1 * torch.arange(float(L + 1))).unsqueeze(1))
                self.gen_bonus.weight[L] = 0.0

    def _distinct_index(self, ids: torch.Tensor, upto: torch.Tensor) -> torch.Tensor:
        """(B, Q, J): for a query that sees the entries j <= upto (B, Q), the rank of entry j among the
        distinct valid entries by newest occurrence, or L when j is not the newest occurrence of its
        entry, not seen or not valid."""
        assert self.distinct is not None
        J = ids.shape[1]
        j = torch.arange(J, device=ids.device)
        same = (ids.unsqueeze(2) == ids.unsqueeze(1)) & (j.view(1, 1, J) > j.view(1, J, 1))
        nxt = torch.where(same, j.view(1, 1, J), J).amin(-1)  # (B, J) next occurrence of the same entry
        seen = j.view(1, 1, J) <= upto.unsqueeze(-1)  # (B, Q, J)
        last = (nxt.unsqueeze(1) > upto.unsqueeze(-1)) & seen  # newest occurrence as of the query
        counted = (last & (ids > 1).unsqueeze(1)).to(torch.int64)
        rank = counted.sum(-1, keepdim=True) - counted.cumsum(-1)  # distinct entries newer than j
        L = self.distinct.num_embeddings - 1
        return torch.where(last & (ids > 1).unsqueeze(1), rank.clamp(0, L - 1), torch.full_like(rank, L))

    def _attention(self, h: torch.Tensor, keys: torch.Tensor, rel: torch.Tensor, valid: torch.Tensor,
                   extra: torch.Tensor | None = None) -> torch.Tensor:
        """Queries h (B, Q, d) attend over keys (B, J, d); rel, valid (B, Q, J). Rows without a valid
        entry get all-zero weights."""
        s = (self.query(h) @ keys.transpose(-1, -2)) * self.scale
        s = s + self.recency(rel.clamp(0, self.recency.num_embeddings - 1)).squeeze(-1)
        if extra is not None:
            s = s + extra
        w = torch.softmax(torch.where(valid, s, torch.full_like(s, NEG)), dim=-1)
        return w * valid.to(w.dtype)

    def train_log_prob(self, h: torch.Tensor, ids: torch.Tensor, table: torch.Tensor, block: torch.Tensor,
                       sel: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """log p(target) at the selected positions of full segments: h (B, T, d), ids (B, T) the
        context entries, sel (B, T) bool, target (B, T); position t attends to entries j <= t."""
        T = ids.shape[1]
        pos = torch.arange(T, device=ids.device)
        rel = (pos.view(T, 1) - pos.view(1, T)).expand(ids.shape[0], T, T)
        valid = (pos.view(1, T) <= pos.view(T, 1)) & (ids > 1).unsqueeze(1)
        extra, bonus = None, 0.0
        if self.distinct is not None and self.gen_bonus is not None:
            idx = self._distinct_index(ids, pos.expand(ids.shape[0], T))
            extra = self.distinct(idx).squeeze(-1)
            rows = ids.unsqueeze(1).expand(-1, T, -1)[sel]  # (n, T)
            bonus = torch.zeros(rows.shape[0], table.shape[0], dtype=h.dtype).scatter_add(
                1, rows, self.gen_bonus(idx[sel]).squeeze(-1))
        w = self._attention(h, table[ids], rel, valid, extra)[sel]  # (n, T)
        p_copy = (w * (ids.unsqueeze(1).expand(-1, T, -1)[sel] == target[sel].unsqueeze(1))).sum(-1)
        hs = h[sel]
        log_gen = torch.log_softmax(hs @ table.T + block + bonus, dim=-1)
        log_gen = log_gen.gather(1, target[sel].unsqueeze(1)).squeeze(1)
        g = torch.sigmoid(self.gate(hs)).squeeze(-1)
        return torch.log(g * p_copy + (1 - g) * log_gen.exp() + 1e-9)

    def distribution(self, h: torch.Tensor, ids: torch.Tensor, length: torch.Tensor, table: torch.Tensor,
                     block: torch.Tensor) -> torch.Tensor:
        """p (P, N) for users with vectors h (P, d) and contexts ids (P, L) of the given lengths."""
        L = ids.shape[1]
        j = torch.arange(L, device=ids.device).unsqueeze(0)
        valid = ((j < length.unsqueeze(1)) & (ids > 1)).unsqueeze(1)
        rel = (length.unsqueeze(1) - 1 - j).unsqueeze(1)
        extra, bonus = None, 0.0
        if self.distinct is not None and self.gen_bonus is not None:
            idx = self._distinct_index(ids, (length - 1).unsqueeze(1))
            extra = self.distinct(idx).squeeze(-1)
            bonus = torch.zeros(h.shape[0], table.shape[0], dtype=h.dtype).scatter_add(
                1, ids, self.gen_bonus(idx.squeeze(1)).squeeze(-1))
        w = self._attention(h.unsqueeze(1), table[ids], rel, valid, extra).squeeze(1)
        p_copy = torch.zeros(h.shape[0], table.shape[0], dtype=h.dtype).scatter_add(1, ids, w)
        g = torch.sigmoid(self.gate(h))
        return g * p_copy + (1 - g) * torch.softmax(h @ table.T + block + bonus, dim=-1)


class InterestModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.item_emb = nn.Embedding(cfg.n_items, d, padding_idx=0)
        self.cat_emb = nn.Embedding(cfg.n_categories, d, padding_idx=0)
        self.type_emb = nn.Embedding(cfg.n_types + 1, d, padding_idx=0)
        self.gap_emb = nn.Embedding(cfg.gap_buckets, d, padding_idx=0)
        self.hour_emb = nn.Embedding(cfg.hour_buckets + 1, d, padding_idx=0)
        self.count_emb = nn.Embedding(cfg.count_buckets, d, padding_idx=0)
        self.age_emb = nn.Embedding(cfg.age_buckets, d, padding_idx=0)
        self.pace_emb = nn.Embedding(cfg.pace_buckets, d, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.window_length, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(d)
        self.item_head = CopyMixture(cfg)
        self.cat_head = CopyMixture(cfg, distinct_rank=cfg.category_distinct_rank)
        self.churn_wide = nn.Linear(len(CHURN_FEATURES) + 2, 1)
        # standardisation of the wide inputs, set from the training points (refit_churn_head)
        self.register_buffer("wide_mean", torch.zeros(len(CHURN_FEATURES) + 2))
        self.register_buffer("wide_std", torch.ones(len(CHURN_FEATURES) + 2))
        self.churn_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        nn.init.zeros_(self.churn_head[2].weight)  # start as the linear recency/frequency part alone
        self.drop = nn.Dropout(cfg.dropout)
        for emb in (self.item_emb, self.cat_emb, self.type_emb, self.gap_emb, self.hour_emb, self.count_emb,
                    self.age_emb, self.pace_emb, self.pos_emb):
            nn.init.normal_(emb.weight, std=0.05)
        causal = torch.full((cfg.window_length, cfg.window_length), float(NEG)).triu(1)
        self.register_buffer("causal_mask", causal, persistent=False)
        blocked = torch.zeros(cfg.n_items)
        blocked[:2] = NEG
        self.register_buffer("item_block", blocked, persistent=False)
        blocked = torch.zeros(cfg.n_categories)
        blocked[:2] = NEG
        self.register_buffer("cat_block", blocked, persistent=False)

    def embed(self, f: dict[str, torch.Tensor], pos: torch.Tensor) -> torch.Tensor:
        x = (self.item_emb(f["item"]) + self.cat_emb(f["category"]) + self.type_emb(f["type"])
             + self.gap_emb(f["gap"]) + self.hour_emb(f["hour"]) + self.count_emb(f["count"])
             + self.age_emb(f["age"]) + self.pace_emb(f["pace"]) + self.pos_emb(pos))
        return self.drop(x)

    def encode(self, f: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (B, T, d) of every position and the keys/values (B, layers, 2, H, T, dk)."""
        T = f["item"].shape[1]
        x = self.embed(f, torch.arange(T, device=f["item"].device))
        kvs = []
        for block in self.blocks:
            x, k, v = block(x, self.causal_mask[:T, :T])
            kvs.append(torch.stack([k, v], dim=1))
        return self.final_norm(x), torch.stack(kvs, dim=1)

    def step(self, f: dict[str, torch.Tensor], position: torch.Tensor, past_kv: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden state (B, d) of one new event at ``position`` (B,) given the cache of the earlier
        positions ``past_kv`` (B, layers, 2, H, L, dk); returns it and the new keys/values
        (B, layers, 2, H, dk)."""
        x = self.embed({k: v.unsqueeze(1) for k, v in f.items()}, position.unsqueeze(1))
        slots = torch.arange(past_kv.shape[4], device=position.device)
        mask = torch.where(slots.unsqueeze(0) < position.unsqueeze(1), 0.0, NEG)  # (B, L)
        mask = torch.cat([mask, torch.zeros_like(mask[:, :1])], dim=1)[:, None, None, :]
        new = []
        for i, block in enumerate(self.blocks):
            x, k, v = block.step(x, past_kv[:, i, 0], past_kv[:, i, 1], mask)
            new.append(torch.stack([k[:, :, 0], v[:, :, 0]], dim=1))
        return self.final_norm(x)[:, 0], torch.stack(new, dim=1)

    def chunk(self, f: dict[str, torch.Tensor], start: torch.Tensor, past: list[torch.Tensor]
              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Hidden states (B, T, d) of ``T`` new events at positions ``start + t`` given the cached
        keys/values of positions ``< start`` (``past``: per layer a key and a value (B, H, P, dk), P >= the
        largest start, P = 0 when every start is 0: a full context); returns them and the chunk's keys and
        values, per layer (B, H, T, dk)."""
        T = f["item"].shape[1]
        offs = torch.arange(T, device=start.device)
        pos = (start.unsqueeze(1) + offs.unsqueeze(0)).clamp(max=self.cfg.window_length - 1)
        x = self.embed(f, pos)
        slots = torch.arange(past[0].shape[2], device=start.device)
        past_valid = (slots.unsqueeze(0) < start.unsqueeze(1))[:, None, None, :]  # (B, 1, 1, P)
        causal = self.causal_mask[:T, :T]
        new: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x, k, v = block.chunk(x, past[2 * i], past[2 * i + 1], past_valid, causal)
            new += [k, v]
        return self.final_norm(x), new

    def item_probs(self, h: torch.Tensor, items: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        return self.item_head.distribution(h, items, length, self.item_emb.weight, self.item_block)

    def category_probs(self, h: torch.Tensor, cats: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        return self.cat_head.distribution(h, cats, length, self.cat_emb.weight, self.cat_block)

    def wide_inputs(self, last: dict[str, torch.Tensor], position: torch.Tensor, raw: bool = False
                    ) -> torch.Tensor:
        start = last["gap"] == CONTEXT_START  # its gap bucket is not a duration
        wide = torch.stack([last[k] for k in CHURN_FEATURES] + [position, start], dim=-1).float()
        return wide if raw else (wide - self.wide_mean) / self.wide_std

    def churn_logit(self, h: torch.Tensor, last: dict[str, torch.Tensor], position: torch.Tensor
                    ) -> torch.Tensor:
        """Churn logit from h (N, d), the newest event's features ``last`` (N,) and its position."""
        wide = self.wide_inputs(last, position).to(h.dtype)
        return (self.churn_wide(wide) + self.churn_head(h)).squeeze(-1)


def ranking_scores(probs: torch.Tensor) -> torch.Tensor:
    """Scores that rank like ``probs`` with PAD and UNKNOWN last."""
    scores = torch.log(probs + 1e-12)
    return torch.cat([torch.full_like(scores[:, :2], NEG), scores[:, 2:]], dim=1)


class _Outputs(nn.Module):
    """Shared head of the exported graphs: top-K items, category distribution, churn, user vector."""

    def __init__(self, model: InterestModel, top_k: int) -> None:
        super().__init__()
        self.model = model
        self.top_k = top_k

    def heads(self, h: torch.Tensor, items: torch.Tensor, cats: torch.Tensor, length: torch.Tensor,
              last: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        item_p = self.model.item_probs(h, items, length)
        top_scores, top_items = torch.topk(ranking_scores(item_p), self.top_k, dim=-1)
        categories = self.model.category_probs(h, cats, length)
        churn = torch.sigmoid(self.model.churn_logit(h, last, (length - 1).clamp(min=0)))
        return top_scores, top_items, categories, churn, h


class WindowGraph(_Outputs):
    """Full context: inputs (B, L) per feature and lengths (B,) -> outputs and the cache."""

    def forward(self, item: torch.Tensor, category: torch.Tensor, type: torch.Tensor, gap: torch.Tensor,
                hour: torch.Tensor, count: torch.Tensor, age: torch.Tensor, pace: torch.Tensor,
                length: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        f = dict(zip(FEATURE_NAMES, (item, category, type, gap, hour, count, age, pace), strict=True))
        hidden, kv = self.model.encode(f)
        newest_pos = (length - 1).clamp(min=0)
        h = torch.gather(hidden, 1, newest_pos.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])).squeeze(1)
        newest = {k: f[k].gather(1, newest_pos.unsqueeze(1)).squeeze(1) for k in CHURN_FEATURES}
        return (*self.heads(h, item, category, length, newest), kv)


class StepGraph(_Outputs):
    """One new event per user: its features (B,), its position (B,), the cache, and the context's
    item and category indices (B, L) including the new event (for the copy heads) -> outputs and
    the new position's keys/values."""

    def forward(self, item: torch.Tensor, category: torch.Tensor, type: torch.Tensor, gap: torch.Tensor,
                hour: torch.Tensor, count: torch.Tensor, age: torch.Tensor, pace: torch.Tensor,
                position: torch.Tensor,
                past_kv: torch.Tensor, context_item: torch.Tensor, context_category: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        f = dict(zip(FEATURE_NAMES, (item, category, type, gap, hour, count, age, pace), strict=True))
        h, new_kv = self.model.step(f, position, past_kv)
        return (*self.heads(h, context_item, context_category, position + 1, f), new_kv)


class ChunkGraph(nn.Module):
    """Several new events per user appended to the cached keys/values as one causal chunk (exact, like
    the one-event step; ``start = 0`` with an empty cache is the full context). Inputs: the chunk's
    features (B, T), ``start`` (B,) the position of its first event, ``answer_at`` (B, R) the chunk
    offsets to answer at, the context's category indices (B, L) as of the chunk's newest event (copy
    head), per layer ``past_key_i`` / ``past_value_i`` (B, H, P, dk). Outputs at each answer
    position: ``category_probs`` (B, R, C), ``churn_prob`` (B, R), ``user_vector`` (B, R, d), and the
    chunk's keys/values ``new_key_i`` / ``new_value_i`` (B, H, T, dk). The item ranking is a separate
    graph (:class:`ItemsGraph`) on the user vectors, or an ANN index for large catalogs."""

    def __init__(self, model: InterestModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, item: torch.Tensor, category: torch.Tensor, type: torch.Tensor, gap: torch.Tensor,
                hour: torch.Tensor, count: torch.Tensor, age: torch.Tensor, pace: torch.Tensor,
                start: torch.Tensor, answer_at: torch.Tensor, context_category: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = dict(zip(FEATURE_NAMES, (item, category, type, gap, hour, count, age, pace), strict=True))
        hidden, new = self.model.chunk(f, start, list(past))
        B, R = answer_at.shape
        d = hidden.shape[-1]
        h = torch.gather(hidden, 1, answer_at.unsqueeze(-1).expand(B, R, d)).reshape(B * R, d)
        position = (start.unsqueeze(1) + answer_at).reshape(B * R)
        last = {k: f[k].gather(1, answer_at).reshape(B * R) for k in CHURN_FEATURES}
        L = context_category.shape[1]
        cats = context_category.unsqueeze(1).expand(B, R, L).reshape(B * R, L)
        categories = self.model.category_probs(h, cats, position + 1)
        churn = torch.sigmoid(self.model.churn_logit(h, last, position))
        return (categories.reshape(B, R, -1), churn.reshape(B, R), h.reshape(B, R, d), *new)


class ItemsGraph(nn.Module):
    """Exact top-K of the item head for users with vectors ``user_vector`` (N, d), contexts
    ``context_item`` (N, L) of the given ``length`` (N,): scores over the whole catalog."""

    def __init__(self, model: InterestModel, top_k: int) -> None:
        super().__init__()
        self.model, self.top_k = model, top_k

    def forward(self, user_vector: torch.Tensor, context_item: torch.Tensor, length: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The top-K of ``ranking_scores(item_probs(...))`` without materialising the mixture over the
        catalog: items outside the context rank by their generator logit alone, so the top-K is among
        the K best logits outside the context and the context's items; only those candidates are scored
        exactly (log of the mixture, normaliser by logsumexp). The export makes K an input (``k``)."""
        head, table, block = self.model.item_head, self.model.item_emb.weight, self.model.item_block
        if head.distinct is not None:  # rank terms change the generator per context: score everything
            scores = ranking_scores(self.model.item_probs(user_vector, context_item, length))
            top_scores, top_items = torch.topk(scores, self.top_k, dim=-1)
            return top_scores, top_items
        h, ids = user_vector, context_item
        L = ids.shape[1]
        log_gen = torch.log_softmax(h @ table.T + block, dim=-1)  # (N, items), one fused kernel
        j = torch.arange(L, device=ids.device).unsqueeze(0)
        valid = (j < length.unsqueeze(1)) & (ids > 1)  # (N, L)
        rel = (length.unsqueeze(1) - 1 - j).unsqueeze(1)
        w = head._attention(h.unsqueeze(1), table[ids], rel, valid.unsqueeze(1)).squeeze(1)  # (N, L)
        g = torch.sigmoid(head.gate(h))  # (N, 1)
        # items outside the context: the best generator scores once the context's items are masked
        outside = log_gen.scatter(1, torch.where(valid, ids, 0), NEG)
        cand_log, cand = torch.topk(outside, self.top_k, dim=-1)
        gen_scores = torch.log((1 - g) * torch.exp(cand_log) + 1e-12)
        gen_scores = torch.where(cand > 1, gen_scores, NEG)
        # context items: each once (at its newest valid occurrence), copy mass summed over occurrences
        same = ((ids.unsqueeze(2) == ids.unsqueeze(1)) & valid.unsqueeze(1)).to(w.dtype)  # (N, L, L)
        copy = (same @ w.unsqueeze(-1)).squeeze(-1)
        later = (j.unsqueeze(0) > j.unsqueeze(2)).to(w.dtype)  # (1, L, L): j' > j
        newer = (same * later).sum(-1) > 0  # a later valid occurrence of the same item exists
        ctx_log = torch.gather(log_gen, 1, ids)
        ctx_scores = torch.log(g * copy + (1 - g) * torch.exp(ctx_log) + 1e-12)
        ctx_scores = torch.where(valid & ~newer, ctx_scores, NEG)
        scores = torch.cat([gen_scores, ctx_scores], dim=1)
        top_scores, at = torch.topk(scores, self.top_k, dim=-1)
        top_items = torch.gather(torch.cat([cand, ids], dim=1), 1, at)
        return top_scores, top_items


OUTPUT_NAMES = ("top_scores", "top_items", "category_probs", "churn_prob", "user_vector")
WINDOW_INPUTS = (*FEATURE_NAMES, "length")
STEP_INPUTS = (*FEATURE_NAMES, "position", "past_kv", "context_item", "context_category")
CHUNK_OUTPUTS = ("category_probs", "churn_prob", "user_vector")
ITEMS_INPUTS = ("user_vector", "context_item", "length")


def chunk_inputs(n_layers: int) -> tuple[str, ...]:
    return (*FEATURE_NAMES, "start", "answer_at", "context_category",
            *(f"past_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")))


def chunk_new_kv(n_layers: int) -> tuple[str, ...]:
    return tuple(f"new_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value"))
