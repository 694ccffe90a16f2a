"""NLTK's WordNet reader on Debian's ``wordnet-base`` files.

NLTK's WordNet reader is used on the database that ``apt-get install wordnet-base
wordnet-sense-index`` puts in ``/usr/share/wordnet``. Two things stand between those files and
the reader, both handled here:

* the reader wants a ``lexnames`` file (lexicographer file numbers and names) that no Debian
  package ships; we write it from the list documented in WordNet's ``lexnames(5)``;
* NLTK's path sandbox refuses symlinks and any folder outside ``nltk.data.path``; so the files
  are *copied* into ``{data_dir}/nltk_data/corpora/wordnet/`` and ``{data_dir}/nltk_data`` is
  added to ``nltk.data.path`` (the one global change we make, and only an append).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from ie_engine.errors import VocabularyError

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

_STALE_STAGING_S = 3600.0
"""A staging folder older than this (seconds) is a crash's leftover and is removed."""


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


__all__ = [
    "DEFAULT_WORDNET_DIR",
    "INSTALL_HINT",
    "LEXNAMES",
    "WORDNET_FILES",
    "check_wordnet_files",
    "install_nltk_wordnet",
    "lexnames_text",
    "open_wordnet",
]
