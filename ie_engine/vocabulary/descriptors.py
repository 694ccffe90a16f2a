"""Descriptors: an optional word put in front of a concept to vary its search query.

The paper prefixes queries with adjectives (e.g. "vintage lamp", "red lamp") so that repeated
queries of one concept return different images. Sources are pluggable through
:class:`DescriptorSource`; the built-in one is an offline list of generic visual adjectives
that fit most concrete nouns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ie_engine.config import VocabularyConfig
from ie_engine.errors import ConfigError
from ie_engine.types import Concept

BUILTIN_DESCRIPTORS: tuple[str, ...] = (
    # colours and tones
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "gray",
    "golden",
    "silver",
    "colorful",
    "dark",
    "bright",
    "pale",
    # sizes
    "small",
    "large",
    "tiny",
    "giant",
    # age and style
    "old",
    "new",
    "vintage",
    "antique",
    "modern",
    # condition and setting
    "wild",
    "wet",
    "dry",
    "shiny",
    "dusty",
    "frozen",
    "sunlit",
    "clean",
    "rare",
    "beautiful",
    # framing of the photograph
    "close-up",
    "isolated",
    "outdoor",
    "indoor",
)
"""Generic visual adjectives; each reads naturally before most concrete nouns."""


@runtime_checkable
class DescriptorSource(Protocol):
    """Chooses the descriptor (or none) of one query of ``concept``."""

    def choose(self, concept: Concept, rng: np.random.Generator) -> str | None:
        """A descriptor for this query, or None for the bare concept; randomness from ``rng``."""
        ...


class NoDescriptors:
    """Never adds a descriptor (and draws nothing from the generator)."""

    def choose(self, concept: Concept, rng: np.random.Generator) -> str | None:
        return None


class BuiltinDescriptors:
    """With chance ``probability``, one of ``words`` (uniformly), else no descriptor.

    Each call draws one uniform number from ``rng`` and, when a descriptor is given, one
    integer: the same generator state always gives the same choice.
    """

    def __init__(self, probability: float, words: Sequence[str] = BUILTIN_DESCRIPTORS) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ConfigError(f"descriptor probability must be in [0, 1], got {probability}")
        if not words:
            raise ConfigError("the descriptor list is empty")
        self.probability = float(probability)
        self.words: tuple[str, ...] = tuple(words)

    def choose(self, concept: Concept, rng: np.random.Generator) -> str | None:
        if rng.random() >= self.probability:
            return None
        return self.words[int(rng.integers(len(self.words)))]


def make_descriptor_source(config: VocabularyConfig) -> DescriptorSource:
    """The descriptor source named by ``config.descriptors``."""
    if config.descriptors == "none":
        return NoDescriptors()
    if config.descriptors == "builtin":
        return BuiltinDescriptors(config.descriptor_probability)
    raise ConfigError(f"unknown descriptor source {config.descriptors!r}; use none or builtin")


def compose_query(descriptor: str | None, lemma: str) -> str:
    """The search query: ``"{descriptor} {lemma}"``, or the bare lemma without a descriptor."""
    parts = [p.strip() for p in (descriptor or "", lemma)]
    return " ".join(p for p in parts if p)
