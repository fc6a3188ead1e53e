"""Helpers the resumable-upload (tus) tests share: the protocol's headers and metadata."""

from __future__ import annotations

import base64

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"


def tus_metadata(**values: str) -> str:
    """An ``Upload-Metadata`` value: each key with its value in Base64."""
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


def patch_headers(offset: int, **extra: str) -> dict[str, str]:
    return TUS | {"Upload-Offset": str(offset), "Content-Type": OFFSET_STREAM} | extra
