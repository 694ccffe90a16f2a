"""WordNet's nouns as concepts, read offline from Debian's ``wordnet-base`` files.

NLTK's WordNet reader is used on the database that ``apt-get install wordnet-base
wordnet-sense-index`` puts in ``/usr/share/wordnet``. Two things stand between those files and
the reader, both handled here:

* the reader wants a ``lexnames`` file (lexicographer file numbers and names) that no Debian
  package ships; we write it from the list documented in WordNet's ``lexnames(5)``;
* NLTK's path sandbox refuses symlinks and any folder outside ``nltk.data.path``; so the files
  are *copied* into ``{data_dir}/nltk_data/corpora/wordnet/`` and ``{data_dir}/nltk_data`` is
  added to ``nltk.data.path`` (the one global change we make, and only an append).

Reading all 82k noun synsets through NLTK takes several seconds, so the finished concept list is
cached as JSON in ``data_dir``; later loads read that file and never import NLTK.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ie_engine.errors import VocabularyError
from ie_engine.types import Concept
from ie_engine.vocabulary.cache import atomic_write

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
"""Where Debian's ``wordnet-base`` and ``wordnet-sense-index`` install the database."""

INSTALL_HINT = "install them with: apt-get install wordnet-base wordnet-sense-index"

WORDNET_FILES: tuple[str, ...] = (
    "cntlist.rev",
    "index.sense",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
)
"""Database files NLTK's reader opens (besides ``lexnames``, which we write ourselves)."""

_LEXNAME_POS = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}

LEXNAMES: tuple[str, ...] = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)
"""The 45 lexicographer files of WordNet 3.0, in file-number order (``lexnames(5)``)."""

CONCRETE_ROOT = "physical_entity.n.01"
"""A noun is concrete when this synset is among its (instance) hypernyms, transitively."""

_STALE_STAGING_S = 3600.0
"""A staging folder older than this (seconds) is a crash's leftover and is removed."""

CONCEPT_CACHE_VERSION = 1
"""Bumped whenever the way concepts are built changes, so stale caches are ignored."""


def lexnames_text() -> str:
    """The ``lexnames`` file: ``NN<TAB>name<TAB>syntactic category`` per line."""
    lines = []
    for number, name in enumerate(LEXNAMES):
        pos = _LEXNAME_POS[name.split(".", 1)[0]]
        lines.append(f"{number:02d}\t{name}\t{pos}\n")
    return "".join(lines)


def check_wordnet_files(wordnet_dir: Path) -> None:
    """Raise :class:`VocabularyError` naming every database file missing in ``wordnet_dir``."""
    missing = [name for name in WORDNET_FILES if not (wordnet_dir / name).is_file()]
    if missing:
        raise VocabularyError(
            f"WordNet files missing in {wordnet_dir}: {', '.join(missing)}; {INSTALL_HINT}"
        )


def _source_fingerprint(wordnet_dir: Path) -> str:
    """Short hash of the database files' names, sizes and mtimes: a changed WordNet rebuilds."""
    h = hashlib.sha256()
    for name in WORDNET_FILES:
        st = (wordnet_dir / name).stat()
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _corpus_is_complete(corpus: Path, wordnet_dir: Path) -> bool:
    """True when ``corpus`` holds a ``lexnames`` and a same-sized copy of every file."""
    try:
        if (corpus / "lexnames").read_text(encoding="utf-8") != lexnames_text():
            return False
        for name in WORDNET_FILES:
            copy = corpus / name
            if copy.is_symlink() or copy.stat().st_size != (wordnet_dir / name).stat().st_size:
                return False
    except OSError:
        return False
    return True


def install_nltk_wordnet(wordnet_dir: Path, data_dir: Path) -> Path:
    """Copy the database into ``{data_dir}/nltk_data/corpora/wordnet`` and return that folder.

    Idempotent: a complete folder is reused as it is. The copy is staged in a hidden sibling
    folder and renamed into place in one step, so a crash leaves no half folder under the
    name the reader uses (only a stray staging folder, which a later install removes once it
    is an hour old). If two processes install at once, the first rename wins and the other
    discards its copy.
    """
    check_wordnet_files(wordnet_dir)
    corpora = data_dir / "nltk_data" / "corpora"
    corpus = corpora / "wordnet"
    if _corpus_is_complete(corpus, wordnet_dir):
        return corpus
    corpora.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for stale in corpora.glob(".wordnet-*"):
        # Left by a crash; a young one may be another process's install in progress.
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > _STALE_STAGING_S:
                shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=corpora, prefix=".wordnet-staging-"))
    try:
        for name in WORDNET_FILES:
            # copyfile follows a symlinked source and writes a plain file, as NLTK requires.
            shutil.copyfile(wordnet_dir / name, staging / name)
        (staging / "lexnames").write_text(lexnames_text(), encoding="utf-8")
        if _corpus_is_complete(corpus, wordnet_dir):
            return corpus  # another process finished first (staging is removed below)
        if corpus.exists() or corpus.is_symlink():
            # An incomplete or outdated copy: move it out of the way, then drop it.
            trash = Path(tempfile.mkdtemp(dir=corpora, prefix=".wordnet-old-"))
            with contextlib.suppress(FileNotFoundError):
                os.replace(corpus, trash / "wordnet")
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(staging, corpus)
        except OSError:
            # Another process put a folder there first; use it if it is complete.
            if not _corpus_is_complete(corpus, wordnet_dir):
                raise
    except OSError as exc:
        raise VocabularyError(f"cannot prepare the NLTK WordNet folder {corpus}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return corpus


def open_wordnet(wordnet_dir: Path, data_dir: Path) -> Any:
    """An NLTK ``WordNetCorpusReader`` on the copied database (see :func:`install_nltk_wordnet`).

    The reader's mapping to other WordNet versions (only used by the multilingual functions)
    is switched off: computing it would read ``index.sense`` a second time through NLTK's global
    data path, for nothing we use.
    """
    corpus = install_nltk_wordnet(wordnet_dir, data_dir)
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _OfflineWordNetReader(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            return None

    # NLTK's sandbox only opens files under nltk.data.path; register our folder (once).
    root = str(corpus.parent.parent.resolve())
    if root not in [str(p) for p in nltk.data.path]:
        nltk.data.path.append(root)
    try:
        with warnings.catch_warnings():
            # "The multilingual functions are not available": expected, we pass no OMW reader.
            warnings.simplefilter("ignore", UserWarning)
            return _OfflineWordNetReader(str(corpus.resolve()), None)
    except (OSError, ValueError, AssertionError) as exc:
        raise VocabularyError(f"cannot read WordNet from {corpus}: {exc}; {INSTALL_HINT}") from exc


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


def load_wordnet_concepts(
    *,
    data_dir: Path,
    wordnet_dir: Path = DEFAULT_WORDNET_DIR,
    concrete_only: bool = False,
) -> list[Concept]:
    """One :class:`Concept` per distinct WordNet noun lemma, indexed 0..N-1 in WordNet order.

    ``concrete_only`` keeps the nouns whose first synset descends from ``physical_entity.n.01``
    (objects, living things, substances), dropping abstractions such as "happiness".
    """
    nouns = load_wordnet_nouns(data_dir=data_dir, wordnet_dir=wordnet_dir)
    rows = zip(nouns.lemmas, nouns.texts, nouns.synsets, nouns.concrete, strict=True)
    kept = [row for row in rows if row[3]] if concrete_only else list(rows)
    return [
        Concept(index=i, lemma=lemma, text=text, source="wordnet", synset=synset)
        for i, (lemma, text, synset, _) in enumerate(kept)
    ]
