"""EM-like test volumes for the Python benches: cells of quantized gray
levels, dark membranes, vesicles and noise (Blosc lz4 + shuffle about 1.3x
and zstd about 2.5x on 128x128x16 chunks, as real EM: the noise and the
gray-level steps set it), and white noise as the extra row."""
import numpy as np


def em_like(shape, seed=1):
    """A (z, y, x) uint8 volume."""
    Z, Y, X = shape
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.arange(Y), np.arange(X), indexing="ij")
    vol = np.empty((Z, Y, X), np.uint8)
    for z in range(Z):
        wx = x + 9 * np.sin((y + 7 * z) / 41.0)
        wy = y + 9 * np.sin((x - 5 * z) / 37.0)
        cell = ((wx // 61).astype(np.int64) * 7 + (wy // 53).astype(np.int64) * 13) % 11
        gray = 96 + cell * 12
        membrane = ((wx % 61) < 3) | ((wy % 53) < 3)
        dots = ((x * 31 + y * 17 + z * 7) % 97) < 2
        v = np.where(membrane, 28, gray) - np.where(dots, 40, 0) + rng.normal(0, 6.8, (Y, X))
        vol[z] = (np.clip(v, 0, 255) // 8 * 8).astype(np.uint8)
    return vol


def white_noise(shape, seed=1):
    """The incompressible extra row."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
