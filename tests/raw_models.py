"""Tiny raw-query data and tiny encoders for the served-model tests (tests/export, tests/serving).

A uniquely named module at the tests root, importable from every test folder.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmroute.data.table import OutcomeTable

MODELS = ("cheap", "mid", "strong")
# Unicode, punctuation, accents, ligatures, full-width letters, curly quotes, digits, emoji, CJK.
QUESTIONS = [
    "Solve the integral of x^2 over [0, 1].",
    "What's written on the street sign?  (read it carefully)",
    "Café résumé naïve — über façade, coöperate!",
    "How many apples; how MANY pears?? 3 or 4...",
    "The ﬁnal ﬂow: ＦＵＬＬ-width ＴＥＸＴ and “curly” ‘quotes’",
    "日本語の質問です。 数学の問題",
    "emoji 😀🚀 and symbols €£¥ §¶ © 42",
    "transcribe   the\thandwritten\nreceipt total",
    "Ελληνικά κείμενα και Русский текст",
    "don't, won't, it's, we'll, they'd, I'm",
    "area of a triangle with sides 3, 4, 5",
    "what colour is the car next to the building",
]
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
WORDS = ["the", "a", "of", "cat", "dog", "sum", "two", "numbers", "chart", "sign", "street", "receipt",
         "total", "solve", "integral", "what", "colour", "is", "car", "read", "text", "how", "many"]


def draw_image(path: Path, seed: int, size: tuple[int, int] = (48, 40), fmt: str = "PNG") -> Path:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = (int(v) for v in rng.integers(0, max(size[0] - 16, 1), 2))
        draw.rectangle([x0, y0, x0 + 15, y0 + 12], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    img.save(path, format=fmt)
    return path


def make_table(folder: Path, n: int = 36, *, seed: int = 0, image_every: int = 3) -> OutcomeTable:
    """``n`` rows, 3 models; two of every ``image_every`` rows have an image (PNG or JPEG, various sizes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        if i % image_every == image_every - 1:
            paths.append(None)
            continue
        fmt = "JPEG" if i % 2 else "PNG"
        size = [(48, 40), (33, 70), (90, 31), (64, 64)][i % 4]
        paths.append(str(draw_image(folder / f"{i}.{fmt.lower()}", seed=1000 * seed + i, size=size, fmt=fmt)))
    questions = [f"{QUESTIONS[i % len(QUESTIONS)]} #{i // len(QUESTIONS)}" for i in range(n)]
    correct = rng.integers(0, 2, (n, 3)).astype(float)
    cost = rng.uniform(0.1, 1.0, (n, 3)) * np.array([1.0, 3.0, 9.0])
    return OutcomeTable(ids=[f"q{i}" for i in range(n)], datasets=["toy"] * n, questions=questions, models=MODELS,
                        correct=correct, cost=cost, image_paths=paths,
                        contexts=[None if i % 4 == 0 else f"option {i % 3}" for i in range(n)],
                        source="raw-test", extra={"row": np.arange(n)})


def image_b64(path: str | Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def raw_records(table: OutcomeTable) -> list[dict]:
    """The request rows of a table: question, context, base64 image (when the row has one), id."""
    rows = []
    for i in range(table.n_instances):
        row = {"id": str(table.ids[i]), "question": str(table.questions[i])}
        if table.contexts is not None and table.contexts[i] not in (None, ""):
            row["context"] = str(table.contexts[i])
        if table.image_paths is not None and table.image_paths[i]:
            row["image"] = image_b64(table.image_paths[i])
        rows.append(row)
    return rows


def tiny_bert_dir(folder: Path) -> Path:
    """A 1-layer, hidden-16 BERT saved as a plain Hugging Face folder (mean pooling in sentence-transformers)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_clip_dir(folder: Path) -> Path:
    """An OpenCLIP ``local-dir:`` folder with a tiny random config (no weights: seeded init)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    return folder
