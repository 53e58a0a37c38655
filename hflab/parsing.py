"""Text a user types for a list of sizes — layer widths, a curriculum's lengths — read into
numbers, with a message saying what is allowed (:mod:`hflab.config` names the field)."""
from __future__ import annotations

from .core.settings import MAX_TEXT, number_text  # noqa: F401  (re-exported for the config)

MAX_LAYER_WIDTH = 100_000


def parse_layers(text: str) -> list[int]:
    """'400-200-100' → [400, 200, 100]; commas or spaces also separate.  Only ASCII digits."""
    example = "a layer string like '32-16' (hidden widths separated by '-')"
    if not isinstance(text, str) or not text.strip():
        raise ValueError(example)
    if len(text) > MAX_TEXT:
        raise ValueError(f"at most {MAX_TEXT} characters")
    parts = text.replace(",", "-").replace(" ", "-").split("-")
    if any(p == "" for p in parts):
        raise ValueError(f"{example}; empty or negative sizes are not widths")
    out = []
    for p in parts:
        if not (p.isascii() and p.isdigit()):
            raise ValueError(f"layer sizes must be whole numbers; {p!r} is not (e.g. '32-16')")
        v = int(p)
        if v < 1:
            raise ValueError("every layer needs at least 1 unit")
        if v > MAX_LAYER_WIDTH:
            raise ValueError(f"layer width {v:,} exceeds the limit of {MAX_LAYER_WIDTH:,} units")
        out.append(v)
    return out


def parse_curriculum(text: str, shortest: int = 1, longest: int = 10_000) -> list[int]:
    """'20,50,100' → [20, 50, 100]: at least two increasing whole numbers of time steps in
    [shortest, longest] (commas, dashes or spaces separate them)."""
    example = "increasing sequence lengths like '20,50,100'"
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise ValueError(f"{example}, at most {MAX_TEXT} characters")
    parts = [p for p in text.replace(",", " ").replace("-", " ").split()]
    if any(not (p.isascii() and p.isdigit()) for p in parts):
        raise ValueError(f"{example} (whole numbers only)")
    lengths = [int(p) for p in parts]
    if len(lengths) < 2:
        raise ValueError(f"{example}: at least two lengths (for one, set seq_len)")
    if any(b <= a for a, b in zip(lengths, lengths[1:])):
        raise ValueError(f"{example}: each length longer than the one before")
    if lengths[0] < shortest or lengths[-1] > longest:
        raise ValueError(f"{example}: lengths in [{shortest}, {longest}]")
    return lengths
