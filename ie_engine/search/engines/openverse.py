"""Openverse (api.openverse.org): openly licensed images, a license on every result.

``GET {base}/images/?q=...&page=N&page_size=S[&license=by,cc0,...]``; the answer holds
``result_count``, ``page_count``, ``page`` and ``results``, each with ``url`` (the image),
``thumbnail``, ``foreign_landing_url`` (the page), ``title``, ``creator``, ``license`` (a code
such as ``by-sa``), ``license_version``, ``license_url``, ``attribution`` (a ready credit line),
``width``, ``height``, ``provider`` and ``source``. Anonymous clients get at most 20 results a
page and a modest request rate; an OAuth token (``OPENVERSE_TOKEN``, sent as a bearer token)
raises both. The license filter is sent along, so the server drops other licenses first.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ie_engine.search.engines.base import (
    HttpRequest,
    WebEngine,
    json_list,
    opt_int,
    text_of,
)
from ie_engine.search.engines.cache import Page
from ie_engine.types import SearchResult

# Our license codes -> Openverse's ``license`` parameter values.
_OPENVERSE_LICENSES = {
    "cc0": "cc0", "pd": "pdm", "by": "by", "by-sa": "by-sa", "by-nd": "by-nd", "by-nc": "by-nc",
    "by-nc-sa": "by-nc-sa", "by-nc-nd": "by-nc-nd",
}


class OpenverseEngine(WebEngine):
    kind: ClassVar[str] = "openverse"
    max_page_size: ClassVar[int] = 500

    def _license_param(self) -> str:
        codes = sorted(_OPENVERSE_LICENSES[c] for c in self.license_filter.allowed
                       if c in _OPENVERSE_LICENSES)
        return ",".join(codes)

    def variant(self) -> str:
        return f"{super().variant()};license={self._license_param()}"

    def build_request(self, query: str, page: int, page_size: int) -> HttpRequest:
        params = {"q": query, "page": str(page), "page_size": str(page_size), "mature": "false"}
        lic = self._license_param()
        if lic:
            params["license"] = lic
        headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key \
            else {}
        return HttpRequest(f"{self.settings.base_url.rstrip('/')}/images/", params, headers)

    def parse_page(self, payload: Any, page: int, page_size: int) -> Page:
        raw = json_list(payload["results"], "results")
        out: list[SearchResult] = []
        for i, r in enumerate(raw):
            if not isinstance(r, dict) or not isinstance(r.get("url"), str) or not r["url"]:
                raise TypeError(f"result {i} has no image url")
            name = text_of(r.get("license"))
            version = text_of(r.get("license_version"))
            human = _human_license(name, version)
            out.append(self.make_result(
                image_url=r["url"],
                rank=(page - 1) * page_size + i + 1,
                page_url=text_of(r.get("foreign_landing_url")),
                title=text_of(r.get("title")),
                license=human,
                license_url=text_of(r.get("license_url")),
                creator=text_of(r.get("creator")),
                thumbnail_url=text_of(r.get("thumbnail")),
                width=opt_int(r.get("width")),
                height=opt_int(r.get("height")),
                attribution=text_of(r.get("attribution")),
                extra={"id": text_of(r.get("id")), "provider": text_of(r.get("provider")),
                       "source": text_of(r.get("source")),
                       "creator_url": text_of(r.get("creator_url"))},
            ))
        page_count = opt_int(payload.get("page_count"))
        has_more = page < page_count if page_count is not None else len(raw) >= page_size
        return Page(out, has_more)


def _human_license(code: str, version: str) -> str:
    """``("by-sa", "2.0")`` -> ``"CC BY-SA 2.0"``; ``("pdm", "1.0")`` -> ``"Public Domain Mark
    1.0"``; ``("cc0", "1.0")`` -> ``"CC0 1.0"``."""
    c = code.lower()
    if c == "pdm":
        base = "Public Domain Mark"
    elif c == "cc0":
        base = "CC0"
    elif c.startswith("by"):
        base = f"CC {c.upper()}"
    else:
        base = code
    return f"{base} {version}".strip()


__all__ = ["OpenverseEngine"]
