"""Embed a Parquet outcome table on Spark, with the same vectors and cache keys as in-process.

The executors each embed their partitions with the same (fitted) encoder, pickled to them; the
texts and image paths of a row are built exactly as the in-process loader builds them
(:func:`mmroute.data.loaders.query_inputs`). Rows are put back in file order by Spark's
``_metadata.row_index``, the driver streams the partition outputs into a row-aligned ``.npy``
(memory-mapped, so the driver never holds the table), and stores the arrays in the embedding cache
under the key :class:`~mmroute.features.pipeline.FeaturePipeline` computes for the same encoder and
table (encoder identity, modality, hash of the inputs in file order), so an in-process run on the
same table loads them instead of encoding; ``precomputed:<out>.npy`` reads them too.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from mmroute.features.cache import EmbeddingCache, hash_image_inputs, hash_texts
from mmroute.features.encoders import Encoder, RowEncoder

__all__ = ["embed_table"]

log = logging.getLogger(__name__)


def _files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    files = sorted(p for p in source.glob("*.parquet") if p.is_file())
    if not source.is_dir() or not files:
        raise FileNotFoundError(f"{source} is neither a Parquet file nor a folder of .parquet files")
    return files


def _local(uri: str) -> str:
    parsed = urlparse(uri)
    return str(Path(unquote(parsed.path) if parsed.scheme in ("file", "") else uri).resolve())


def _driver_hashes(files: list[Path], image_base: Path, columns: list[str], batch: int = 65536):
    """Input hashes of the whole table in file order (streamed: texts are hashed, not kept)."""
    import pyarrow.parquet as pq

    from mmroute.data.loaders import query_inputs

    texts: list[str] = []
    paths: list[str | None] = []
    any_image = False
    for f in files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=batch, columns=columns):
            t, p = query_inputs(rb.to_pandas(), image_base)
            texts.extend(t)
            if p is not None:
                paths.extend(p)
                any_image = any_image or any(p)
    return hash_texts(texts), (hash_image_inputs(paths) if any_image else None), len(texts), any_image


def embed_table(spark, encoder: Encoder, source: str | Path, out: str | Path, *,
                cache_dir: str | Path | None = None, use_cache: bool = True) -> dict[str, Any]:
    """Embed the Parquet table ``source`` (a file, or a folder of ``.parquet`` files read in name
    order) with ``encoder`` on Spark.

    Writes ``out`` (.npy, float32 (n_rows, d_text), row-aligned with ``source``) and, when the
    encoder embeds images and the table has some, ``<out stem>.image.npy`` (rows without an image
    are zeros); stores both in the embedding cache (``cache_dir``, default the project's) unless
    ``use_cache`` is False. Returns ``{"rows", "text", "image", "cache_keys", "seconds"}``.
    """
    import pandas as pd
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from mmroute.data.loaders import CONTEXT_COLUMNS, IMAGE_COLUMNS, QUESTION_COLUMNS, image_base_for, query_inputs

    if isinstance(encoder, RowEncoder):
        raise ValueError(f"{encoder!r} reads existing vectors; there is nothing to embed on Spark")
    if encoder.requires_fit and not encoder.is_fitted:
        raise ValueError(f"encoder {encoder.name!r} must be fitted on the training texts first (fit_text)")
    start = time.perf_counter()
    source = Path(source)
    out = Path(out)
    if out.suffix != ".npy":
        raise ValueError(f"out={str(out)!r}: expected a .npy path for the row-aligned text embeddings")
    files = _files(source)
    image_base = image_base_for(files[0]) if source.is_file() else source
    schema_names = pq.ParquetFile(files[0]).schema_arrow.names
    columns = [c for group in (QUESTION_COLUMNS, CONTEXT_COLUMNS, IMAGE_COLUMNS)
               for c in group[:] if c in schema_names]
    offsets, total = {}, 0
    for f in files:
        offsets[str(f.resolve())] = total
        total += pq.ParquetFile(f).metadata.num_rows
    text_hash, image_hash, n_rows, has_images = _driver_hashes(files, image_base, columns)
    embed_images = has_images and "image" in encoder.modalities
    if has_images and not embed_images:
        log.info("features: encoder %r does not embed images; the table's images are ignored", encoder.name)

    frame = spark.read.parquet(*[str(f) for f in files]).select(
        *columns, F.col("_metadata.file_path").alias("_file"), F.col("_metadata.row_index").alias("_row"))
    out_schema = T.StructType([T.StructField("_file", T.StringType()), T.StructField("_row", T.LongType()),
                               T.StructField("text", T.ArrayType(T.FloatType()))]
                              + ([T.StructField("image", T.ArrayType(T.FloatType()))] if embed_images else []))

    def embed(batches):
        for pdf in batches:
            texts, paths = query_inputs(pdf, image_base)
            part = {"_file": pdf["_file"].to_numpy(), "_row": pdf["_row"].to_numpy(dtype=np.int64),
                    "text": list(np.asarray(encoder.encode_text(texts), dtype=np.float32))}
            if embed_images:
                part["image"] = list(np.asarray(encoder.encode_images(paths), dtype=np.float32))
            yield pd.DataFrame(part)

    parts_dir = Path(tempfile.mkdtemp(prefix=".mmroute-embed-", dir=out.parent if out.parent.exists() else None))
    out.parent.mkdir(parents=True, exist_ok=True)
    image_out = out.with_name(f"{out.stem}.image.npy")
    try:
        frame.mapInPandas(embed, out_schema).write.mode("overwrite").parquet(str(parts_dir / "parts"))
        arrays = _assemble(parts_dir / "parts", offsets, n_rows, out, image_out if embed_images else None)
    except BaseException:
        for p in (out, image_out):
            p.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)

    keys = {}
    if use_cache and encoder.cacheable:
        cache = EmbeddingCache(cache_dir)
        for modality, input_hash, arr in (("text", text_hash, arrays["text"]),
                                          ("image", image_hash, arrays.get("image"))):
            if arr is None:
                continue
            identity = encoder.modality_identity(modality)
            key = cache.key(identity, modality, input_hash)
            cache.save(key, arr, {"identity": identity, "modality": modality, "input_hash": input_hash,
                                  "engine": "spark"})
            keys[modality] = key
    seconds = time.perf_counter() - start
    log.info("features: embedded %d rows of %s with %s on Spark in %.1f s -> %s", n_rows, source,
             encoder.name, seconds, out)
    return {"rows": n_rows, "text": str(out), "image": str(image_out) if embed_images else None,
            "cache_keys": keys, "seconds": seconds}


def _assemble(parts: Path, offsets: dict[str, int], n_rows: int, out: Path, image_out: Path | None):
    """Stream Spark's output part files into row-aligned memory-mapped ``.npy`` files."""
    import pyarrow.parquet as pq

    files = sorted(parts.glob("*.parquet"))
    arrays: dict[str, np.ndarray] = {}
    seen = 0
    for f in files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=8192):
            if rb.num_rows == 0:
                continue
            cols = rb.to_pydict()
            file_offset = np.array([offsets[_local(p)] for p in cols["_file"]], dtype=np.int64)
            rows = file_offset + np.asarray(cols["_row"], dtype=np.int64)
            for name, target in (("text", out), ("image", image_out)):
                if target is None:
                    continue
                block = np.asarray(cols[name], dtype=np.float32)
                if name not in arrays:
                    arrays[name] = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32,
                                                             shape=(n_rows, block.shape[1]))
                arrays[name][rows] = block
            seen += rb.num_rows
    if seen != n_rows:
        raise RuntimeError(f"Spark embedded {seen} rows of a table of {n_rows}")
    for arr in arrays.values():
        arr.flush()
    if "text" not in arrays:  # an empty table
        arrays["text"] = np.zeros((0, 0), dtype=np.float32)
        np.save(out, arrays["text"])
    return arrays
