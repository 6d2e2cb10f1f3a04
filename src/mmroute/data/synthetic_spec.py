"""Parameters of the synthetic default's generative model: datasets, vocabularies, the model pool.

Kept apart from the sampling code so that ``docs/synthetic.md`` and tests can quote them, and so
that :func:`outcome_logits` (the exact success model) can be reused to check routing properties.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["SKILLS", "TEXT_SKILLS", "IMAGE_SKILLS", "DATASETS", "DIFFICULTY_SD", "QUALITY_BETA", "VOCAB", "MODELS",
           "outcome_logits"]

TEXT_SKILL_NAMES = ("math", "knowledge", "reading")
IMAGE_SKILLS = ("glyph", "count", "detail")
SKILLS = TEXT_SKILL_NAMES + IMAGE_SKILLS
DIFFICULTY_SD = 1.3  # shared across models: some instances defeat every model, as in real benchmarks
QUALITY_BETA = (1.3, 4.0)  # image degradation q ~ Beta: most images clean, a tail of noisy ones
# Expected number of skill words in a question at full demand (s = 1); reading brings long passages.
TEXT_SKILLS = {"math": 7.0, "knowledge": 7.0, "reading": 12.0}

# Per dataset: share of instances, share without an image, mean difficulty, and Beta(a, b) per skill.
DATASETS: dict[str, dict] = {
    "ocr": {
        "share": 0.30, "text_only": 0.05, "difficulty": 0.6,
        "skills": {"math": (1, 6), "knowledge": (2, 4), "reading": (3, 3),
                   "glyph": (0.8, 0.45), "count": (0.5, 0.9), "detail": (0.6, 0.6)},
        "templates": ["Read the text in the image and answer:", "What does the sign in the image say about",
                      "Transcribe the label shown, then answer:"],
        "text_templates": ["Read the following passage and answer:", "According to the text,"],
    },
    "vqa": {
        "share": 0.35, "text_only": 0.15, "difficulty": 0.4,
        "skills": {"math": (1, 8), "knowledge": (3, 3), "reading": (1, 5),
                   "glyph": (0.45, 0.8), "count": (0.7, 0.5), "detail": (0.6, 0.6)},
        "templates": ["Look at the picture and answer:", "Based on the image,", "In this photo,"],
        "text_templates": ["Answer the question:", "Using common knowledge,"],
    },
    "math": {
        "share": 0.35, "text_only": 0.35, "difficulty": 1.0,
        "skills": {"math": (4, 1.5), "knowledge": (1, 4), "reading": (2, 3),
                   "glyph": (0.5, 0.7), "count": (0.6, 0.6), "detail": (0.5, 0.9)},
        "templates": ["Using the figure, solve:", "From the plotted diagram, compute", "In the figure shown,"],
        "text_templates": ["Solve the problem:", "Compute the answer:"],
    },
}

VOCAB: dict[str, list[str]] = {
    "math": ["integer", "sum", "product", "ratio", "angle", "triangle", "equation", "derivative", "slope",
             "variable", "fraction", "percent", "perimeter", "radius", "probability", "quotient", "exponent",
             "polynomial", "median", "area", "solve", "factor", "remainder", "vertex", "parallel", "integral",
             "logarithm", "sequence", "prime", "divisor"],
    "knowledge": ["capital", "species", "century", "dynasty", "element", "treaty", "painter", "continent",
                  "river", "composer", "enzyme", "empire", "planet", "novelist", "mineral", "revolution",
                  "philosopher", "cathedral", "glacier", "parliament", "vaccine", "tribe", "monarch", "reef",
                  "protein", "orbit", "alloy", "sonnet", "archipelago", "republic"],
    "reading": ["passage", "author", "paragraph", "sentence", "claim", "argument", "narrator", "tone",
                "summary", "infer", "statement", "evidence", "conclusion", "describe", "meaning", "context",
                "purpose", "implies", "headline", "excerpt", "dialogue", "chapter", "caption", "quote",
                "viewpoint", "theme", "article", "memo", "notice", "letter"],
    "filler": ["the", "which", "following", "option", "best", "correct", "shown", "given", "of", "is",
               "what", "one", "answer", "choose", "most", "likely"],
    "complexity": ["exactly", "precisely", "simultaneously", "except", "unless", "nested", "multi-step",
                   "rigorous", "approximately", "combined", "conditional", "strictly"],
}

# The pool, small open MLLMs to frontier APIs. Abilities per skill (math, knowledge, reading,
# glyph, count, detail); robustness = penalty per unit of image degradation; prices in USD per
# 1M tokens; image_tokens = tokens one image costs the model; verbosity = typical output tokens.
# Biases were solved (bisection on 20,000 sampled instances) for overall accuracies of about
# 0.35, 0.45, 0.46, 0.44, 0.58, 0.55, 0.68, 0.66 in this order; image-skill abilities were
# spread until routing on image content beats routing on what the text reveals (docs/synthetic.md).
MODELS: list[dict] = [
    {"name": "tiny-vl-2b", "tier": "small open", "bias": 3.7,
     "ability": (-2.0, -1.5, -1.0, -2.0, -1.5, -2.0), "robustness": 2.0,
     "price_in": 0.04, "price_out": 0.08, "image_tokens": 256, "verbosity": 40},
    {"name": "open-vl-7b", "tier": "small open", "bias": 3.26,
     "ability": (-1.5, -1.0, -0.5, -1.5, -1.0, -1.5), "robustness": 1.6,
     "price_in": 0.15, "price_out": 0.20, "image_tokens": 576, "verbosity": 60},
    {"name": "ocr-expert-8b", "tier": "specialist", "bias": 1.21,
     "ability": (-2.0, -1.5, 0.5, 3.5, -2.0, -0.5), "robustness": 0.6,
     "price_in": 0.20, "price_out": 0.20, "image_tokens": 1280, "verbosity": 30},
    {"name": "math-vl-32b", "tier": "specialist", "bias": 2.11,
     "ability": (1.5, -0.5, -0.5, -2.5, -0.5, -1.5), "robustness": 1.2,
     "price_in": 0.50, "price_out": 0.70, "image_tokens": 576, "verbosity": 220},
    {"name": "open-vl-72b", "tier": "large open", "bias": 0.84,
     "ability": (-1.0, 0.0, 0.0, -2.0, 3.0, 1.5), "robustness": 1.0,
     "price_in": 0.90, "price_out": 0.90, "image_tokens": 1024, "verbosity": 90},
    {"name": "api-flash", "tier": "cheap API", "bias": 2.83,
     "ability": (-1.0, 0.5, 0.3, -0.8, -1.0, -1.0), "robustness": 3.5,
     "price_in": 0.10, "price_out": 0.40, "image_tokens": 258, "verbosity": 110},
    {"name": "api-pro", "tier": "frontier API", "bias": 2.92,
     "ability": (0.0, 1.0, 0.5, -1.5, -1.5, -0.8), "robustness": 0.8,
     "price_in": 2.50, "price_out": 10.00, "image_tokens": 765, "verbosity": 160},
    {"name": "api-reasoner", "tier": "frontier API", "bias": 2.52,
     "ability": (2.0, 0.8, 0.2, -1.8, -1.2, -1.0), "robustness": 1.2,
     "price_in": 3.00, "price_out": 12.00, "image_tokens": 765, "verbosity": 700},
]


def outcome_logits(latents: pd.DataFrame) -> np.ndarray:
    """Log-odds of success, ``b_m + a_m . s_i - d_i - r_m q_i``, shape (n_instances, n_models).

    ``latents`` needs the columns of :data:`SKILLS`, ``quality`` and ``difficulty``.
    """
    skills = latents[list(SKILLS)].to_numpy(dtype=np.float64)  # (n, K)
    ability = np.array([m["ability"] for m in MODELS], dtype=np.float64)  # (M, K)
    bias = np.array([m["bias"] for m in MODELS], dtype=np.float64)
    robust = np.array([m["robustness"] for m in MODELS], dtype=np.float64)
    quality = latents["quality"].to_numpy(dtype=np.float64)
    difficulty = latents["difficulty"].to_numpy(dtype=np.float64)
    return bias[None, :] + skills @ ability.T - difficulty[:, None] - quality[:, None] * robust[None, :]
