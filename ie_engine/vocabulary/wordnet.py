"""WordNet's nouns as concepts, read offline from Debian's ``wordnet-base`` files.

The database is opened with NLTK's reader by :mod:`ie_engine.vocabulary.nltk_wordnet` (which
copies it where NLTK accepts it and writes the ``lexnames`` file Debian does not ship); its
public names are importable from here too.

Reading all 82k noun synsets through NLTK takes several seconds, so the finished concept list is
cached as JSON in ``data_dir``; later loads read that file and never import NLTK.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ie_engine.errors import ConfigError, VocabularyError
from ie_engine.types import Concept
from ie_engine.vocabulary.cache import atomic_write
from ie_engine.vocabulary.nltk_wordnet import (
    DEFAULT_WORDNET_DIR,
    INSTALL_HINT,
    LEXNAMES,
    WORDNET_FILES,
    check_wordnet_files,
    install_nltk_wordnet,
    lexnames_text,
    open_wordnet,
)

CONCRETE_ROOT = "physical_entity.n.01"
"""A noun is concrete when this synset is among its (instance) hypernyms, transitively."""

CONCEPT_CACHE_VERSION = 1
"""Bumped whenever the way concepts are built changes, so stale caches are ignored."""


def _source_fingerprint(wordnet_dir: Path) -> str:
    """Short hash of the database files' names, sizes and mtimes: a changed WordNet rebuilds."""
    h = hashlib.sha256()
    for name in WORDNET_FILES:
        st = (wordnet_dir / name).stat()
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class WordNetNouns:
    """Every distinct noun lemma, as parallel columns (fast to cache and to load).

    Row ``i`` is one lemma with its first (most frequent) synset: ``lemmas[i]`` (underscores
    replaced by spaces, case as WordNet writes it), ``texts[i]`` = ``"{lemma} ({hypernym}):
    {definition}"``, ``synsets[i]`` (e.g. ``dog.n.01``) and ``concrete[i]`` (whether
    ``physical_entity.n.01`` is among the synset's hypernyms or instance hypernyms,
    transitively).
    """

    lemmas: tuple[str, ...]
    texts: tuple[str, ...]
    synsets: tuple[str, ...]
    concrete: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.lemmas)


def _pretty(name: str) -> str:
    return name.replace("_", " ")


def _first_hypernym_offsets(data_noun: Path) -> dict[int, int]:
    """Offset of each noun synset's first hypernym, in the order ``data.noun`` lists them.

    NLTK keeps a synset's pointers in a set, so ``synset.hypernyms()`` comes out in an order
    that changes with Python's hash seed; "the first hypernym" must come from the file itself.
    A regular hypernym (``@``) is preferred to an instance hypernym (``@i``). The file is read
    with plain Python I/O: NLTK's seekable stream reader is ten times slower for one pass.
    """
    first: dict[int, int] = {}
    with data_noun.open("r", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(" "):  # the licence header
                continue
            tokens = line.split("|", 1)[0].split()
            offset = int(tokens[0])
            pos = 4 + 2 * int(tokens[3], 16)  # skip the hex word count and (word, lex_id) pairs
            count = int(tokens[pos])
            pointers = [tokens[pos + 1 + 4 * k : pos + 5 + 4 * k] for k in range(count)]
            for wanted in ("@", "@i"):
                found = [int(p[1]) for p in pointers if p[0] == wanted and p[2] == "n"]
                if found:
                    first[offset] = found[0]
                    break
    return first


def read_wordnet_nouns(reader: Any) -> WordNetNouns:
    """Every distinct noun lemma of ``reader`` (an NLTK WordNet reader), in ``index.noun`` order.

    ``index.noun`` is alphabetical and lower-case; each entry lists its synsets by decreasing
    sense frequency. A lemma spelled with capitals (``Mercury`` the god next to ``mercury`` the
    element) is a distinct concept: each spelling takes the first synset, in that order, whose
    lemma names contain it. So the list is alphabetical, case variants side by side.
    """
    first_hypernym = _first_hypernym_offsets(Path(reader.root.path) / "data.noun")
    concrete_memo: dict[str, bool] = {}

    def is_concrete(synset: Any) -> bool:
        name = synset.name()
        if name not in concrete_memo:
            parents = synset.hypernyms() + synset.instance_hypernyms()
            concrete_memo[name] = any(p.name() == CONCRETE_ROOT or is_concrete(p) for p in parents)
        return concrete_memo[name]

    lemmas: list[str] = []
    texts: list[str] = []
    synsets: list[str] = []
    concrete: list[bool] = []
    seen: set[str] = set()
    for key in reader.all_lemma_names(pos="n"):
        for synset in reader.synsets(key, pos="n"):
            # synsets() also returns the synsets of morphological base forms ("glasses" ->
            # "glass"): only names spelled like ``key`` (up to case) belong to this entry.
            for name in synset.lemma_names():
                if name.lower() != key or name in seen:
                    continue
                seen.add(name)
                lemma = _pretty(name)
                parent = first_hypernym.get(synset.offset())
                if parent is None:
                    text = f"{lemma}: {synset.definition()}"
                else:
                    hypernym = reader.synset_from_pos_and_offset("n", parent).lemma_names()[0]
                    text = f"{lemma} ({_pretty(hypernym)}): {synset.definition()}"
                lemmas.append(lemma)
                texts.append(text)
                synsets.append(synset.name())
                concrete.append(is_concrete(synset))
    return WordNetNouns(tuple(lemmas), tuple(texts), tuple(synsets), tuple(concrete))


def _cache_path(data_dir: Path, wordnet_dir: Path) -> Path:
    fingerprint = _source_fingerprint(wordnet_dir)
    return data_dir / f"wordnet-nouns-v{CONCEPT_CACHE_VERSION}-{fingerprint}.json"


def _read_cache(path: Path) -> WordNetNouns | None:
    """The cached nouns, or None when the file is absent or not what we wrote."""
    try:
        payload = json.loads(path.read_bytes())
        if payload["version"] != CONCEPT_CACHE_VERSION:
            return None
        nouns = WordNetNouns(
            tuple(payload["lemmas"]),
            tuple(payload["texts"]),
            tuple(payload["synsets"]),
            tuple(c == "1" for c in payload["concrete"]),
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None
    columns = (nouns.texts, nouns.synsets, nouns.concrete)
    if not nouns.lemmas or any(len(col) != len(nouns.lemmas) for col in columns):
        return None
    return nouns


def _write_cache(path: Path, nouns: WordNetNouns) -> None:
    payload = {
        "version": CONCEPT_CACHE_VERSION,
        "lemmas": nouns.lemmas,
        "texts": nouns.texts,
        "synsets": nouns.synsets,
        "concrete": "".join("1" if c else "0" for c in nouns.concrete),
    }
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    atomic_write(path, lambda fh: fh.write(data))


def load_wordnet_nouns(*, data_dir: Path, wordnet_dir: Path = DEFAULT_WORDNET_DIR) -> WordNetNouns:
    """All noun lemmas of the installed WordNet, built once and then read from a JSON cache.

    The cache file in ``data_dir`` is keyed by a format version and by the database files'
    sizes and mtimes; a missing or unreadable cache is rebuilt (about ten seconds), a present
    one loads in well under a second. Raises :class:`VocabularyError` when files are missing.
    """
    check_wordnet_files(wordnet_dir)
    cache = _cache_path(data_dir, wordnet_dir)
    nouns = _read_cache(cache)
    if nouns is None:
        nouns = read_wordnet_nouns(open_wordnet(wordnet_dir, data_dir))
        if not nouns.lemmas:
            raise VocabularyError(f"no noun found in the WordNet files of {wordnet_dir}")
        _write_cache(cache, nouns)
    return nouns


def _split_synset_name(name: str) -> tuple[str, int] | None:
    """``("bird", 1)`` for ``"bird.n.01"`` (as NLTK reads a name: case does not matter, the
    lemma may hold dots); None when ``name`` is not a noun synset's name."""
    parts = name.strip().lower().rsplit(".", 2)
    if len(parts) != 3 or not parts[0] or parts[1] != "n" or not parts[2].isascii():
        return None
    if not parts[2].isdigit() or int(parts[2]) < 1:
        return None
    return parts[0], int(parts[2])


def check_synset_names(names: tuple[str, ...] | list[str]) -> None:
    """Raise :class:`ConfigError` naming every entry of ``names`` that is not spelled like a
    noun synset's name (``bird.n.01``: lemma, ``n``, sense number). Reads no file."""
    bad = [name for name in names if _split_synset_name(name) is None]
    if bad:
        listed = ", ".join(repr(name[:60]) for name in bad[:5])
        what = "is not a WordNet noun synset name" if len(bad) == 1 else \
            "are not WordNet noun synset names"
        raise ConfigError(f"{listed} {what} (like bird.n.01)")


def _noun_index(wordnet_dir: Path, wanted: set[str] | None = None) -> dict[str, tuple[int, ...]]:
    """``index.noun``: each lemma (lower case, underscores) and the offsets of its synsets, most
    frequent sense first; only the lemmas in ``wanted`` when given."""
    index: dict[str, tuple[int, ...]] = {}
    with (wordnet_dir / "index.noun").open("r", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(" "):  # the licence header
                continue
            lemma, rest = line.split(" ", 1)
            if wanted is not None and lemma not in wanted:
                continue
            tokens = rest.split()
            count = int(tokens[1])  # after the part of speech: the number of synsets
            index[lemma] = tuple(int(offset) for offset in tokens[-count:])
    return index


def _hyponym_offsets(data_noun: Path) -> dict[int, list[int]]:
    """The offsets of each noun synset's hyponyms and instance hyponyms (``~``, ``~i``)."""
    children: dict[int, list[int]] = {}
    with data_noun.open("r", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(" "):
                continue
            tokens = line.split("|", 1)[0].split()
            pos = 4 + 2 * int(tokens[3], 16)
            count = int(tokens[pos])
            found = [int(tokens[pos + 2 + 4 * k]) for k in range(count)
                     if tokens[pos + 1 + 4 * k] in ("~", "~i") and tokens[pos + 3 + 4 * k] == "n"]
            if found:
                children[int(tokens[0])] = found
    return children


def resolve_synsets(names: tuple[str, ...] | list[str],
                    wordnet_dir: Path = DEFAULT_WORDNET_DIR) -> dict[str, int]:
    """The ``data.noun`` offset of each noun synset named in ``names`` (``bird.n.01``).

    Raises :class:`ConfigError` naming every name that is misspelled or that the installed
    WordNet does not have, and :class:`VocabularyError` when its files are missing.
    """
    check_synset_names(names)
    check_wordnet_files(wordnet_dir)
    split = {name: _split_synset_name(name) for name in names}
    index = _noun_index(wordnet_dir, {lemma for lemma, _ in filter(None, split.values())})
    found: dict[str, int] = {}
    unknown: list[str] = []
    for name, parts in split.items():
        assert parts is not None  # checked above
        lemma, sense = parts
        offsets = index.get(lemma, ())
        if sense <= len(offsets):
            found[name] = offsets[sense - 1]
        else:
            unknown.append(name)
    if unknown:
        listed = ", ".join(repr(name[:60]) for name in unknown[:5])
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(f"WordNet has no noun synset{plural} {listed}")
    return found


def synsets_under(roots: tuple[str, ...] | list[str],
                  wordnet_dir: Path = DEFAULT_WORDNET_DIR) -> frozenset[str]:
    """The names of the noun synsets in ``roots`` and of all their hyponyms and instance
    hyponyms, transitively (``bird.n.01`` gives every bird, down to ``robin.n.01``).

    Read from ``index.noun`` and ``data.noun`` with plain Python (about a second), never through
    NLTK. Names are written as NLTK writes them: the synset's first lemma in lower case and its
    sense number in that lemma's ``index.noun`` entry. Raises :class:`ConfigError` for an
    unknown or misspelled root.
    """
    offsets = resolve_synsets(roots, wordnet_dir)
    children = _hyponym_offsets(wordnet_dir / "data.noun")
    seen: set[int] = set()
    stack = list(offsets.values())
    while stack:
        offset = stack.pop()
        if offset not in seen:
            seen.add(offset)
            stack.extend(children.get(offset, ()))
    index = _noun_index(wordnet_dir)
    names: set[str] = set()
    for lemma, synsets in index.items():
        for sense, offset in enumerate(synsets, start=1):
            if offset in seen:
                names.add(f"{lemma}.n.{sense:02d}")
    return frozenset(names)


def load_wordnet_concepts(
    *,
    data_dir: Path,
    wordnet_dir: Path = DEFAULT_WORDNET_DIR,
    concrete_only: bool = False,
    roots: tuple[str, ...] = (),
) -> list[Concept]:
    """One :class:`Concept` per distinct WordNet noun lemma, indexed 0..N-1 in WordNet order.

    ``concrete_only`` keeps the nouns whose first synset descends from ``physical_entity.n.01``
    (objects, living things, substances), dropping abstractions such as "happiness". ``roots``
    (synset names such as ``bird.n.01``), when given, keeps the nouns whose first synset is one
    of them or descends from one (:func:`synsets_under`); both filters may apply together.
    Raises :class:`ConfigError` naming an unknown root.
    """
    under = synsets_under(roots, wordnet_dir) if roots else None  # a bad root fails first
    nouns = load_wordnet_nouns(data_dir=data_dir, wordnet_dir=wordnet_dir)
    rows = zip(nouns.lemmas, nouns.texts, nouns.synsets, nouns.concrete, strict=True)
    kept = [row for row in rows if row[3]] if concrete_only else list(rows)
    if under is not None:
        kept = [row for row in kept if row[2].lower() in under]
    return [
        Concept(index=i, lemma=lemma, text=text, source="wordnet", synset=synset)
        for i, (lemma, text, synset, _) in enumerate(kept)
    ]


__all__ = [
    "CONCEPT_CACHE_VERSION",
    "CONCRETE_ROOT",
    "DEFAULT_WORDNET_DIR",
    "INSTALL_HINT",
    "LEXNAMES",
    "WORDNET_FILES",
    "WordNetNouns",
    "check_synset_names",
    "check_wordnet_files",
    "install_nltk_wordnet",
    "lexnames_text",
    "load_wordnet_concepts",
    "load_wordnet_nouns",
    "open_wordnet",
    "read_wordnet_nouns",
    "resolve_synsets",
    "synsets_under",
]
