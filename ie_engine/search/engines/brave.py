"""Brave Search's Image Search API (paid; its own independent index).

``GET {base}/images/search?q=Q&count=S&safesearch=strict&spellcheck=0`` with the key in the
``X-Subscription-Token`` header (``BRAVE_SEARCH_API_KEY``). The answer is ``{"type": "images",
"query": {...}, "results": [...], "extra": {...}}``; a result has ``url`` (the page where the
image was found), ``title``, ``source`` (its domain), ``thumbnail.src`` (a Brave-served
thumbnail), ``properties.url`` (the image itself), ``properties.width``/``height`` (for most
images since mid-2025) and ``confidence``. Errors come as ``{"type": "ErrorResponse", "error":
{...}}`` with a 4xx status; 429 when over the plan's rate.

The image endpoint has no offset: one request returns up to 200 results and there is no page 2
(so a query costs exactly one request). No license information: with a license filter set,
Brave contributes nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ie_engine.search.engines.base import (
    HttpRequest,
    WebEngine,
    json_objects,
    opt_int,
    text_of,
)
from ie_engine.search.engines.cache import Page
from ie_engine.types import SearchResult


class BraveImagesEngine(WebEngine):
    kind: ClassVar[str] = "brave"
    max_page_size: ClassVar[int] = 200
    needs_key: ClassVar[bool] = True

    def variant(self) -> str:
        o = self.settings.options
        return (f"{super().variant()};country={o.get('country', '')};"
                f"lang={o.get('search_lang', '')};safe={o.get('safesearch', 'strict')}")

    def build_request(self, query: str, page: int, page_size: int) -> HttpRequest:
        o = self.settings.options
        params = {"q": query, "count": str(page_size),
                  "safesearch": o.get("safesearch", "strict"), "spellcheck": "0"}
        for key in ("country", "search_lang"):
            if o.get(key):
                params[key] = o[key]
        headers = {"X-Subscription-Token": self.settings.api_key, "Accept": "application/json"}
        return HttpRequest(f"{self.settings.base_url.rstrip('/')}/images/search", params, headers)

    async def fetch_page(self, query: str, page: int) -> Page:
        if page > 1:
            return Page([], False)  # never a request: the endpoint has no further pages
        return await super().fetch_page(query, page)

    def parse_page(self, payload: Any, page: int, page_size: int) -> Page:
        raw = json_objects(payload["results"], "results")
        out: list[SearchResult] = []
        for r in raw:
            props = r.get("properties") or {}
            thumb = r.get("thumbnail") or {}
            image = props.get("url")
            if not isinstance(image, str) or not image:
                continue
            out.append(self.make_result(
                image_url=image,
                rank=len(out) + 1,
                page_url=text_of(r.get("url")),
                title=text_of(r.get("title")),
                thumbnail_url=text_of(thumb.get("src")),
                width=opt_int(props.get("width")),
                height=opt_int(props.get("height")),
                extra={"source": text_of(r.get("source")),
                       "confidence": text_of(r.get("confidence"))},
            ))
        return Page(out, False)


__all__ = ["BraveImagesEngine"]
