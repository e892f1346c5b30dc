"""Byte counts for people: "1.0 GB", "512.0 KB" (powers of 1024, as du -h and the Hub show them)."""

from __future__ import annotations


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
