"""K/V storage in preallocated slots, written in place, so a fork adds only its tail.

A ``SlotLayer`` keeps a layer's keys and values in buffers [B, H, capacity, D] and uses the
first ``width`` slots; ``keys``/``values`` are views of them. A new token is written into the
next free slot (no ``torch.cat`` of the whole layer per step); a full buffer grows by
``grow_tokens`` slots at a time (``reserve`` sizes it ahead when the caller knows the length).

Forking (``kvcache.fork``) reserves the fork's tokens in the parent's buffers and gives the
fork layers that share them: a fork writes only into slots after its parent's ``width``,
which the parent does not read, so the parent is unchanged and the fork costs its tail only.
The parent's next write reuses those slots (a fork is done before its parent decodes on).
Layers that rewrite their stored tokens (eviction's compaction, requantizing) do so in place
only when not forked (``forked`` False); a fork keeps its parent's slots read-only.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

GROW_TOKENS = 256  # slots added when a buffer is full and no reservation covered the write


class SlotLayer(DynamicLayer):
    def __init__(self):
        self._kbuf = self._vbuf = None
        self.width = 0
        self.forked = False
        self.headroom = 0  # slots to allocate beyond the first write (set by reserve before it)
        super().__init__()

    # keys / values: views of the used slots (transformers' code and ours read them)
    @property
    def keys(self):
        return None if self._kbuf is None else self._kbuf[:, :, : self.width]

    @keys.setter
    def keys(self, t):
        self._kbuf = t
        self.width = 0 if t is None or t.dim() != 4 else t.shape[-2]

    @property
    def values(self):
        return None if self._vbuf is None else self._vbuf[:, :, : self.width]

    @values.setter
    def values(self, t):
        self._vbuf = t

    @property
    def capacity(self) -> int:
        return 0 if self._kbuf is None or self._kbuf.dim() != 4 else self._kbuf.shape[-2]

    def lazy_initialization(self, key_states, value_states) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def reserve(self, tokens: int) -> None:
        """Make room for ``tokens`` more slots without a later reallocation."""
        if self._kbuf is None or self._kbuf.dim() != 4:
            self.headroom = max(self.headroom, tokens)
        elif self.width + tokens > self.capacity:
            self._resize(self.width + tokens)

    def first_capacity(self, tokens: int) -> int:
        """Slots of the first allocation, for a first write of ``tokens``."""
        return tokens + self.headroom

    def _resize(self, capacity: int) -> None:
        """New buffers of ``capacity`` slots holding the used ones (the old ones are left to
        whoever else holds them: a parent keeps its own)."""
        for name in ("_kbuf", "_vbuf"):
            old = getattr(self, name)
            new = old.new_empty(*old.shape[:2], capacity, old.shape[-1])
            new[:, :, : self.width] = old[:, :, : self.width]
            setattr(self, name, new)

    def append(self, key_states, value_states):
        """Write the new tokens after the used slots; returns the views of all used slots."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if self._kbuf is None or self._kbuf.dim() != 4:
            b, h, _, d = key_states.shape
            capacity = self.first_capacity(n)
            self._kbuf = key_states.new_empty(b, h, capacity, d)
            self._vbuf = value_states.new_empty(b, value_states.shape[1], capacity, value_states.shape[-1])
            self.width = 0
        elif self.width + n > self.capacity:
            self._resize(self.width + n + GROW_TOKENS)
        self._kbuf[:, :, self.width : self.width + n] = key_states
        self._vbuf[:, :, self.width : self.width + n] = value_states
        self.width += n
        return self.keys, self.values

    def store(self, keys, values) -> None:
        """Replace the used slots by ``keys``/``values`` (fewer or as many tokens, same rows):
        in place in a layer of its own, into new buffers in a fork."""
        n = keys.shape[-2]
        if self.forked:
            self._kbuf, self._vbuf = keys, values
            self.forked = False  # its own buffers from now on
        else:
            self._kbuf[:, :, :n] = keys
            self._vbuf[:, :, :n] = values
        self.width = n

    def update(self, key_states, value_states, *args, **kwargs):
        return self.append(key_states, value_states)

    def get_seq_length(self) -> int:
        return self.width

    def fork(self):
        """A layer that shares this one's buffers and writes only after its used slots."""
        import copy

        twin = copy.copy(self)
        twin.forked = True
        return twin

    def slot_bytes(self) -> int:
        """Bytes of the buffers (used slots and headroom)."""
        return sum(t.nbytes for t in (self._kbuf, self._vbuf) if isinstance(t, torch.Tensor))
