"""Transcript normalisation: one function for references, hypotheses and context phrases.

Standard library only, so the device runtime can normalise context phrases exactly as the
corpus normalised its references.
"""

from __future__ import annotations

import re

ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """Spell a non-negative integer below one million the way people say it ("one hundred five").

    Used both for template fillers and by :func:`normalize_text`, so digits in user transcripts
    and in generated text end up as the same words.
    """
    if n < 0 or n >= 1_000_000:
        raise ValueError(f"number_to_words supports 0..999999, got {n}")
    if n < 20:
        return ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    thousands, rest = divmod(n, 1000)
    return (
        number_to_words(thousands)
        + " thousand"
        + ("" if rest == 0 else " " + number_to_words(rest))
    )


_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at "}
_NON_WORD = re.compile(r"[^a-z']+")
_DIGITS = re.compile(r"\d+")


def normalize_text(s: str) -> str:
    """Normalise a transcript: lowercase ``[a-z']`` words separated by single spaces.

    Digits are spelled out, a few symbols become words, every other character is a word break,
    and apostrophes survive only inside words ("o'clock", "what's"). One function for references
    and hypotheses keeps WER from counting formatting differences as errors.
    """
    s = s.lower().replace("\u2019", "'")
    for sym, word in _SYMBOLS.items():
        s = s.replace(sym, word)
    s = _DIGITS.sub(lambda m: " " + number_to_words(int(m.group()[:6])) + " ", s)
    words = (w.strip("'") for w in _NON_WORD.split(s))
    return " ".join(w for w in words if w)
