"""Captured answers (``tests/samples/envelope/*.json``) and a builder for new ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["SAMPLES", "envelope", "load_sample", "sample_names"]

#: One JSON file per captured answer: ``{"status": ..., "headers": {...}, "body": "..."}``.
SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "envelope"


def load_sample(name: str) -> tuple[int, dict[str, str], bytes]:
    """``(status, headers, body)`` of ``samples/envelope/<name>.json``."""
    raw = json.loads((SAMPLES / f"{name}.json").read_text())
    return raw["status"], raw["headers"], raw["body"].encode()


def sample_names() -> list[str]:
    """Every captured answer's name, sorted."""
    return sorted(p.stem for p in SAMPLES.glob("*.json"))


def envelope(result: Any = None, *, success: bool = True, errors: Any = ()) -> dict[str, Any]:
    """A Cloudflare envelope around ``result`` (``success: false`` with ``errors`` for failures)."""
    return {"result": result, "success": success, "errors": list(errors), "messages": []}
