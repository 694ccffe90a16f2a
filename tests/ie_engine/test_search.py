"""Tests of the offline web: corpus scanning and building, the index, the HTTP service and client.

A tiny fake openclipart/tuxpaint tree is written under tmp_path and embedded with a hashed
bag-of-words embedder (deterministic, instant); one test reads the real Debian package trees
without embedding anything.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ie_engine.errors import CorpusError, SearchError
from ie_engine.search import (
    CorpusIndex,
    CorpusItem,
    HttpSearchEngine,
    ServerHandle,
    build_corpus,
    create_app,
    scan_sources,
    serve_in_background,
)
from ie_engine.search.corpus import humanize_name, item_id, make_caption, png_size


class BagOfWordsEmbedder:
    """Hashed bag of words: texts sharing words get a positive cosine, others zero."""

    name = "test-bow"
    dim = 64

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: list[str], *, progress: Any = None) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                out[row, zlib.crc32(word.encode()) % self.dim] += 1.0
            if not out[row].any():
                out[row, 0] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


SVG_TEMPLATE = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/"
     xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <metadata>
    <rdf:RDF>
      <cc:Work rdf:about="">
        <dc:title>{title}</dc:title>
        <dc:description>{description}</dc:description>
        <dc:subject><rdf:Bag>{keywords}</rdf:Bag></dc:subject>
        <dc:publisher><cc:Agent><dc:title>Open Clip Art Library</dc:title></cc:Agent>
        </dc:publisher>
        <dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator>
        <cc:license rdf:resource="http://web.resource.org/cc/PublicDomain"/>
      </cc:Work>
    </rdf:RDF>
  </metadata>
  <rect width="10" height="10"/>
</svg>
"""


def _png(path: Path, size: tuple[int, int] = (8, 6), color: str = "red") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _clipart(
    root: Path, rel: str, title: str, description: str = "", keywords: tuple[str, ...] = (),
    creator: str = "Jane Doe",
) -> None:
    _png(root / "png" / f"{rel}.png")
    svg = root / "svg" / f"{rel}.svg"
    svg.parent.mkdir(parents=True, exist_ok=True)
    lis = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    svg.write_text(
        SVG_TEMPLATE.format(title=title, description=description, keywords=lis, creator=creator),
        encoding="utf-8",
    )


def _stamp(root: Path, rel: str, description: str | None) -> None:
    _png(root / f"{rel}.png", color="blue")
    if description is not None:
        (root / f"{rel}.txt").write_text(
            f"{description}\nfr.utf8=Une traduction.\nde.utf8=Eine Übersetzung.\n",
            encoding="utf-8",
        )


@pytest.fixture(scope="module")
def fake_roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("pkgs")
    oc, tux = base / "openclipart", base / "stamps"
    _clipart(oc, "animals/birds/red_parrot_jane_do_01", "Red Parrot",
             "A red parrot on a branch", ("parrot", "bird", "jane doe"))
    _clipart(oc, "animals/birds/blue_jay_jane_doe_01", "Blue jay", "", ("bird",))
    _clipart(oc, "recreation/music/violin_john_smi_01", "Violin &amp; bow",
             "someone@example.org", ("music", "instrument", "http://x.org"),
             creator="John Smith")
    _clipart(oc, "food/fruit/strawberry_01", "", "", ("fruit",))  # no title: file name used
    # A symlink aliasing the parrot into a second category: one item, both categories.
    (oc / "png/tropical").mkdir(parents=True)
    (oc / "png/tropical/parrot_alias.png").symlink_to(
        oc / "png/animals/birds/red_parrot_jane_do_01.png"
    )
    _stamp(tux, "animals/birds/parrot", "A green parrot.")
    _stamp(tux, "vehicles/cars/cartoon/sports_car", "A fast red sports car.")
    _stamp(tux, "vehicles/cars/cartoon/sports_car_mirror", None)  # pre-flipped copy: skipped
    _stamp(tux, "symbols/no_text_01", None)
    (tux / "symbols/vector_only.svg").write_text("<svg/>")  # no PNG: not an item
    return oc, tux


@pytest.fixture(scope="module")
def built(fake_roots: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    oc, tux = fake_roots
    out = tmp_path_factory.mktemp("corpus") / "corpus"
    build_corpus(out, embedder=BagOfWordsEmbedder(), openclipart_root=oc, tuxpaint_root=tux)
    return out


def _by_title(items: list[CorpusItem]) -> dict[str, CorpusItem]:
    return {it.title: it for it in items}


# ---------------------------------------------------------------------------------- parsing


def test_scan_reads_metadata_ids_and_categories(fake_roots: tuple[Path, Path]) -> None:
    oc, tux = fake_roots
    items = scan_sources(openclipart_root=oc, tuxpaint_root=tux)
    assert [it.source for it in items] == ["openclipart"] * 4 + ["tuxpaint"] * 3
    t = _by_title(items)

    parrot = t["Red Parrot"]
    assert parrot.category == "animals/birds"
    assert parrot.creator == "Jane Doe"
    assert parrot.description == "A red parrot on a branch"
    assert parrot.keywords == ("parrot", "bird")  # the creator's name is no keyword
    assert parrot.also_in == ("tropical",)
    assert "tropical" in parrot.text and "birds" in parrot.text
    assert parrot.license == "public-domain" and parrot.license_url
    assert parrot.id == item_id("openclipart", "animals/birds/red_parrot_jane_do_01.png")
    assert parrot.path == str((oc / "png/animals/birds/red_parrot_jane_do_01.png").resolve())
    assert (parrot.width, parrot.height) == (8, 6)

    violin = t["Violin & bow"]  # entity decoded
    assert violin.description == ""  # an e-mail address is not a description
    assert violin.keywords == ("music", "instrument")
    assert violin.creator == "John Smith"

    assert t["strawberry"].category == "food/fruit"  # empty title: from the file name

    stamp = t["Parrot"]
    assert stamp.source == "tuxpaint" and stamp.license == "GPL-2.0"
    assert stamp.category == "animals/birds"
    assert stamp.description == "A green parrot."  # first line only, not the translations
    assert stamp.text.startswith("A green parrot")
    car = t["Sports car"]
    assert car.category == "vehicles/cars/cartoon"
    assert "No text" in t  # a stamp without a .txt still counts
    assert not any("mirror" in it.path for it in items)
    assert len({it.id for it in items}) == len(items)

    again = scan_sources(openclipart_root=oc, tuxpaint_root=tux)
    assert [it.id for it in again] == [it.id for it in items]  # stable


def test_helpers() -> None:
    assert humanize_name("acquila_architetto_franc_01", "Architetto Francesco Rollandin") == (
        "acquila"
    )
    assert humanize_name("woman_police_02_gerald_g", "Gerald_G") == "woman police"
    assert humanize_name("home13") == "home"
    assert humanize_name("mpcad_box_30x20x100") == "mpcad box 30x20x100"
    caption = make_caption("Red parrot", "parrot, red", ["parrot", "bird", "animals", "birds"])
    assert caption == "Red parrot. bird, animals, birds"
    assert len(make_caption("x " * 400, "", [])) <= 300


def test_png_size_reads_header_only(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    _png(p, (13, 7))
    assert png_size(p) == (13, 7)
    (tmp_path / "b.png").write_bytes(b"not a png at all, no")
    assert png_size(tmp_path / "b.png") is None


def test_missing_package_names_apt_get(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="apt-get install openclipart-png"):
        scan_sources(["openclipart"], openclipart_root=tmp_path / "nope")
    with pytest.raises(CorpusError, match="apt-get install tuxpaint-stamps-default"):
        scan_sources(["tuxpaint"], tuxpaint_root=tmp_path / "nope")
    with pytest.raises(CorpusError, match="unknown corpus source"):
        scan_sources(["flickr"])


REAL_OPENCLIPART = Path("/usr/share/openclipart")
REAL_TUXPAINT = Path("/usr/share/tuxpaint/stamps")


@pytest.mark.skipif(
    not (REAL_OPENCLIPART / "svg").is_dir() or not REAL_TUXPAINT.is_dir(),
    reason="openclipart-png/-svg and tuxpaint-stamps-default are not installed",
)
def test_scan_real_package_trees() -> None:
    items = scan_sources()
    oc = [it for it in items if it.source == "openclipart"]
    tux = [it for it in items if it.source == "tuxpaint"]
    assert len(oc) > 6000 and len(tux) > 500
    assert len({it.id for it in items}) == len(items)
    categories = {it.category for it in items}
    assert "animals/birds" in {it.category for it in oc}
    assert "animals/birds" in {it.category for it in tux}
    assert len({c.split("/")[0] for c in categories}) >= 20
    assert all(it.text and it.title for it in items)
    assert sum(1 for it in oc if it.description) > 500
    assert sum(1 for it in oc if it.creator) > 6000
    assert sum(1 for it in tux if it.description) > 500
    assert all(Path(it.path).is_file() for it in items[::50])
    # The decompression bombs are listed with their header size, never decoded.
    assert max(it.width * it.height for it in oc if it.width and it.height) > 100_000_000
    saturn_png = "science/astronomy/saturn_dan_gerhards_01.png"
    saturn = next(it for it in oc if it.path.endswith(saturn_png))
    assert (saturn.title, saturn.creator) == ("Saturn", "Dan Gerhards")
    assert "Planet Saturn" in saturn.text


# ---------------------------------------------------------------------------- build + index


def test_build_writes_files(built: Path) -> None:
    info = json.loads((built / "corpus.json").read_text())
    assert info["count"] == 7
    assert info["counts"] == {"openclipart": 4, "tuxpaint": 3}
    assert info["embedder"] == "test-bow" and info["dim"] == 64
    emb = np.load(built / "embeddings.npy")
    assert emb.dtype == np.float32 and emb.shape == (7, 64)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert len((built / "items.jsonl").read_text().splitlines()) == 7
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_rebuild_replaces_atomically_and_excludes(
    fake_roots: tuple[Path, Path], tmp_path: Path
) -> None:
    oc, tux = fake_roots
    out = tmp_path / "c"
    emb = BagOfWordsEmbedder()
    first = build_corpus(out, embedder=emb, openclipart_root=oc, tuxpaint_root=tux)
    assert first.count == 7 and first.build_seconds >= 0
    info = build_corpus(
        out, embedder=emb, sources=("tuxpaint",), tuxpaint_root=tux,
        exclude=lambda it: it.category.startswith("vehicles"),
    )
    assert info.count == 2 and info.excluded == 1 and info.counts == {"tuxpaint": 2}
    index = CorpusIndex.load(out)
    assert {it.title for it in index.items} == {"Parrot", "No text"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_search_is_graded_and_ordered(built: Path) -> None:
    index = CorpusIndex.load(built)
    emb = BagOfWordsEmbedder()
    hits = index.search(emb.embed(["red parrot"])[0], limit=10)
    assert len(hits) == 7
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    assert hits[0][0].title == "Red Parrot"
    assert len(set(np.round(scores, 4))) > 2  # graded, not a binary keyword match
    assert {it.title for it, _ in hits[:3]} >= {"Red Parrot", "Parrot"}
    assert index.search(emb.embed(["violin"])[0], limit=1)[0][0].title == "Violin & bow"
    assert index.search(emb.embed(["x"])[0], limit=0) == []
    with pytest.raises(CorpusError, match="dimensions"):
        index.search(np.ones(3, dtype=np.float32), limit=2)


def test_load_with_exclusions(built: Path) -> None:
    full = CorpusIndex.load(built)
    parrot = next(it for it in full.items if it.title == "Red Parrot")
    held = CorpusIndex.load(built, exclude_ids={parrot.id})
    assert len(held) == 6 and held.get(parrot.id) is None and full.get(parrot.id) is parrot
    q = BagOfWordsEmbedder().embed(["red parrot"])[0]
    assert all(it.id != parrot.id for it, _ in held.search(q, limit=10))
    assert held.search(q, limit=1)[0][0].title == "Parrot"
    only_oc = full.filter(lambda it: it.source != "openclipart")
    assert {it.source for it in only_oc.items} == {"openclipart"} and len(only_oc) == 4


def test_load_refuses_broken_corpora(built: Path, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"corpus\.json missing"):
        CorpusIndex.load(tmp_path / "none")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("items.jsonl", "embeddings.npy"):
        (bad / name).write_bytes((built / name).read_bytes())
    meta = json.loads((built / "corpus.json").read_text())
    (bad / "corpus.json").write_text(json.dumps({**meta, "version": 999}))
    with pytest.raises(CorpusError, match="format version"):
        CorpusIndex.load(bad)
    (bad / "corpus.json").write_text(json.dumps({**meta, "count": 3}))
    with pytest.raises(CorpusError, match="inconsistent"):
        CorpusIndex.load(bad)


# ----------------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def server(built: Path) -> Iterator[ServerHandle]:
    handle = serve_in_background(CorpusIndex.load(built), BagOfWordsEmbedder())
    yield handle
    handle.stop()


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type", "")


def test_server_search_json(server: ServerHandle) -> None:
    assert server.url.startswith("http://127.0.0.1:") and server.port > 0
    status, body, ctype = _get(f"{server.url}/search?q=red+parrot&limit=3")
    assert status == 200 and ctype.startswith("application/json")
    data = json.loads(body)
    assert data["query"] == "red parrot"
    results = data["results"]
    assert len(results) == 3
    top = results[0]
    assert set(top) >= {
        "image_url", "page_url", "title", "license", "license_url", "creator", "score", "rank",
        "width", "height", "extra",
    }
    assert top["title"] == "Red Parrot" and top["rank"] == 1
    assert top["image_url"] == f"{server.url}/images/{top['extra']['id']}"
    assert top["page_url"] == f"{server.url}/items/{top['extra']['id']}"
    assert top["extra"]["category"] == "animals/birds"
    assert top["extra"]["source"] == "openclipart"
    assert top["width"] is None and top["height"] is None
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert results[0]["score"] >= results[1]["score"] >= results[2]["score"]


def test_server_images_pages_and_errors(server: ServerHandle, built: Path) -> None:
    index = CorpusIndex.load(built)
    item = index.items[0]
    status, body, ctype = _get(f"{server.url}/images/{item.id}")
    assert status == 200 and ctype == "image/png"
    assert body == Path(item.path).read_bytes()
    status, body, ctype = _get(f"{server.url}/items/{item.id}")
    assert status == 200 and ctype.startswith("text/html") and item.title.encode() in body
    assert _get(f"{server.url}/images/0000000000000000")[0] == 404
    assert _get(f"{server.url}/images/..%2F..%2Fetc%2Fpasswd")[0] == 404
    assert _get(f"{server.url}/items/nope")[0] == 404
    status, body, _ = _get(f"{server.url}/search?limit=3")
    assert status == 400 and "error" in json.loads(body)
    assert _get(f"{server.url}/search?q=+++")[0] == 400
    assert _get(f"{server.url}/search?q=parrot&limit=abc")[0] == 400
    status, body, _ = _get(f"{server.url}/search?q=parrot&limit=100000")
    assert status == 200 and len(json.loads(body)["results"]) == 7  # capped, not refused
    status, body, _ = _get(f"{server.url}/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["items"] == 7


def test_server_holds_out_excluded_ids(built: Path) -> None:
    full = CorpusIndex.load(built)
    held_id = full.items[0].id
    index = CorpusIndex.load(built, exclude_ids={held_id})
    with serve_in_background(index, BagOfWordsEmbedder()) as handle:
        assert _get(f"{handle.url}/images/{held_id}")[0] == 404
        data = json.loads(_get(f"{handle.url}/search?q=parrot&limit=50")[1])
        assert held_id not in {r["extra"]["id"] for r in data["results"]}


def test_create_app_refuses_other_embedder(built: Path) -> None:
    other = BagOfWordsEmbedder()
    other.name = "something-else"
    with pytest.raises(CorpusError, match="built with test-bow"):
        create_app(CorpusIndex.load(built), other)


async def test_http_engine_against_server(server: ServerHandle) -> None:
    async with HttpSearchEngine(server.url, name="offline") as engine:
        results = await engine.search("violin", limit=2)
        assert len(results) == 2
        assert results[0].title == "Violin & bow"
        assert results[0].engine == "offline"
        assert results[0].extra["category"] == "recreation/music"
        assert results[0].rank == 1 and results[0].score is not None
        assert results[0].image_url.startswith(server.url + "/images/")
        assert results[0].license == "public-domain"
        again = await engine.search("violin", limit=2)  # served from the query cache
        assert [r.image_url for r in again] == [r.image_url for r in results]
        with pytest.raises(SearchError, match="HTTP 400"):
            await engine.search("   ", limit=2)
        assert await engine.search("violin", limit=0) == []


async def test_http_engine_connection_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = HttpSearchEngine(f"http://127.0.0.1:{port}", timeout_s=5)
    try:
        with pytest.raises(SearchError, match="unreachable"):
            await engine.search("parrot", limit=3)
    finally:
        await engine.close()


async def test_http_engine_malformed_answer(tmp_path: Path) -> None:
    from aiohttp import web

    async def bad(_request: web.Request) -> web.Response:
        return web.Response(text="{not json", content_type="application/json")

    app = web.Application()
    app.router.add_get("/search", bad)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with HttpSearchEngine(f"http://127.0.0.1:{port}") as engine:
            with pytest.raises(SearchError, match="malformed"):
                await engine.search("parrot", limit=3)
    finally:
        await runner.cleanup()
