"""What one poll of a device reads and how its answers become values: `ReadPlan` holds the
profile's read blocks with their compiled decoders, and turns the answers of one poll into
numbers (scaled, SunSpec scale factors applied) and strings (kept aside, never role values).
Pure: no I/O; the requests themselves are the poller's (`adapters.poller`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from meshems.core.block_plan import Block
from meshems.core.register_map import Profile
from meshems.core.registers import Value, apply_scale_factors, compile_block


@dataclass(frozen=True, slots=True)
class ReadPlan:
    blocks: tuple[Block, ...]
    decoders: tuple[Callable[[Sequence[int]], dict[str, Value]], ...]
    #: point -> the scale point it is scaled by, applied once every block is in
    scaled_by: Mapping[str, str]
    text_names: tuple[str, ...]
    #: one block of numbers with fixed scales: its decoder's dict is the answer as it is
    simple: bool = False

    @classmethod
    def of(cls, profile: Profile) -> ReadPlan:
        blocks = profile.read_blocks()
        scaled_by = profile.scaled_by()
        texts = tuple(p.name for p in profile.points if p.text)
        simple = len(blocks) == 1 and not scaled_by and not texts
        return cls(blocks, tuple(compile_block(b) for b in blocks), scaled_by, texts, simple)

    def values(self, answers: Sequence[Sequence[int]]) -> tuple[dict[str, float], dict[str, str]]:
        """The answers of one poll (one per block, in order) -> (numbers, strings) by point name."""
        if self.simple:
            return self.decoders[0](answers[0]), {}  # type: ignore[return-value]  # numbers only
        out: dict[str, Value] = {}
        for decode, words in zip(self.decoders, answers, strict=True):
            out.update(decode(words))
        texts = {k: out.pop(k) for k in self.text_names}
        numbers: dict[str, float] = out  # type: ignore[assignment]  # strings are out now
        if self.scaled_by:
            apply_scale_factors(numbers, self.scaled_by)
        return numbers, texts  # type: ignore[return-value]
