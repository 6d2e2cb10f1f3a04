"""The embedded default: a seeded, realistic multimodal outcome table that needs nothing downloaded.

The generative model (equations and parameters in ``docs/synthetic.md``):

- each instance ``i`` of dataset ``D`` has latent skill demands ``s_i`` in [0, 1]^6 drawn from
  per-dataset Beta distributions: ``math``, ``knowledge``, ``reading`` (expressed in the question
  text through skill-specific vocabulary) and ``glyph``, ``count``, ``detail`` (visible only in the
  image), an image degradation ``q_i`` (image only) and a difficulty ``d_i``; a share of instances
  has no image (their image latents are 0);
- each model ``m`` has per-skill abilities ``a_m``, a bias ``b_m`` and a sensitivity ``r_m`` to image
  degradation: ``P(correct) = sigmoid(b_m + a_m . s_i - d_i - r_m q_i)``, outcome ~ Bernoulli;
- cost = (price_in * input_tokens + price_out * output_tokens) / 1e6 USD, input tokens from the
  question length and the model's image-token count, output tokens from the model's verbosity,
  the math load and the difficulty.

It is written in the MMR-Bench per-dataset CSV layout (``<out>/<dataset>.csv`` with relative
``img_path`` into ``<out>/<dataset>/``), with a manifest that lists the datasets in order and the
latents in ``<out>/latent/<dataset>.csv`` for analysis (not loaded as part of the table).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from mmroute._paths import default_cache_dir
from mmroute.data.mmrbench import MANIFEST_NAME
from mmroute.data.synthetic_images import draw_instance_image
from mmroute.data.synthetic_spec import (
    DATASETS,
    DIFFICULTY_SD,
    IMAGE_SKILLS,
    MODELS,
    QUALITY_BETA,
    SKILLS,
    TEXT_SKILLS,
    VOCAB,
    outcome_logits,
)

__all__ = ["GENERATOR_VERSION", "default_cache_dir", "is_synthetic_spec", "parse_synthetic_spec",
           "synthetic_dir_name", "ensure_synthetic", "damaged_files", "make_synthetic", "sample_latents",
           "outcome_logits"]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump when the output for a given seed changes (invalidates caches)
_SPEC_KEYS = {"n": "n_instances", "n_instances": "n_instances", "seed": "seed",
              "image_size": "image_size", "size": "image_size"}


def is_synthetic_spec(spec: str) -> bool:
    return spec == "synthetic" or spec.startswith("synthetic:")


def parse_synthetic_spec(spec: str) -> dict[str, int]:
    """``"synthetic:n=500,seed=3"`` -> ``{"n_instances": 500, "seed": 3, "image_size": 64}``."""
    if not is_synthetic_spec(spec):
        raise ValueError(f"not a synthetic spec: {spec!r} (expected 'synthetic' or 'synthetic:key=value,...')")
    params = {"n_instances": 2000, "seed": 0, "image_size": 64}
    body = spec[len("synthetic:"):] if ":" in spec else ""
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in _SPEC_KEYS:
            raise ValueError(f"bad synthetic spec item {item!r} in {spec!r}; expected key=value with keys "
                             f"{sorted(_SPEC_KEYS)}")
        try:
            params[_SPEC_KEYS[key.strip()]] = int(value)
        except ValueError:
            raise ValueError(f"synthetic spec {spec!r}: {key.strip()} must be an integer, got {value!r}") from None
    try:
        check_synthetic_params(**params)
    except ValueError as exc:
        raise ValueError(f"synthetic spec {spec!r}: {str(exc).removeprefix('synthetic table: ')}") from None
    return params


# Bounds that keep one spec from filling the disk or the memory (a 100,000 px image is 30 GB).
MAX_INSTANCES = 1_000_000
MAX_IMAGE_SIZE = 1024


def check_synthetic_params(*, n_instances: int, seed: int, image_size: int) -> None:
    """Raise one ValueError listing every out-of-range generator parameter."""
    problems = []
    if not len(DATASETS) <= n_instances <= MAX_INSTANCES:
        problems.append(f"n_instances={n_instances} (expected {len(DATASETS)}..{MAX_INSTANCES:,}: at least one "
                        "instance per dataset)")
    if seed < 0:
        problems.append(f"seed={seed} (expected an integer >= 0)")
    if not 16 <= image_size <= MAX_IMAGE_SIZE:
        problems.append(f"image_size={image_size} (expected 16..{MAX_IMAGE_SIZE} pixels)")
    if problems:
        raise ValueError("synthetic table: " + "; ".join(problems))


def synthetic_dir_name(n_instances: int, seed: int, image_size: int) -> str:
    return f"v{GENERATOR_VERSION}-n{n_instances}-seed{seed}-img{image_size}"


def ensure_synthetic(spec: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Generate the spec's table into the cache once; return its directory.

    Generation goes to a private temporary directory renamed into place, so concurrent callers
    (test workers, parallel jobs) never see a half-written table.
    """
    params = parse_synthetic_spec(spec)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "synthetic" / synthetic_dir_name(**params)
    damaged = None
    if (target / MANIFEST_NAME).is_file():
        damaged = damaged_files(target)
        if not damaged:
            return target
        # A truncated CSV would otherwise load as a smaller, valid-looking table.
        log.warning("synthetic cache %s is damaged (%s); regenerating it", target, ", ".join(damaged[:3]))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{uuid.uuid4().hex}"
    trash = target.parent / f".old-{uuid.uuid4().hex}"
    try:
        make_synthetic(tmp, **params)
        if damaged:
            try:
                os.rename(target, trash)
            except OSError:  # another process already replaced it
                pass
        try:
            os.rename(tmp, target)
        except OSError:
            if damaged_files(target):
                raise
            log.debug("another process generated %s first", target)
    finally:
        for leftover in (tmp, trash):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    log.info("generated %s into %s", spec, target)
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def damaged_files(directory: str | os.PathLike[str]) -> list[str]:
    """Files of a generated table that are missing or differ from the manifest's checksums
    (``[]`` when intact). A manifest without checksums (or unreadable) counts as damaged."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return [MANIFEST_NAME]
    bad = []
    for rel, digest in files.items():
        path = directory / rel
        try:
            if _sha256(path) != digest:
                bad.append(rel)
        except OSError:
            bad.append(rel)
    return bad


def sample_latents(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Draw ``n`` instances' latents: one row each, columns ``dataset``, the :data:`SKILLS`,
    ``quality``, ``difficulty`` and ``has_image`` (datasets in :data:`DATASETS` order)."""
    names = list(DATASETS)
    shares = np.array([DATASETS[d]["share"] for d in names], dtype=float)
    counts = rng.multinomial(n, shares / shares.sum())
    frames = []
    for name, count in zip(names, counts):
        spec = DATASETS[name]
        skills = np.column_stack([rng.beta(*spec["skills"][k], size=count) for k in SKILLS])
        has_image = rng.random(count) >= spec["text_only"]
        skills[:, [SKILLS.index(k) for k in IMAGE_SKILLS]] *= has_image[:, None]
        quality = np.where(has_image, rng.beta(*QUALITY_BETA, size=count), 0.0)
        difficulty = spec["difficulty"] + DIFFICULTY_SD * rng.standard_normal(count)
        frame = pd.DataFrame(skills, columns=list(SKILLS))
        frame.insert(0, "dataset", name)
        frame["quality"], frame["difficulty"], frame["has_image"] = quality, difficulty, has_image
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _question(rng: np.random.Generator, row: dict) -> str:
    """Question text: a dataset template plus words drawn from each text skill's vocabulary."""
    templates = DATASETS[row["dataset"]]["templates" if row["has_image"] else "text_templates"]
    words: list[str] = []
    for skill, rate in TEXT_SKILLS.items():
        words += list(rng.choice(VOCAB[skill], size=rng.poisson(rate * row[skill])))
    words += list(rng.choice(VOCAB["filler"], size=rng.poisson(3.0)))
    words += list(rng.choice(VOCAB["complexity"], size=rng.poisson(1.2 * max(row["difficulty"], 0.0))))
    body = " ".join(rng.permutation(np.array(words, dtype=object))) if words else ""
    return f"{templates[int(rng.integers(len(templates)))]} {body}".strip() + "?"


def make_synthetic(out_dir: str | os.PathLike[str], n_instances: int = 2000, seed: int = 0,
                   image_size: int = 64, *, missing_rate: float = 0.01) -> Path:
    """Write the synthetic default table (per-dataset CSVs + PNG images) into ``out_dir``.

    Deterministic: the same arguments give byte-identical CSVs and identical images.

    Parameters
    ----------
    out_dir : path
        Directory to write (created; existing files with the same names are overwritten).
    n_instances : int
        Total instances over all datasets.
    seed : int
        Seed of every random draw.
    image_size : int
        Side of the square PNG images in pixels (>= 16).
    missing_rate : float
        Share of outcomes of the ``api-reasoner`` model left missing (NaN correct and cost, as a
        timed-out API call would), so that consumers exercise missing-outcome handling.

    Returns
    -------
    Path
        ``out_dir``, loadable with ``load_table(out_dir)``.
    """
    check_synthetic_params(n_instances=n_instances, seed=seed, image_size=image_size)
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(f"missing_rate must be in [0, 1), got {missing_rate}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    latents = sample_latents(rng, n_instances)
    n = len(latents)
    records = latents.to_dict("records")
    questions = [_question(rng, row) for row in records]

    logits = outcome_logits(latents)  # (n, M)
    correct = (rng.random(logits.shape) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float64)
    n_words = np.array([len(q.split()) for q in questions], dtype=np.float64)
    text_tokens = np.ceil(40 + 1.3 * n_words)
    in_tokens = text_tokens[:, None] + latents["has_image"].to_numpy()[:, None] * np.array(
        [m["image_tokens"] for m in MODELS])[None, :]
    load = 1.0 + 1.2 * latents["math"].to_numpy() + 0.3 * np.clip(latents["difficulty"].to_numpy(), 0, None)
    out_tokens = np.maximum(1, np.round(np.array([m["verbosity"] for m in MODELS])[None, :] * load[:, None]
                                        * rng.lognormal(0.0, 0.35, size=logits.shape)))
    price_in = np.array([m["price_in"] for m in MODELS])
    price_out = np.array([m["price_out"] for m in MODELS])
    cost = (price_in * in_tokens + price_out * out_tokens) / 1e6
    api = [m["name"] for m in MODELS].index("api-reasoner")
    missing = rng.random(n) < missing_rate
    correct[missing, api] = np.nan
    cost[missing, api] = np.nan

    datasets = latents["dataset"].to_numpy()
    (out / "latent").mkdir(exist_ok=True)
    written: list[str] = []  # relative paths, checksummed into the manifest
    for name in DATASETS:
        rows = np.flatnonzero(datasets == name)
        (out / name).mkdir(exist_ok=True)
        ids = [f"{name}_{k:05d}" for k in range(len(rows))]
        img_paths = []
        for k, i in enumerate(rows):
            row = records[i]
            if not row["has_image"]:
                img_paths.append("")
                continue
            rel = f"{k:05d}.png"
            # A per-instance generator keeps each image independent of how many came before it.
            draw_instance_image(out / name / rel, np.random.default_rng([seed, int(i)]), style=name,
                                glyph=row["glyph"], count=row["count"], detail=row["detail"],
                                quality=row["quality"], size=image_size)
            img_paths.append(rel)
            written.append(f"{name}/{rel}")
        answers = np.array(list("ABCD"))[rng.integers(0, 4, len(rows))]
        frame = pd.DataFrame({"id": ids, "question": [questions[i] for i in rows], "answer": answers,
                              "img_path": img_paths})
        for j, model in enumerate(MODELS):
            frame[f"{model['name']}_correct"] = correct[rows, j]
            frame[f"{model['name']}_cost"] = cost[rows, j]
        frame.to_csv(out / f"{name}.csv", index=False, float_format="%.10g", lineterminator="\n")
        lat = latents.iloc[rows].drop(columns=["dataset"]).reset_index(drop=True)
        lat.insert(0, "id", ids)
        lat.to_csv(out / "latent" / f"{name}.csv", index=False, float_format="%.10g", lineterminator="\n")
        written += [f"{name}.csv", f"latent/{name}.csv"]
    # Checksums of every file written, so a damaged cache copy is detected and rebuilt.
    files = {rel: _sha256(out / rel) for rel in written}
    manifest = {"datasets": list(DATASETS), "generator": "mmroute.data.synthetic", "version": GENERATOR_VERSION,
                "n_instances": n_instances, "seed": seed, "image_size": image_size, "missing_rate": missing_rate,
                "models": [m["name"] for m in MODELS], "files": files}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("wrote synthetic table (%d instances, %d models) to %s", n, len(MODELS), out)
    return out
