"""The client's compiled part (clients/python/src/lib.rs)."""
from typing import List, Optional, Tuple

STREAM_VERSION: int

class Transport:
    """Keep-alive HTTP connections to the server of `url` (http only),
    shared by threads; each socket read or write waits at most `timeout`."""

    def __init__(self, url: str, timeout: float) -> None: ...
    def chunks_into(
        self,
        url: str,
        headers: List[Tuple[str, str]],
        out: object,
        shape: Tuple[int, int, int],
        itemsize: int,
        origin: Tuple[int, int, int],
        bbox: Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]],
        chunk: Tuple[int, int, int],
    ) -> Tuple[int, Optional[str], Optional[bytes], int]:
        """GET a chunk stream and decode it into `out` (bytes of a C-ordered
        (z, y, x) array); returns (status, retry_after, error_body, records)."""
        ...
