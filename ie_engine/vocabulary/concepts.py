"""The concept vocabulary: an immutable, indexed list of concepts, and how it is built.

Concept indices are what the rest of the engine passes around (queries, rewards, the policy's
rows), so a :class:`Vocabulary` always numbers its concepts 0..N-1 in order, and every
operation that changes the list returns a new, re-numbered vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from ie_engine.config import VocabularyConfig
from ie_engine.errors import ConfigError, VocabularyError
from ie_engine.types import Concept
from ie_engine.vocabulary.wordnet import DEFAULT_WORDNET_DIR, load_wordnet_concepts


@dataclass(frozen=True)
class Vocabulary:
    """An immutable tuple of concepts whose ``index`` fields are 0..N-1, in order."""

    concepts: tuple[Concept, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.concepts, tuple):
            object.__setattr__(self, "concepts", tuple(self.concepts))
        for position, concept in enumerate(self.concepts):
            if concept.index != position:
                raise VocabularyError(
                    f"concept {concept.lemma!r} has index {concept.index} at position "
                    f"{position}; use Vocabulary.from_concepts to re-number"
                )

    @classmethod
    def from_concepts(cls, concepts: Iterable[Concept]) -> Vocabulary:
        """A vocabulary of ``concepts`` in the given order, re-numbered 0..N-1."""
        return cls(tuple(replace(c, index=i) for i, c in enumerate(concepts)))

    def __len__(self) -> int:
        return len(self.concepts)

    def __getitem__(self, index: int) -> Concept:
        return self.concepts[index]

    def __iter__(self) -> Iterator[Concept]:
        return iter(self.concepts)

    def texts(self) -> list[str]:
        """What the sentence embedder sees, one per concept."""
        return [c.text for c in self.concepts]

    def lemmas(self) -> list[str]:
        """What is sent to a search engine, one per concept."""
        return [c.lemma for c in self.concepts]

    @cached_property
    def _exact(self) -> dict[str, int]:
        index: dict[str, int] = {}
        for c in self.concepts:
            index.setdefault(c.lemma, c.index)
        return index

    @cached_property
    def _folded(self) -> dict[str, int]:
        index: dict[str, int] = {}
        for c in self.concepts:
            index.setdefault(c.lemma.casefold(), c.index)
        return index

    def index_of(self, lemma: str) -> int | None:
        """Index of the concept spelled ``lemma``; failing that, of the first one equal up to
        case (``"dog"`` finds ``dog``, ``"Dog"`` finds it too unless a ``Dog`` exists); else
        None."""
        found = self._exact.get(lemma)
        if found is None:
            found = self._folded.get(lemma.casefold())
        return found

    def subset(self, indices: Sequence[int] | np.ndarray) -> Vocabulary:
        """A new vocabulary of the concepts at ``indices`` (in that order), re-numbered 0..n-1.

        The result keeps no link to this vocabulary: callers who need the old indices keep
        ``indices`` themselves. Raises :class:`VocabularyError` on an out-of-range or repeated
        index.
        """
        picked = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        n = len(self.concepts)
        if any(i < 0 or i >= n for i in picked):
            raise VocabularyError(f"subset index out of range for a vocabulary of {n}")
        if len(set(picked)) != len(picked):
            raise VocabularyError("subset indices must be distinct")
        return Vocabulary.from_concepts(self.concepts[i] for i in picked)


def _normalise_phrase(phrase: str) -> str:
    return " ".join(phrase.split())


def add_concepts(vocab: Vocabulary, phrases: Iterable[str], source: str = "user") -> Vocabulary:
    """``vocab`` with each phrase appended as a concept whose lemma and text are the phrase.

    Whitespace is collapsed; empty phrases and phrases equal (ignoring case) to an existing
    lemma or to an earlier phrase are skipped. Returns ``vocab`` itself when nothing is added.
    """
    known = {c.lemma.casefold() for c in vocab.concepts}
    added: list[Concept] = []
    for raw in phrases:
        phrase = _normalise_phrase(raw)
        key = phrase.casefold()
        if not phrase or key in known:
            continue
        known.add(key)
        added.append(
            Concept(index=len(vocab) + len(added), lemma=phrase, text=phrase, source=source)
        )
    if not added:
        return vocab
    return Vocabulary(vocab.concepts + tuple(added))


def class_name_concepts(vocab: Vocabulary, names: Iterable[str]) -> list[int]:
    """Indices of the concepts that *are* the class names, in the names' order (repeats out):
    a name that is already a lemma ("bird") is that concept, any other the phrase
    :func:`add_concepts` appended for it. Label-set mode queries these and restricts the
    vocabulary around them; selecting them by ``source == "class-name"`` missed every name
    that WordNet already had."""
    found: dict[int, None] = {}
    for raw in names:
        phrase = _normalise_phrase(raw)
        index = vocab.index_of(phrase) if phrase else None
        if index is not None:
            found[index] = None
    return list(found)


def spread_indices(total: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over ``range(total)``, first one 0, ascending.

    Index ``i`` is ``floor(i * total / count)``: every k-th concept with a fractional stride
    ``k = total / count``, so a small vocabulary samples the whole alphabet (or whatever order
    the concepts are in) instead of only its first letters. All of ``range(total)`` when
    ``count >= total``.
    """
    if count < 0 or total < 0:
        raise ValueError("total and count must be non-negative")
    if count >= total:
        return np.arange(total, dtype=np.int64)
    return (np.arange(count, dtype=np.int64) * total) // count


def build_vocabulary(
    config: VocabularyConfig,
    *,
    data_dir: Path,
    wordnet_dir: Path = DEFAULT_WORDNET_DIR,
) -> Vocabulary:
    """The vocabulary ``config`` asks for.

    1. WordNet's noun lemmas (only concrete ones when ``config.concrete_only``, only those
       under the synsets ``config.roots`` when it names some), read from ``wordnet_dir`` and
       cached under ``data_dir``;
    2. when ``config.max_concepts`` is set, that many of them picked evenly over the whole list
       (:func:`spread_indices` - deterministic, so the same config gives the same concepts);
    3. ``config.extra_concepts`` appended as ``user`` concepts (never cut by ``max_concepts``).

    Raises :class:`VocabularyError` when WordNet is missing or the result is empty, and
    :class:`ConfigError` for a ``max_concepts`` below 1 or a root WordNet does not have.
    """
    if config.max_concepts is not None and config.max_concepts < 1:
        raise ConfigError("max_concepts must be at least 1 (or None for no limit)")
    concepts = load_wordnet_concepts(
        data_dir=data_dir, wordnet_dir=wordnet_dir, concrete_only=config.concrete_only,
        roots=tuple(config.roots),
    )
    vocab = Vocabulary(tuple(concepts))
    if config.max_concepts is not None:
        vocab = vocab.subset(spread_indices(len(vocab), config.max_concepts))
    vocab = add_concepts(vocab, config.extra_concepts, source="user")
    if len(vocab) == 0:
        raise VocabularyError("the concept vocabulary is empty")
    return vocab
