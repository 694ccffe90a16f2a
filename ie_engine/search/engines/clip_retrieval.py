"""A LAION-style text-to-image kNN service: the back-end of ``clip-retrieval`` (``clip-retrieval
back``), self-hosted over your own index.

``POST {base}/knn-service`` with a JSON body (``text``, ``modality: "image"``, ``num_images``,
``indice_name``, ``deduplicate``, ``use_safety_model``, ``use_violence_detector``,
``aesthetic_score``, ``aesthetic_weight``, ``num_result_ids`` ...) answers a JSON list of
``{"url", "caption", "id", "similarity"}``, nearest first. The service has no pages: page N
asks for ``N * page_size`` neighbours and keeps the last ``page_size``. An error comes back as
``{"error": "..."}``. The index has no license information; captions become titles.

Keep the safety model on, and serve an index whose links were checked (Re-LAION-5B rather than
the withdrawn LAION-5B).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ie_engine.errors import SearchError
from ie_engine.search.engines.base import HttpRequest, WebEngine, text_of
from ie_engine.search.engines.cache import Page


def _flag(value: str) -> bool:
    return value.strip().lower() not in {"0", "false", "no", "off", ""}


class ClipRetrievalEngine(WebEngine):
    kind: ClassVar[str] = "clip-retrieval"
    max_page_size: ClassVar[int] = 1000

    @property
    def index_name(self) -> str:
        return self.settings.options.get("indice_name", "laion5B-L-14")

    def variant(self) -> str:
        o = self.settings.options
        return (f"{super().variant()};index={self.index_name};"
                f"safety={o.get('use_safety_model', '1')};dedup={o.get('deduplicate', '1')};"
                f"aesthetic={o.get('aesthetic_score', '')}/{o.get('aesthetic_weight', '')}")

    def build_request(self, query: str, page: int, page_size: int) -> HttpRequest:
        o = self.settings.options
        wanted = page * page_size
        body = {
            "text": query,
            "image": None,
            "image_url": None,
            "embedding_input": None,
            "modality": "image",
            "num_images": wanted,
            "indice_name": self.index_name,
            "num_result_ids": max(wanted, int(o.get("num_result_ids", "3000"))),
            "use_mclip": _flag(o.get("use_mclip", "0")),
            "deduplicate": _flag(o.get("deduplicate", "1")),
            "use_safety_model": _flag(o.get("use_safety_model", "1")),
            "use_violence_detector": _flag(o.get("use_violence_detector", "1")),
            "aesthetic_score": o.get("aesthetic_score", ""),
            "aesthetic_weight": o.get("aesthetic_weight", ""),
        }
        return HttpRequest(f"{self.settings.base_url.rstrip('/')}/knn-service", method="POST",
                           json_body=body)

    def check_payload(self, payload: Any, retry_after: float | None) -> None:
        if isinstance(payload, dict) and "error" in payload:
            raise SearchError(f"search engine {self.name!r}: {text_of(payload['error'])}")

    def parse_page(self, payload: Any, page: int, page_size: int) -> Page:
        if not isinstance(payload, list):
            raise TypeError("the answer is not a list of neighbours")
        start = (page - 1) * page_size
        out = []
        for i, r in enumerate(payload[start:start + page_size]):
            if not isinstance(r, dict) or not isinstance(r.get("url"), str):
                raise TypeError(f"neighbour {start + i} has no url")
            sim = r.get("similarity")
            out.append(self.make_result(
                image_url=r["url"],
                rank=start + i + 1,
                title=text_of(r.get("caption")),
                score=float(sim) if isinstance(sim, int | float) else None,
                extra={"id": text_of(r.get("id"))},
            ))
        return Page(out, len(payload) >= start + page_size)


__all__ = ["ClipRetrievalEngine"]
