"""Small formatting shared by every layer: durations and counts as a person reads them."""
from __future__ import annotations


def human_seconds(s: float) -> str:
    """12 s, 3.4 min, 2.1 h or 3.2 days."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def count(n: int, word: str, plural: str | None = None) -> str:
    """'1 seed', '2 seeds', '1,000 images': a number with its noun in the right number (`plural` where not +s)."""
    return f"{n:,} {word if n == 1 else plural or word + 's'}"


def sci(value: float, digits: int = 2) -> str:
    """A number as a person writes it in a sentence or a figure: 0.043, 2.5, or 1.2×10⁸ for the very large and
    small (`digits` significant digits)."""
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        if abs(value) >= 10**digits:  # where `g` would write 1e+03: the digits kept, the rest as zeros (12,000)
            return f"{round(value, digits - len(str(int(abs(value))))):,.0f}"
        return f"{value:,.{digits}g}"
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    return f"{mantissa}×10" + str(int(exponent)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
