"""Decoding the ``status_flags`` fault bitfield."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np


def bit_name(bit: int, names: Mapping[int, str]) -> str:
    return names.get(bit, f"bit_{bit}")


@dataclass
class FaultCounter:
    """Per named bit: samples set, first and last timestamp (ns). Fed chunk by chunk."""

    names: Mapping[int, str]
    counts: dict[int, int] = field(default_factory=dict)
    first_ns: dict[int, int] = field(default_factory=dict)
    last_ns: dict[int, int] = field(default_factory=dict)

    def update(self, flags: np.ndarray, timestamps: np.ndarray) -> None:
        flags = flags.astype(np.uint32, copy=False)
        present = int(np.bitwise_or.reduce(flags)) if len(flags) else 0
        bit = 0
        while present:
            if present & 1:
                on = (flags & np.uint32(1 << bit)) != 0
                self.counts[bit] = self.counts.get(bit, 0) + int(on.sum())
                if bit not in self.first_ns:
                    self.first_ns[bit] = int(timestamps[np.argmax(on)])
                self.last_ns[bit] = int(timestamps[len(on) - 1 - np.argmax(on[::-1])])
            present >>= 1
            bit += 1

    def to_dict(self) -> dict:
        """Every named bit (zero counts included) and any unnamed bit that was set."""
        out = {}
        for bit in sorted(set(self.names) | set(self.counts)):
            n = self.counts.get(bit, 0)
            out[bit_name(bit, self.names)] = {
                "bit": bit,
                "samples": n,
                "first_ns": self.first_ns.get(bit),
                "last_ns": self.last_ns.get(bit),
            }
        return out
