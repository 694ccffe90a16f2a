"""The downloader's address guard: no request may reach anything but the public internet.

URLs whose host is an IP literal are checked by :func:`check_url` before anything is sent; host
names are checked on the addresses they resolve to, by :class:`GuardedResolver` inside aiohttp's
connector (so the check applies to the very address connected to - no gap for DNS rebinding).
A refused name raises :class:`BlockedAddressError`, recorded by the downloader as
``blocked-address``. Hosts listed in ``DownloadConfig.allowed_private_hosts`` pass
(:func:`host_is_allowed`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from ie_engine.types import DownloadFailure

_METADATA_ADDRESSES: Final = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    }
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddressError(OSError):
    """A host resolved to an address the downloader must not connect to."""


def is_blocked_address(ip: IPAddress) -> bool:
    """Whether connecting to ``ip`` could reach something other than the public internet.

    Blocks everything Python does not consider globally routable (loopback, RFC 1918 private,
    link-local including the 169.254.169.254 metadata service, shared/CGNAT, documentation,
    reserved, unspecified), multicast, known cloud metadata addresses, and IPv6 forms that embed
    an IPv4 address (mapped, 6to4, Teredo) whose IPv4 part is blocked.
    """
    if ip in _METADATA_ADDRESSES:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address | None] = [ip.ipv4_mapped, ip.sixtofour]
        if ip.teredo is not None:
            embedded.append(ip.teredo[1])
        if any(e is not None and is_blocked_address(e) for e in embedded):
            return True
    return ip.is_multicast or not ip.is_global


def host_is_allowed(host: str, port: int | None, allowed: Collection[str]) -> bool:
    """Whether ``host`` (or ``host:port``) is listed in ``allowed_private_hosts``."""
    if not allowed:
        return False
    h = host.lower().strip("[]").rstrip(".")
    names = {h, f"[{h}]"}
    if port is not None:
        names |= {f"{n}:{port}" for n in names}
    return any(entry.lower() in names for entry in allowed)


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses names resolving to blocked addresses.

    Wraps another resolver (aiohttp's threaded ``getaddrinfo`` by default). If *any* address of a
    name is blocked the whole name is refused - a name mixing public and private addresses is
    more likely an attack than a mistake. Names listed in ``allowed`` pass unchecked.
    """

    def __init__(
        self, allowed: Collection[str] = (), inner: AbstractResolver | None = None
    ) -> None:
        self._allowed = tuple(allowed)
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host_is_allowed(host, port, self._allowed):
            return results
        for r in results:
            ip = _ip_literal(r["host"].split("%", 1)[0])
            if ip is None or is_blocked_address(ip):
                raise BlockedAddressError(f"{host} resolves to {r['host']}, a non-public address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def check_url(url: str | URL, allowed: Collection[str] = ()) -> tuple[URL, DownloadFailure | None]:
    """Parse ``url`` and apply the checks possible without resolving it.

    Returns the parsed URL and None, or a ``bad-url``/``blocked-address`` failure (URL unusable).
    """
    raw = str(url)
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        host = parsed.host
        port = parsed.port
    except (ValueError, TypeError) as exc:
        return URL(), DownloadFailure(raw, "bad-url", f"unparsable URL: {exc}")
    if parsed.scheme not in ("http", "https"):
        scheme = parsed.scheme or "none"
        return parsed, DownloadFailure(raw, "bad-url", f"scheme {scheme!r} is not http or https")
    if not host:
        return parsed, DownloadFailure(raw, "bad-url", "URL has no host")
    ip = _ip_literal(host)
    if ip is not None and is_blocked_address(ip) and not host_is_allowed(host, port, allowed):
        return parsed, DownloadFailure(
            raw, "blocked-address", f"{host} is a non-public address (not in allowed hosts)"
        )
    return parsed, None


__all__ = [
    "BlockedAddressError",
    "GuardedResolver",
    "IPAddress",
    "check_url",
    "host_is_allowed",
    "is_blocked_address",
]
