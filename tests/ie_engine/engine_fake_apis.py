"""Fake image search APIs for the engine tests, served by a real aiohttp server on 127.0.0.1.

Each API answers from the JSON files in ``engine_fixtures/`` (written from each API's
documented response format) the way the real one pages: Openverse by ``page``, Commons by
``gsroffset`` + ``continue``, Flickr by ``page``/``pages``, SearXNG by ``pageno`` (an empty
page ends), the clip-retrieval back-end by ``num_images``, Brave in one page. The query
``nothing`` matches nothing everywhere. A test can queue scripted answers per API (a 429 with
``Retry-After``, a 503, broken JSON ...) that are served before the normal ones. Every request
is recorded.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

FIXTURES = Path(__file__).parent / "engine_fixtures"
KINDS = ("openverse", "wikimedia", "flickr", "searxng", "clip-retrieval", "brave")
PREFIX = {
    "openverse": "/openverse/v1",
    "wikimedia": "/commons/w/api.php",
    "flickr": "/flickr/services/rest/",
    "searxng": "/searxng",
    "clip-retrieval": "/clip",
    "brave": "/brave/res/v1",
}
GOOD_KEY = "good-key-123"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class Scripted:
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    kind: str
    method: str
    params: dict[str, str]
    headers: dict[str, str]
    body: Any


class FakeApis:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.scripts: dict[str, list[Scripted]] = defaultdict(list)

    def script(self, kind: str, *answers: Scripted) -> None:
        self.scripts[kind].extend(answers)

    def calls(self, kind: str) -> list[Recorded]:
        return [r for r in self.requests if r.kind == kind]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(PREFIX["openverse"] + "/images/", self._wrap("openverse", _openverse))
        app.router.add_get(PREFIX["wikimedia"], self._wrap("wikimedia", _wikimedia))
        app.router.add_get(PREFIX["flickr"], self._wrap("flickr", _flickr))
        app.router.add_get(PREFIX["searxng"] + "/search", self._wrap("searxng", _searxng))
        app.router.add_post(PREFIX["clip-retrieval"] + "/knn-service",
                            self._wrap("clip-retrieval", _clip))
        app.router.add_get(PREFIX["brave"] + "/images/search", self._wrap("brave", _brave))
        return app

    def _wrap(self, kind: str, handler: Any) -> Any:
        async def handle(request: web.Request) -> web.Response:
            body = await request.json() if request.method == "POST" else None
            params = dict(request.query)
            self.requests.append(Recorded(kind, request.method, params, dict(request.headers),
                                          body))
            if self.scripts[kind]:
                s = self.scripts[kind].pop(0)
                return web.Response(status=s.status, text=s.body, headers=s.headers,
                                    content_type="application/json")
            status, payload, headers = handler(params, body, request.headers)
            return web.json_response(payload, status=status, headers=headers)

        return handle


Answer = tuple[int, Any, dict[str, str]]


def _openverse(params: dict[str, str], body: Any, headers: Any) -> Answer:
    if params.get("q") == "nothing":
        return 200, fixture("openverse_empty.json"), {}
    page = int(params.get("page", "1"))
    if page > 2:
        return 400, {"detail": "Invalid page: beyond the last page"}, {}
    return 200, fixture(f"openverse_page{page}.json"), {}


def _wikimedia(params: dict[str, str], body: Any, headers: Any) -> Answer:
    if params.get("gsrsearch", "").endswith("nothing"):
        return 200, fixture("wikimedia_empty.json"), {}
    offset = int(params.get("gsroffset", "0"))
    return 200, fixture("wikimedia_page1.json" if offset == 0 else "wikimedia_page2.json"), {}


def _flickr(params: dict[str, str], body: Any, headers: Any) -> Answer:
    if params.get("api_key") != GOOD_KEY:
        return 200, fixture("flickr_badkey.json"), {}
    if params.get("text") == "nothing":
        return 200, fixture("flickr_empty.json"), {}
    page = int(params.get("page", "1"))
    return 200, fixture(f"flickr_page{min(page, 2)}.json"), {}


def _searxng(params: dict[str, str], body: Any, headers: Any) -> Answer:
    if params.get("format") != "json":
        return 403, {"error": "format not allowed"}, {}
    if params.get("q") == "nothing" or int(params.get("pageno", "1")) > 1:
        return 200, fixture("searxng_empty.json"), {}
    return 200, fixture("searxng_page1.json"), {}


def _clip(params: dict[str, str], body: Any, headers: Any) -> Answer:
    if body.get("text") == "nothing":
        return 200, [], {}
    return 200, fixture("clip_knn.json")[: int(body["num_images"])], {}


def _brave(params: dict[str, str], body: Any, headers: Any) -> Answer:
    if headers.get("X-Subscription-Token") != GOOD_KEY:
        return 422, fixture("brave_error.json"), {}
    payload = fixture("brave_images.json")
    if params.get("q") == "nothing":
        payload["results"] = []
    return 200, payload, {}
