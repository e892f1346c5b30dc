"""URLs for hosts: IPv6 in brackets everywhere, wildcard binds reached over loopback."""

from __future__ import annotations

from vllm_agent.urls import http_url, local_url


def test_urls_bracket_ipv6_and_reach_wildcards_over_loopback() -> None:
    assert http_url("::1", 8001) == "http://[::1]:8001"
    assert http_url("10.0.0.5", 8001) == "http://10.0.0.5:8001"
    assert local_url("0.0.0.0", 8001) == "http://127.0.0.1:8001"
    assert local_url("::", 8001) == "http://127.0.0.1:8001"
    assert local_url("fe80::1", 8001) == "http://[fe80::1]:8001"
