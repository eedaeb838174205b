"""Cached keys/values of users' contexts: one preallocated pool per runtime, a slot per user.

A :class:`KVCache` handle names a slot and carries a version stamp, so a slot that was reused for
another user is never misread: that user's context is recomputed instead."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from stream_app.model.features import WindowEvent


@dataclass
class KVCache:
    """A user's cached keys/values after ``n_events`` events whose newest was ``last_event``: a handle
    to ``slot`` of the runtime's :class:`KVPool`, valid while the slot still holds this context (same
    ``epoch``, filled up to ``length`` positions)."""

    n_events: int
    last_event: WindowEvent
    slot: int
    epoch: int
    length: int


@dataclass
class KVPool:
    """Keys/values of many users' contexts in preallocated arrays, one slot per user, least recently
    used slot reused first. Per layer a key and a value array (slots, H, L, dk) float32, and the
    context's item, category indices and times (slots, L). Grows by doubling up to ``max_slots``
    (more only while one call needs them)."""

    layers: int
    heads: int
    window_length: int
    d_head: int
    max_slots: int = 10_000
    slots: int = 0
    kv: list[np.ndarray] = field(default_factory=list)
    ctx: dict[str, np.ndarray] = field(default_factory=dict)
    epoch: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    filled: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _lru: OrderedDict[int, None] = field(default_factory=OrderedDict)
    _free: list[int] = field(default_factory=list)

    @property
    def in_use(self) -> int:
        """Slots holding a context someone may still ask for (allocated and not released)."""
        return len(self._lru)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.kv) + sum(a.nbytes for a in self.ctx.values())

    def valid(self, c: KVCache) -> bool:
        return c.slot < self.slots and self.epoch[c.slot] == c.epoch and self.filled[c.slot] == c.length

    def owns(self, c: KVCache) -> bool:
        """The slot still belongs to the handle's context (it may have grown since)."""
        return c.slot < self.slots and self.epoch[c.slot] == c.epoch

    def renew(self, slot: int) -> None:
        """The slot is rewritten from position 0: its old handles die."""
        self.epoch[slot] += 1
        self.filled[slot] = 0

    def _grow(self, new: int) -> None:
        L, old = self.window_length, self.slots

        def grown(a: np.ndarray | None, shape: tuple[int, ...], dtype: type) -> np.ndarray:
            out: np.ndarray = np.zeros((new, *shape), dtype)
            if a is not None:
                out[:old] = a
            return out

        self.kv = [grown(self.kv[i] if self.kv else None, (self.heads, L, self.d_head), np.float32)
                   for i in range(2 * self.layers)]
        self.ctx = {k: grown(self.ctx.get(k), (L,), np.int64) for k in ("item", "category", "ts")}
        self.epoch = grown(self.epoch, (), np.int64)
        self.filled = grown(self.filled, (), np.int64)
        self._free.extend(range(new - 1, old - 1, -1))
        self.slots = new

    def allocate(self, n: int, protect: set[int]) -> list[int]:
        """``n`` slots: never used ones, else new ones while below ``max_slots``, else the least
        recently used outside ``protect``. Their old handles die (the epoch changes)."""
        out: list[int] = []
        while len(out) < n:
            if self._free:
                out.append(self._free.pop())
            elif self.slots < self.max_slots:
                self._grow(min(self.max_slots, max(2 * self.slots, 64, self.slots + n - len(out))))
            else:
                taken = set(out)
                victim = next((s for s in self._lru if s not in protect and s not in taken), None)
                if victim is None:
                    self._grow(self.slots + n - len(out))
                else:
                    out.append(victim)
        for s in out:
            self.epoch[s] += 1
            self.filled[s] = 0
        self.touch(out)
        return out

    def release(self, c: KVCache) -> None:
        """The handle's context is no longer wanted: its slot (if still the handle's) is free again."""
        if self.owns(c):
            self.renew(c.slot)
            self._lru.pop(c.slot, None)
            self._free.append(c.slot)

    def touch(self, slots: Sequence[int]) -> None:
        for s in slots:
            self._lru[s] = None
            self._lru.move_to_end(s)
