"""Captions for the offline web's images: the text each one is embedded by.

One caption per image (:func:`make_caption`): title, description, then keywords, the file name
made readable (:func:`humanize_name`) and category words, each only when it adds a word not seen
yet, cut to :data:`MAX_CAPTION_CHARS`. The cleaning helpers drop what would only add noise to an
embedding: XML entities and markup, URLs and e-mail addresses, "converted from" boilerplate,
keywords that merely repeat the creator's name, and catch-all categories.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

MAX_CAPTION_CHARS = 300
"""Captions are cut (at a word boundary) to this length: the embedder truncates anyway, and long
flag histories would otherwise drown the title."""
MAX_DESCRIPTION_CHARS = 500

NOISE_CATEGORY_WORDS = frozenset({"unsorted", "special", "misc"})

_WORD_RE = re.compile(r"[0-9a-zà-ÿ]+")
_URL_RE = re.compile(r"(https?://|www\.)\S+", re.IGNORECASE)
_EMAIL_RE = re.compile(r"\S+@\S+")
_BOILERPLATE_RE = re.compile(r"\bconverted from\b", re.IGNORECASE)


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _clean_text(text: str) -> str:
    """Unescape XML entities, drop CDATA markers and collapse whitespace."""
    text = text.replace("<![CDATA[", "").replace("]]>", "")
    text = re.sub(r"<[^>]+>", " ", text)  # stray inner markup
    return " ".join(html.unescape(text).split())


def humanize_name(stem: str, creator: str = "") -> str:
    """Turn a file stem into words: ``acquila_architetto_franc_01`` by "Architetto Francesco
    Rollandin" becomes ``acquila``.

    Separators become spaces, trailing numbers go, and trailing tokens that abbreviate the
    creator's name (openclipart appends a truncated author name) are removed.
    """
    tokens = [t for t in re.split(r"[_\-\s.]+", stem) if t]
    creator_words = _words(creator)
    while len(tokens) > 1:
        last = tokens[-1].lower()
        if last.isdigit() or any(
            w == last or (len(last) >= 2 and w.startswith(last)) for w in creator_words
        ):
            tokens.pop()
        else:
            break
    # "home13" -> "home", but "30x20x100" and "m16" (too short to be a word) stay as they are.
    cleaned = [
        re.sub(r"\d+$", "", tok) if re.fullmatch(r"[^\W\d_]{3,}\d+", tok) else tok
        for tok in tokens
    ]
    return " ".join(cleaned).strip()


def _category_terms(category: str) -> list[str]:
    terms = []
    for part in category.split("/"):
        words = [w for w in _words(part.replace("_", " ")) if not w.isdigit()]
        phrase = " ".join(words)
        if phrase and phrase not in NOISE_CATEGORY_WORDS:
            terms.append(phrase)
    return terms


def make_caption(title: str, description: str, terms: Iterable[str]) -> str:
    """One caption for the embedder: title, description, then the extra terms (keywords, file
    name, category words) that add a word not seen yet; cut to :data:`MAX_CAPTION_CHARS`."""
    seen: set[str] = set()
    head: list[str] = []
    for part in (title, description):
        if part and not set(_words(part)) <= seen:
            head.append(part.rstrip(". "))
            seen.update(_words(part))
    tail: list[str] = []
    for term in terms:
        words = _words(term)
        if words and not set(words) <= seen:
            tail.append(term)
            seen.update(words)
    text = ". ".join(head)
    if tail:
        text = f"{text}. {', '.join(tail)}" if text else ", ".join(tail)
    if len(text) > MAX_CAPTION_CHARS:
        cut = text[:MAX_CAPTION_CHARS]
        text = cut[: cut.rfind(" ")] if " " in cut else cut
    return text.strip(" ,.")


def _clean_description(text: str) -> str:
    text = _EMAIL_RE.sub(" ", _URL_RE.sub(" ", text))
    text = " ".join(text.split()).strip(" -,;:")
    if _BOILERPLATE_RE.search(text) or len(_words(text)) < 1:
        return ""
    if len(text) > MAX_DESCRIPTION_CHARS:
        text = text[:MAX_DESCRIPTION_CHARS].rsplit(" ", 1)[0] + "…"
    return text


def _clean_keywords(keywords: Iterable[str], creator: str) -> list[str]:
    creator_words = set(_words(creator))
    out: list[str] = []
    for kw in keywords:
        if "@" in kw or "http" in kw.lower():
            continue
        phrase = " ".join(kw.replace("_", " ").split()).lower()
        words = set(_words(phrase))
        if not words or (creator_words and words <= creator_words) or phrase in out:
            continue
        out.append(phrase)
    return out


__all__ = [
    "MAX_CAPTION_CHARS",
    "MAX_DESCRIPTION_CHARS",
    "NOISE_CATEGORY_WORDS",
    "humanize_name",
    "make_caption",
]
