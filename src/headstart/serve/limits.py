"""What one server accepts, in one place: every limit a client can run into."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from typing import Any

from headstart._internal.validation import Constraints, Interval, Optional, validate

__all__ = ["SERVE_LIMITS_CONSTRAINTS", "ServeLimits"]

MB = 1024 * 1024

_COUNT = Interval(numbers.Integral, 1, None)  # NumPy's ints too, never a bool

# Each limit's requirement, stated once (checked in this order).
SERVE_LIMITS_CONSTRAINTS: Constraints = {
    "max_body_bytes": _COUNT,
    "max_images": _COUNT,
    "max_batch_size": _COUNT,
    "max_queued_images": _COUNT,
    "retry_after_s": _COUNT,
    "max_connections": _COUNT,
    "max_zip_bytes": _COUNT,
    "max_zip_members": _COUNT,
    "max_zip_unpacked_bytes": _COUNT,
    "max_zip_ratio": _COUNT,
    "max_pixels": Optional(_COUNT),
    "request_timeout_s": Interval(numbers.Real, 0, None, closed="neither", finite=True),
    "body_timeout_s": Interval(numbers.Real, 0, None, closed="neither", finite=True),
    "max_wait_ms": Interval(numbers.Real, 0, None, finite=True),
}


@dataclass(frozen=True)
class ServeLimits:
    """Limits of one server; each is answered with its own status code when exceeded."""

    max_body_bytes: int = 20 * MB  # a request body above this: 413, before it is read whole
    max_images: int = 32  # images in one request above this: 413
    max_pixels: int | None = None  # per image; None: the model's own DecodeOptions.max_pixels
    request_timeout_s: float = 30.0  # decoding + waiting for the model longer than this: 504
    # The whole request body arriving longer than this: 408, however steadily it trickles
    # (a client sending a byte a second would otherwise hold a connection for hours).
    body_timeout_s: float = 120.0
    max_connections: int = 64  # open connections above this: 503 from the server (uvicorn)
    max_batch_size: int = 32  # images in one forward pass (micro-batching); x TTA views
    max_wait_ms: float = 5.0  # how long the first image of a batch waits for company
    max_queued_images: int = 256  # images (x TTA views) waiting or running: 503 + Retry-After
    retry_after_s: int = 1  # what a 503 tells the client to wait
    max_zip_bytes: int = 200 * MB  # an uploaded training zip, compressed
    max_zip_members: int = 20_000  # files in that zip
    max_zip_unpacked_bytes: int = 1024 * MB  # its files together, uncompressed (zip bombs)
    max_zip_ratio: int = 200  # uncompressed/compressed of any one member (zip bombs)

    def __post_init__(self) -> None:
        validate("ServeLimits", SERVE_LIMITS_CONSTRAINTS, self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
