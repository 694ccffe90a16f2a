"""Wikimedia Commons through the MediaWiki Action API.

One request per page: ``generator=search`` over the File namespace (``gsrnamespace=6``) with
``prop=imageinfo`` (URL, size, a thumbnail of ``thumb_width`` pixels and the license metadata
Commons extracts from each file page). ``formatversion=2`` returns ``query.pages`` as a list;
each page has an ``index`` (its search rank) and one ``imageinfo`` entry whose ``extmetadata``
holds ``LicenseShortName``, ``LicenseUrl``, ``Artist`` (HTML), ``Attribution``, ``ObjectName``.
``continue`` is present when more results follow.

Wikimedia asks API clients for a descriptive User-Agent with contact information and for
requests one at a time; ``maxlag=5`` makes the API refuse (``error.code == "maxlag"`` with a
``Retry-After``) while its replicas lag, which is retried like a 503.
"""

from __future__ import annotations

import html
import re
from typing import Any, ClassVar

from ie_engine.errors import SearchError
from ie_engine.search.engines.base import (
    HttpRequest,
    RetryableAnswer,
    WebEngine,
    opt_int,
    text_of,
)
from ie_engine.search.engines.cache import Page
from ie_engine.types import SearchResult

_TAG = re.compile(r"<[^>]+>")
_FILE_EXT = re.compile(r"\.(jpe?g|png|gif|webp|tiff?|svg|bmp)$", re.IGNORECASE)


def plain_text(value: str) -> str:
    """Commons metadata is HTML: drop tags, unescape entities, collapse white space."""
    return " ".join(html.unescape(_TAG.sub(" ", value)).split())


class WikimediaEngine(WebEngine):
    kind: ClassVar[str] = "wikimedia"
    max_page_size: ClassVar[int] = 50  # imageinfo with extmetadata: at most 50 files a request

    @property
    def thumb_width(self) -> int:
        return int(self.settings.options.get("thumb_width", "320"))

    @property
    def search_prefix(self) -> str:
        # Bitmaps only: the downloader reads raster formats (SVG would be refused anyway).
        return self.settings.options.get("search_prefix", "filetype:bitmap")

    def variant(self) -> str:
        return f"{super().variant()};tw={self.thumb_width};pre={self.search_prefix}"

    def build_request(self, query: str, page: int, page_size: int) -> HttpRequest:
        params = {
            "action": "query",
            "format": "json",
            "formatversion": "2",
            "generator": "search",
            "gsrsearch": f"{self.search_prefix} {query}".strip(),
            "gsrnamespace": "6",
            "gsrlimit": str(page_size),
            "gsroffset": str((page - 1) * page_size),
            "prop": "imageinfo",
            "iiprop": "url|size|mime|extmetadata",
            "iiurlwidth": str(self.thumb_width),
            "iiextmetadatafilter": "LicenseShortName|LicenseUrl|Artist|Attribution|ObjectName"
                                   "|UsageTerms",
            "maxlag": "5",
        }
        return HttpRequest(self.settings.base_url, params)

    def check_payload(self, payload: Any, retry_after: float | None) -> None:
        err = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(err, dict):
            code = text_of(err.get("code"))
            info = text_of(err.get("info"))
            if code in ("maxlag", "ratelimited", "internal_api_error_DBQueryTimeoutError"):
                raise RetryableAnswer(f"API error {code}: {info}", retry_after or 5.0)
            raise SearchError(f"search engine {self.name!r}: API error {code}: {info}")

    def parse_page(self, payload: Any, page: int, page_size: int) -> Page:
        if not isinstance(payload, dict):
            raise TypeError("the answer is not an object")
        query = payload.get("query")
        if query is None:  # no match at all: MediaWiki leaves "query" out
            return Page([], False)
        pages = query["pages"]
        if isinstance(pages, dict):  # formatversion=1 shape, accepted as well
            pages = list(pages.values())
        if not isinstance(pages, list):
            raise TypeError("'query.pages' is not a list")
        ordered = sorted(pages, key=lambda p: opt_int(p.get("index")) or 0)
        out: list[SearchResult] = []
        offset = (page - 1) * page_size
        for p in ordered:
            infos = p.get("imageinfo") or []
            if not infos:
                continue  # a file without image information (deleted meanwhile)
            info = infos[0]
            url = info["url"]
            if not isinstance(url, str):
                raise TypeError("imageinfo.url is not a string")
            meta = info.get("extmetadata") or {}

            def field(key: str, meta: dict[str, Any] = meta) -> str:
                v = meta.get(key)
                return plain_text(text_of(v.get("value"))) if isinstance(v, dict) else ""

            title = field("ObjectName") or _FILE_EXT.sub("", text_of(p.get("title"))
                                                           .removeprefix("File:"))
            creator = field("Artist")
            license_name = field("LicenseShortName") or field("UsageTerms")
            attribution = field("Attribution") or _credit(title, creator, license_name)
            out.append(self.make_result(
                image_url=url,
                rank=offset + len(out) + 1,
                page_url=text_of(info.get("descriptionurl")),
                title=title,
                license=license_name,
                license_url=field("LicenseUrl"),
                creator=creator,
                thumbnail_url=text_of(info.get("thumburl")),
                width=opt_int(info.get("width")),
                height=opt_int(info.get("height")),
                attribution=attribution,
                extra={"pageid": text_of(p.get("pageid")), "mime": text_of(info.get("mime"))},
            ))
        return Page(out, "continue" in payload)


def _credit(title: str, creator: str, license_name: str) -> str:
    parts = [f'"{title}"' if title else "Image"]
    if creator:
        parts.append(f"by {creator}")
    if license_name:
        parts.append(f"({license_name})")
    return " ".join(parts) + ", via Wikimedia Commons"


__all__ = ["WikimediaEngine", "plain_text"]
