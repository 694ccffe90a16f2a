"""SearXNG, the self-hosted meta-search engine, in its JSON format and images category.

``GET {base}/search?q=Q&format=json&categories=images&pageno=N&safesearch=1`` answers
``{"query", "number_of_results", "results": [...], "unresponsive_engines": [...] ...}``; an image
result has ``img_src`` (the image), ``thumbnail_src``, ``url`` (the page), ``title``, ``engine``
and, depending on the upstream engine, ``resolution`` (``"1920 x 1080"``), ``author``,
``source``. The JSON format must be enabled in the instance's ``settings.yml``
(``search.formats``), otherwise it answers 403. The page size is the instance's (about 20 to
100 images per page); an empty page ends the answer. No license information: with a license
filter set, SearXNG contributes nothing.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from ie_engine.errors import SearchError
from ie_engine.search.engines.base import HttpRequest, WebEngine, json_objects, text_of
from ie_engine.search.engines.cache import Page
from ie_engine.types import SearchResult

_RESOLUTION = re.compile(r"^\s*(\d+)\s*[x×]\s*(\d+)\s*$")


def parse_resolution(value: Any) -> tuple[int | None, int | None]:
    m = _RESOLUTION.match(text_of(value))
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


class SearxngEngine(WebEngine):
    kind: ClassVar[str] = "searxng"
    max_page_size: ClassVar[int] = 1000  # decided by the instance; used for ranks only

    def variant(self) -> str:
        opts = self.settings.options
        return (f"{self.kind};engines={opts.get('engines', '')};"
                f"lang={opts.get('language', '')};safe={opts.get('safesearch', '1')}")

    def build_request(self, query: str, page: int, page_size: int) -> HttpRequest:
        opts = self.settings.options
        params = {"q": query, "format": "json", "categories": "images", "pageno": str(page),
                  "safesearch": opts.get("safesearch", "1")}
        for key in ("engines", "language"):
            if opts.get(key):
                params[key] = opts[key]
        headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key \
            else {}
        return HttpRequest(f"{self.settings.base_url.rstrip('/')}/search", params, headers)

    def parse_page(self, payload: Any, page: int, page_size: int) -> Page:
        raw = json_objects(payload["results"], "results")
        out: list[SearchResult] = []
        for r in raw:
            img = r.get("img_src")
            if not isinstance(img, str) or not img.startswith(("http://", "https://")):
                continue  # a non-image result, or an inline data: URL
            width, height = parse_resolution(r.get("resolution"))
            listed = r.get("engines")
            engines: list[Any] = listed if isinstance(listed, list) else []
            out.append(self.make_result(
                image_url=img,
                rank=(page - 1) * page_size + len(out) + 1,
                page_url=text_of(r.get("url")),
                title=text_of(r.get("title")),
                creator=text_of(r.get("author")),
                thumbnail_url=text_of(r.get("thumbnail_src")),
                width=width,
                height=height,
                extra={"upstream": text_of(r.get("engine")) or ",".join(map(str, engines)),
                       "source": text_of(r.get("source"))},
            ))
        return Page(out, bool(raw))

    def check_payload(self, payload: Any, retry_after: float | None) -> None:
        if not isinstance(payload, dict):
            raise SearchError(f"search engine {self.name!r}: the answer is not a JSON object")


__all__ = ["SearxngEngine", "parse_resolution"]
