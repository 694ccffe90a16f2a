"""Throughput check of the downloader against a bare aiohttp + Pillow loop.

The downloader does much more per image than fetch-decode-resize (guards, transparency, JPEG
encoding, two hashes, de-duplication, a file write); this measures what that costs. Both sides
fetch the same images from the same loopback server, which runs in a separate process so that
serving does not share the client's event loop or GIL.

Run once by hand::

    python -m ie_engine.download_bench --count 500 --concurrency 16

:func:`compare_with_minimal` is reused by the benchmark suite.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing as mp
import random
import struct
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from ie_engine.config import DownloadConfig
from ie_engine.download import Downloader
from ie_engine.imaging import DedupIndex
from ie_engine.types import DownloadRequest, SearchResult

OPENCLIPART = Path("/usr/share/openclipart/png")
"""Debian's openclipart-png: thousands of real PNGs (some of them genuine pixel bombs)."""


def openclipart_sample(count: int, *, max_pixels: int = 40_000_000, seed: int = 0) -> list[Path]:
    """``count`` random openclipart PNGs whose header dimensions stay within ``max_pixels``."""
    paths = sorted(OPENCLIPART.rglob("*.png"))
    random.Random(seed).shuffle(paths)
    chosen: list[Path] = []
    for path in paths:
        with path.open("rb") as f:
            head = f.read(24)
        if len(head) < 24 or head[12:16] != b"IHDR":
            continue
        width, height = struct.unpack(">II", head[16:24])
        if width * height <= max_pixels:
            chosen.append(path)
            if len(chosen) == count:
                break
    return chosen


def jpeg_copies(paths: Sequence[Path], out_dir: Path, *, long_side: int = 1600) -> list[Path]:
    """Photo-sized JPEG versions of ``paths`` (on white, longest side ``long_side``, quality 90).

    The web is mostly JPEG photographs of 0.5-2 Mpx, where decoding dominates and libjpeg's DCT
    scaling (used by the downloader, not by the minimal loop) matters; clip-art PNGs alone would
    not show that.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            rgba = img.convert("RGBA")
        scale = long_side / max(rgba.size)
        size = (max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale)))
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        target = out_dir / f"{i:05d}.jpg"
        flat.resize(size, Image.Resampling.BICUBIC).save(target, quality=90)
        made.append(target)
    return made


def _serve(paths: list[str], conn: Connection) -> None:
    """Server process: serve ``paths[i]`` at ``/i/{i}`` from memory; send the port back."""
    from aiohttp import web

    bodies = [Path(p).read_bytes() for p in paths]

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=bodies[int(request.match_info["i"])], content_type="image/png")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/i/{i}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
        conn.send(port)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # wait for "stop"
        await runner.cleanup()

    asyncio.run(main())


def _on_white(img: Image.Image) -> Image.Image:
    """RGB with transparent pixels on white: the least a correct loop must add to ``convert``
    (which drops alpha, leaving whatever colour transparent pixels hold, often black)."""
    if img.mode not in ("RGBA", "LA", "PA", "P") and "transparency" not in img.info:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


async def _minimal(urls: Sequence[str], concurrency: int, size: int, *,
                   flatten: bool = False) -> int:
    """The baseline: fetch, decode, convert, thumbnail; nothing else. Returns images decoded.

    ``flatten``: put transparent pixels on white instead of dropping alpha (:func:`_on_white`).
    """
    sem = asyncio.Semaphore(concurrency)
    done = 0

    async def one(session: aiohttp.ClientSession, url: str) -> None:
        nonlocal done
        async with sem, session.get(url) as resp:
            data = await resp.read()
        try:
            opened = Image.open(io.BytesIO(data))
            img = _on_white(opened) if flatten else opened.convert("RGB")
            img.thumbnail((size, size))
            done += 1
        except Exception:
            pass

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session, u) for u in urls))
    return done


async def _downloader(
    urls: Sequence[str], concurrency: int, size: int, image_dir: Path, cpu_workers: int | None
) -> dict[str, int]:
    config = DownloadConfig(
        concurrency=concurrency,
        per_host=concurrency,  # one loopback host: the per-host limit must not be the bottleneck
        stored_size=size,
        allowed_private_hosts=("127.0.0.1",),
    )
    downloader = Downloader(config, image_dir, dedup=DedupIndex(), cpu_workers=cpu_workers)
    requests = [
        DownloadRequest(SearchResult(image_url=u), query="bench", concept_index=0) for u in urls
    ]
    report = await downloader.fetch_all(requests)
    counts: dict[str, int] = {"images": len(report.images)}
    for failure in report.failures:
        counts[failure.reason] = counts.get(failure.reason, 0) + 1
    return counts


def compare_with_minimal(
    image_paths: Sequence[Path], *, concurrency: int, stored_size: int, repeats: int = 2
) -> dict[str, Any]:
    """Images per second of :class:`~ie_engine.download.Downloader` and of a minimal loop.

    Serves ``image_paths`` from a loopback server in a child process, then alternates the
    minimal loop, the minimal loop that also puts transparent pixels on white, the downloader
    (thread-pool decoding) and the downloader decoding inline on the event loop, ``repeats``
    times each; the best run of each counts (least disturbed by other load). Every request is
    counted as processed for the downloader, duplicates included: they are fetched and decoded
    just the same.

    Returns ``minimal_ips``, ``downloader_ips``, ``downloader_inline_ips``, ``ratio``
    (downloader / minimal), ``inline_ratio``, ``minimal_on_white_ips`` and ``on_white_ratio``
    (downloader / the loop that flattens transparency, as the downloader must: most openclipart
    PNGs have a transparent background), ``count``, ``concurrency``, ``stored_size``,
    ``client_cpu_ms_per_image`` (CPU time of this process, all threads, per image: unlike
    images/s it hardly moves when other programs load the machine) and the downloader's outcome
    counts.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=([str(p) for p in image_paths], child), daemon=True)
    proc.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("benchmark server did not start")
        port = parent.recv()
        urls = [f"http://127.0.0.1:{port}/i/{i}" for i in range(len(image_paths))]
        best = {"minimal": 0.0, "flat": 0.0, "downloader": 0.0, "inline": 0.0}
        cpu = {k: float("inf") for k in best}
        outcomes: dict[str, int] = {}
        with tempfile.TemporaryDirectory(prefix="ie-bench-") as tmp:
            asyncio.run(_minimal(urls[: min(50, len(urls))], concurrency, stored_size))  # warm-up
            for r in range(repeats):
                for key in ("minimal", "flat"):
                    t0, c0 = time.perf_counter(), time.process_time()
                    n = asyncio.run(_minimal(urls, concurrency, stored_size,
                                             flatten=key == "flat"))
                    best[key] = max(best[key], n / (time.perf_counter() - t0))
                    cpu[key] = min(cpu[key], (time.process_time() - c0) / max(1, n))
                for key, workers in (("downloader", None), ("inline", 0)):
                    t0, c0 = time.perf_counter(), time.process_time()
                    counts = asyncio.run(
                        _downloader(
                            urls, concurrency, stored_size, Path(tmp) / f"{key}{r}", workers
                        )
                    )
                    ips = len(urls) / (time.perf_counter() - t0)
                    best[key] = max(best[key], ips)
                    cpu[key] = min(cpu[key], (time.process_time() - c0) / len(urls))
                    if key == "downloader":
                        outcomes = counts
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return {
        "count": len(image_paths),
        "concurrency": concurrency,
        "stored_size": stored_size,
        "minimal_ips": round(best["minimal"], 1),
        "downloader_ips": round(best["downloader"], 1),
        "downloader_inline_ips": round(best["inline"], 1),
        "ratio": round(best["downloader"] / best["minimal"], 3) if best["minimal"] else None,
        "inline_ratio": round(best["inline"] / best["minimal"], 3) if best["minimal"] else None,
        "minimal_on_white_ips": round(best["flat"], 1),
        "on_white_ratio": round(best["downloader"] / best["flat"], 3) if best["flat"] else None,
        "client_cpu_ms_per_image": {k: round(v * 1000, 2) for k, v in cpu.items()},
        "outcomes": outcomes,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m ie_engine.download_bench``: print the comparison as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stored-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--jpeg", action="store_true", help="serve 1600 px JPEG copies instead of the PNGs"
    )
    args = parser.parse_args(argv)
    paths = openclipart_sample(args.count)
    if not paths:
        raise SystemExit(f"no PNG found under {OPENCLIPART} (apt-get install openclipart-png)")
    with tempfile.TemporaryDirectory(prefix="ie-bench-jpeg-") as tmp:
        if args.jpeg:
            paths = jpeg_copies(paths, Path(tmp))
        result = compare_with_minimal(
            paths, concurrency=args.concurrency, stored_size=args.stored_size, repeats=args.repeats
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
