"""Decompression bombs are refused from their header; damaged cache entries are recomputed."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from mmroute.features.cache import EmbeddingCache
from mmroute.features.encoders import open_rgb
from mmroute.features.offline import ImageStatsEncoder


def _bomb(path: Path, width: int = 12_000, height: int = 12_000) -> Path:
    """A PNG whose header announces ``width`` x ``height`` but whose data is a few bytes: decoding
    it would fail (or, for a real bomb, take gigabytes); only a header check refuses it cleanly."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _small(path: Path, side: int) -> Path:
    from PIL import Image

    Image.new("RGB", (side, side), (10, 200, 30)).save(path)
    return path


def test_bomb_is_refused_from_its_header(tmp_path):
    bomb = _bomb(tmp_path / "bomb.png")
    with pytest.raises(ValueError) as err:
        open_rgb(str(bomb), "error")
    msg = str(err.value)
    assert "bomb.png" in msg and "12000 x 12000 = 144,000,000 pixels exceeds the limit of 36,000,000" in msg
    assert open_rgb(str(bomb), "zero") is None


def test_pixel_limit_is_configurable_and_zero_policy_counts(tmp_path, caplog):
    ok, big = _small(tmp_path / "ok.png", 8), _small(tmp_path / "big.png", 40)
    strict = ImageStatsEncoder(max_image_pixels=1000, on_bad_image="error", progress=False)
    with pytest.raises(ValueError, match=r"big.png.*40 x 40 = 1,600 pixels exceeds the limit of 1,000"):
        strict.encode_images([str(ok), str(big)])
    lenient = ImageStatsEncoder(max_image_pixels=1000, on_bad_image="zero", progress=False)
    with caplog.at_level(logging.WARNING):
        out = lenient.encode_images([str(ok), str(big), None])
    assert np.abs(out[0]).sum() > 0 and not out[1].any() and not out[2].any()
    assert "1 of 2 images could not be read" in caplog.text
    assert lenient.identity != ImageStatsEncoder(on_bad_image="zero").identity
    with pytest.raises(ValueError, match="max_image_pixels=0"):
        ImageStatsEncoder(max_image_pixels=0)


def test_offline_spec_passes_the_limit(tmp_path):
    from mmroute.features import build_feature_pipeline

    pipe = build_feature_pipeline("offline:max_image_pixels=100,on_bad_image=zero", use_cache=False)
    assert pipe.encoder.image_encoder.max_image_pixels == 100


def test_damaged_cache_entry_is_recomputed(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path)
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    npy = cache.save("k", arr, {"identity": "x"})
    np.testing.assert_array_equal(cache.load("k", 3), arr)
    raw = bytearray(npy.read_bytes())
    raw[-4:] = b"\0\0\0\0"  # still a parseable array of the right shape, with a wrong value
    npy.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        assert cache.load("k", 3) is None
    assert "damaged cache entry" in caplog.text
    cache._paths("k")[1].write_text("{not json")
    assert cache.load("k", 3) is None
