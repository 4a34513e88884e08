"""What one server accepts, in one place: every limit a client can run into."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from headstart._internal.validation import invalid, is_finite_number, is_int

__all__ = ["ServeLimits"]

MB = 1024 * 1024


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
    max_batch_size: int = 32  # images in one forward pass (micro-batching)
    max_wait_ms: float = 5.0  # how long the first image of a batch waits for company
    max_queued_images: int = 256  # images waiting or running above this: 503 + Retry-After
    retry_after_s: int = 1  # what a 503 tells the client to wait
    max_zip_bytes: int = 200 * MB  # an uploaded training zip, compressed
    max_zip_members: int = 20_000  # files in that zip
    max_zip_unpacked_bytes: int = 1024 * MB  # its files together, uncompressed (zip bombs)
    max_zip_ratio: int = 200  # uncompressed/compressed of any one member (zip bombs)

    def __post_init__(self) -> None:
        owner = "ServeLimits"
        for name in (
            "max_body_bytes",
            "max_images",
            "max_batch_size",
            "max_queued_images",
            "retry_after_s",
            "max_connections",
            "max_zip_bytes",
            "max_zip_members",
            "max_zip_unpacked_bytes",
            "max_zip_ratio",
        ):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise invalid(owner, name, "an int >= 1", value)
        if self.max_pixels is not None and (not is_int(self.max_pixels) or self.max_pixels < 1):
            raise invalid(owner, "max_pixels", "an int >= 1 or None", self.max_pixels)
        for name in ("request_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if not is_finite_number(value) or value <= 0:
                raise invalid(owner, name, "a number > 0", value)
        if not is_finite_number(self.max_wait_ms) or self.max_wait_ms < 0:
            raise invalid(owner, "max_wait_ms", "a number >= 0", self.max_wait_ms)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
