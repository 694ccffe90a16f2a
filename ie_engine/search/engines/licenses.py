"""License names as engines spell them, reduced to a few stable codes, and the license filter.

Engines name the same license many ways (``"by-sa"`` + ``"2.0"`` from Openverse,
``"CC BY-SA 4.0"`` from Wikimedia Commons, licence id ``5`` from Flickr, a deed URL elsewhere).
:func:`normalise_license` maps every spelling to one code:

=============== ==============================================================================
``cc0``         CC0 public domain dedication
``pd``          public domain (Public Domain Mark, ``PD-*`` tags, US government works)
``by``          CC BY (attribution)
``by-sa``       CC BY-SA
``by-nd``       CC BY-ND
``by-nc``       CC BY-NC
``by-nc-sa``    CC BY-NC-SA
``by-nc-nd``    CC BY-NC-ND
``nkcr``        "no known copyright restrictions" (Flickr Commons institutions)
``gfdl``        GNU Free Documentation License
``arr``         all rights reserved
``""``          unknown: the engine said nothing usable
=============== ==============================================================================

A :class:`LicenseFilter` keeps results whose code is in its set; a result of unknown license is
dropped whenever a filter is set (engines without license data, such as Brave or SearXNG, then
return nothing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ie_engine.errors import ConfigError
from ie_engine.types import SearchResult

LICENSE_CODES: Final = (
    "cc0", "pd", "by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd", "nkcr", "gfdl", "arr",
)
"""Every code :func:`normalise_license` may return, besides ``""`` (unknown)."""

PRESETS: Final[dict[str, tuple[str, ...]]] = {
    "public-domain": ("cc0", "pd"),
    "attribution": ("cc0", "pd", "by"),
    "open": ("cc0", "pd", "by", "by-sa"),
    "commercial": ("cc0", "pd", "by", "by-sa", "by-nd"),
    "any-cc": ("cc0", "pd", "by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd"),
}
"""Named sets usable wherever a list of license codes is expected."""

_CC_ELEMENTS: Final = ("by", "nc", "nd", "sa")
_WORDS: Final = {
    "attribution": "by",
    "noncommercial": "nc",
    "non-commercial": "nc",
    "noderivs": "nd",
    "noderivatives": "nd",
    "no-derivatives": "nd",
    "sharealike": "sa",
    "share-alike": "sa",
}


def _cc_code(elements: Iterable[str]) -> str:
    """``{"by", "sa"}`` -> ``"by-sa"`` in the canonical order (by, nc, nd/sa)."""
    found = set(elements)
    if "by" not in found:
        return ""
    return "-".join(e for e in _CC_ELEMENTS if e in found)


def _from_url(url: str) -> str:
    u = url.lower()
    if "creativecommons.org/publicdomain/zero" in u:
        return "cc0"
    if "creativecommons.org/publicdomain/mark" in u or "usa.gov/" in u:
        return "pd"
    m = re.search(r"creativecommons\.org/licenses/([a-z-]+)", u)
    if m:
        return _cc_code(m.group(1).split("-"))
    if "flickr.com/commons/usage" in u:
        return "nkcr"
    if "gnu.org/licenses/fdl" in u or "gnu.org/copyleft/fdl" in u:
        return "gfdl"
    return ""


def normalise_license(name: str, url: str = "") -> str:
    """The license code of an engine's license name (or, failing that, its URL); ``""`` if
    neither says anything recognisable."""
    s = " ".join(name.lower().replace("_", " ").split())
    if not s:
        return _from_url(url)
    if s in LICENSE_CODES:
        return s
    compact = s.replace(" ", "").replace("-", "")
    if compact in {"cc0", "cczero", "cc01.0", "publicdomaindedication(cc0)", "zero"} or (
        "cc0" in compact
    ):
        return "cc0"
    if compact in {"pd", "pdm", "publicdomain", "publicdomainmark", "publicdomainmark1.0"}:
        return "pd"
    if s.startswith(("pd-", "pd ", "public domain")) or "government work" in s:
        return "pd"
    if "no known copyright" in s:
        return "nkcr"
    if s.startswith("all rights reserved") or s in {"arr", "copyrighted", "©"}:
        return "arr"
    if "gfdl" in compact or "gnufreedocumentation" in compact:
        return "gfdl"
    tokens = re.split(r"[\s\-/]+", s.replace("license", " ").replace("licence", " "))
    elements = {_WORDS.get(t, t) for t in tokens if t}
    code = _cc_code(elements & set(_CC_ELEMENTS))
    if code and (elements - set(_CC_ELEMENTS)) <= {"cc", "creative", "commons", "unported"} | {
        t for t in elements if re.fullmatch(r"\d+(\.\d+)?", t)
    }:
        return code
    return _from_url(url)


def parse_license_codes(names: Iterable[str]) -> frozenset[str]:
    """Codes from user input: codes, preset names or any spelling :func:`normalise_license`
    knows (``"CC-BY"``, ``"public domain"``). Raise :class:`ConfigError` on anything else."""
    out: set[str] = set()
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name.lower() in PRESETS:
            out.update(PRESETS[name.lower()])
            continue
        code = normalise_license(name)
        if not code:
            known = ", ".join((*LICENSE_CODES, *PRESETS))
            raise ConfigError(f"unknown license {name!r}; use one of {known}")
        out.add(code)
    return frozenset(out)


@dataclass(frozen=True)
class LicenseFilter:
    """Keeps results whose normalised license is in ``allowed``; an empty set keeps all."""

    allowed: frozenset[str] = frozenset()

    @classmethod
    def from_names(cls, names: Iterable[str]) -> LicenseFilter:
        return cls(parse_license_codes(names))

    @property
    def active(self) -> bool:
        return bool(self.allowed)

    def code_of(self, result: SearchResult) -> str:
        return result.extra.get("license_code") or normalise_license(
            result.license, result.license_url
        )

    def allows(self, result: SearchResult) -> bool:
        return not self.allowed or self.code_of(result) in self.allowed

    def describe(self) -> str:
        return ",".join(sorted(self.allowed)) if self.allowed else "any"


__all__ = [
    "LICENSE_CODES",
    "PRESETS",
    "LicenseFilter",
    "normalise_license",
    "parse_license_codes",
]
