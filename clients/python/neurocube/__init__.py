"""Python client of neurocube: cutouts into numpy arrays and uploads from
them (chunk-aligned, parallel, resumable), tiles, annotation tables with
CAVE's query arguments, synapse queries, versions, connectivity graphs, and
annotation objects with their voxels.

    >>> from neurocube import Client
    >>> nc = Client("http://127.0.0.1:8080", token=None)
    >>> vol = nc.cutout("demo", "image", 0, ((0, 1024), (0, 1024), (0, 64)))

Errors from the server are raised as `NeurocubeError` subclasses carrying
its status, code and message.
"""
from .client import Client
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NeurocubeError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
    Unprocessable,
)

__all__ = [
    "Client",
    "NeurocubeError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "Gone",
    "PayloadTooLarge",
    "Unprocessable",
    "RateLimited",
    "ServerError",
    "Unavailable",
]
__version__ = "0.1.0"
