"""Flickr's REST API: ``flickr.photos.search`` with an API key and a license filter.

``GET {base}?method=flickr.photos.search&api_key=K&text=Q&license=4,5,9,...&page=N&per_page=S
&extras=license,owner_name,url_l,url_q,...&format=json&nojsoncallback=1``. A success is
``{"stat": "ok", "photos": {"page", "pages", "perpage", "total", "photo": [...]}}``; a failure
comes with HTTP 200 as ``{"stat": "fail", "code": N, "message": "..."}`` (code 105, "service
currently unavailable", is retried). Licenses are numeric ids (:data:`FLICKR_LICENSES`).

Without a license filter the search still asks only for openly licensed photos (every id but
0, "All Rights Reserved"): this project never asks Flickr for all-rights-reserved images.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ie_engine.errors import SearchError
from ie_engine.search.engines.base import (
    HttpRequest,
    RetryableAnswer,
    WebEngine,
    json_list,
    opt_int,
    text_of,
)
from ie_engine.search.engines.cache import Page
from ie_engine.search.engines.licenses import normalise_license
from ie_engine.types import SearchResult

FLICKR_LICENSES: dict[int, tuple[str, str]] = {
    0: ("All Rights Reserved", ""),
    1: ("CC BY-NC-SA 2.0", "https://creativecommons.org/licenses/by-nc-sa/2.0/"),
    2: ("CC BY-NC 2.0", "https://creativecommons.org/licenses/by-nc/2.0/"),
    3: ("CC BY-NC-ND 2.0", "https://creativecommons.org/licenses/by-nc-nd/2.0/"),
    4: ("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/"),
    5: ("CC BY-SA 2.0", "https://creativecommons.org/licenses/by-sa/2.0/"),
    6: ("CC BY-ND 2.0", "https://creativecommons.org/licenses/by-nd/2.0/"),
    7: ("No known copyright restrictions", "https://www.flickr.com/commons/usage/"),
    8: ("United States Government Work", "http://www.usa.gov/copyright.shtml"),
    9: ("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    10: ("Public Domain Mark 1.0", "https://creativecommons.org/publicdomain/mark/1.0/"),
    11: ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    12: ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
    13: ("CC BY-ND 4.0", "https://creativecommons.org/licenses/by-nd/4.0/"),
    14: ("CC BY-NC 4.0", "https://creativecommons.org/licenses/by-nc/4.0/"),
    15: ("CC BY-NC-SA 4.0", "https://creativecommons.org/licenses/by-nc-sa/4.0/"),
    16: ("CC BY-NC-ND 4.0", "https://creativecommons.org/licenses/by-nc-nd/4.0/"),
}
"""Flickr's license ids (``flickr.photos.licenses.getInfo``) -> (name, deed URL)."""

# Sizes asked for, best first: "large" 1024 px, then 800 and 640 px, then the original.
_SIZES = ("l", "c", "z", "o")
_RETRYABLE_CODES = frozenset({105, 106, 0})


class FlickrEngine(WebEngine):
    kind: ClassVar[str] = "flickr"
    max_page_size: ClassVar[int] = 500
    needs_key: ClassVar[bool] = True

    def license_ids(self) -> list[int]:
        allowed = self.license_filter.allowed
        return sorted(i for i, (name, url) in FLICKR_LICENSES.items()
                      if i != 0 and (not allowed or normalise_license(name, url) in allowed))

    def variant(self) -> str:
        ids = ",".join(map(str, self.license_ids()))
        return f"{super().variant()};license={ids}"

    def build_request(self, query: str, page: int, page_size: int) -> HttpRequest:
        params = {
            "method": "flickr.photos.search",
            "api_key": self.settings.api_key,
            "text": query,
            "license": ",".join(map(str, self.license_ids())),
            "sort": "relevance",
            "content_type": "1",  # photos only (no screenshots or "other")
            "media": "photos",
            "safe_search": "1",
            "extras": "license,owner_name," + ",".join(f"url_{s}" for s in (*_SIZES, "q")),
            "page": str(page),
            "per_page": str(page_size),
            "format": "json",
            "nojsoncallback": "1",
        }
        return HttpRequest(self.settings.base_url, params)

    def check_payload(self, payload: Any, retry_after: float | None) -> None:
        if isinstance(payload, dict) and payload.get("stat") == "fail":
            code = opt_int(payload.get("code"))
            message = text_of(payload.get("message"))
            if code in _RETRYABLE_CODES:
                raise RetryableAnswer(f"Flickr error {code}: {message}", retry_after)
            raise SearchError(f"search engine {self.name!r}: Flickr error {code}: {message}")

    def parse_page(self, payload: Any, page: int, page_size: int) -> Page:
        photos = payload["photos"]
        raw = json_list(photos["photo"], "photos.photo")
        out: list[SearchResult] = []
        for i, p in enumerate(raw):
            size = next((s for s in _SIZES if isinstance(p.get(f"url_{s}"), str)), None)
            if size is None:
                continue  # no downloadable size offered for this photo
            lic_id = opt_int(p.get("license"))
            name, url = FLICKR_LICENSES.get(lic_id if lic_id is not None else -1, ("", ""))
            owner = text_of(p.get("owner"))
            title = text_of(p.get("title"))
            creator = text_of(p.get("ownername"))
            out.append(self.make_result(
                image_url=p[f"url_{size}"],
                rank=(page - 1) * page_size + i + 1,
                page_url=f"https://www.flickr.com/photos/{owner}/{text_of(p.get('id'))}",
                title=title,
                license=name,
                license_url=url,
                creator=creator,
                thumbnail_url=text_of(p.get("url_q")),
                width=opt_int(p.get(f"width_{size}")),
                height=opt_int(p.get(f"height_{size}")),
                attribution=_credit(title, creator, name),
                extra={"id": text_of(p.get("id")), "owner": owner},
            ))
        pages = opt_int(photos.get("pages"))
        has_more = page < pages if pages is not None else len(raw) >= page_size
        return Page(out, has_more)


def _credit(title: str, creator: str, license_name: str) -> str:
    who = f" by {creator}" if creator else ""
    lic = f", licensed under {license_name}" if license_name else ""
    return f'"{title or "Untitled"}"{who} on Flickr{lic}'


__all__ = ["FLICKR_LICENSES", "FlickrEngine"]
