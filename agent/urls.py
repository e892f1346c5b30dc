"""URLs for a host and port: IPv6 addresses go in brackets, everywhere a URL is made."""

from __future__ import annotations

WILDCARDS = ("0.0.0.0", "::", "")


def http_url(host: str, port: int | str) -> str:
    return f"http://{bracketed(host)}:{port}"


def local_url(host: str, port: int | str) -> str:
    """The URL this host reaches a server on: a wildcard bind is reached over loopback."""
    return http_url("127.0.0.1" if host in WILDCARDS else host, port)


def bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
