"""English number words -> German number words, generated with ``num2words``.

A translation task that needs no downloaded data and shows a real reordering:
German says the units before the tens ("forty-two" -> "zwei und vierzig"),
which cross-attention makes visible. German number words are written as one
word; here they are split into their morphemes (``drei hundert zwei und
vierzig``) so that each output token is a unit the model can attend from.
English is split on spaces, hyphens and commas.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from num2words import num2words

__all__ = ["NumberWordsTask", "english_tokens", "german_morphemes"]

# Longest first so that e.g. "sechzehn" wins over "sechs" + ...; "sech"/"sieb"
# are the stems of sechzehn/sechzig and siebzehn/siebzig.
_GERMAN_MORPHEMES = sorted(
    [
        "null", "eins", "ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht",
        "neun", "zehn", "elf", "zwölf", "sech", "sieb", "zwanzig", "dreißig", "zig",
        "hundert", "tausend", "und", "millionen", "million", "eine",
    ],
    key=len,
    reverse=True,
)  # fmt: skip
_GERMAN_PATTERN = re.compile("|".join(_GERMAN_MORPHEMES))


def german_morphemes(number: int) -> list[str]:
    """``342`` -> ``["drei", "hundert", "zwei", "und", "vierzig"]`` (joined, it is num2words' text).

    Raises ``ValueError`` if a piece is not a known morpheme (never silently drops text).
    """
    text = num2words(number, lang="de")
    pieces = _GERMAN_PATTERN.findall(text)
    if "".join(pieces) != text:
        raise ValueError(f"cannot split German number word {text!r} into morphemes")
    return _merge_tens(pieces)


def _merge_tens(pieces: list[str]) -> list[str]:
    """Join a unit stem with its ``zehn``/``zig`` suffix: ``vier zig`` -> ``vierzig``."""
    merged: list[str] = []
    for piece in pieces:
        if piece in ("zig", "zehn") and merged and merged[-1] not in ("und", "hundert", "tausend"):
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


def english_tokens(number: int) -> list[str]:
    """``342`` -> ``["three", "hundred", "and", "forty", "-", "two"]``."""
    return re.findall(r"[a-z]+|[-,]", num2words(number, lang="en"))


@dataclass(frozen=True)
class NumberWordsTask:
    """Pairs ``(english tokens, german morphemes)`` for numbers in ``[0, max_number]``.

    ``split(seed)`` holds out ``held_out`` numbers chosen at random for evaluation.
    """

    max_number: int = 9999
    held_out: int = 500

    def pair(self, number: int) -> tuple[str, str]:
        """Space-separated source and target strings of one number."""
        return " ".join(english_tokens(number)), " ".join(german_morphemes(number))

    def split(self, seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """``(train_pairs, held_out_pairs)``: disjoint sets of numbers."""
        numbers = list(range(self.max_number + 1))
        random.Random(seed).shuffle(numbers)
        test, train = numbers[: self.held_out], numbers[self.held_out :]
        return [self.pair(n) for n in train], [self.pair(n) for n in test]
