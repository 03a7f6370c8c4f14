"""Deterministic benchmark texts: short (about 10 tokens) and long (about 150 tokens).

Words are common lowercase English words that BERT's uncased WordPiece
vocabulary holds whole, so a word is one token: a short text is 8 words
(10 tokens with [CLS] and [SEP]); a long text is 132 words in sentences of
12 (11 full stops), 145 tokens in all. The same seed gives the same texts in
any interpreter.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

SHORT_WORDS = 8
LONG_WORDS = 132
SENTENCE_WORDS = 12

# fmt: off
WORDS: tuple[str, ...] = (
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "at",
    "from", "that", "this", "it", "he", "she", "they", "we", "you", "his", "her", "their",
    "our", "your", "not", "but", "or", "an", "be", "are", "were", "has", "have", "had",
    "will", "would", "can", "could", "should", "may", "might", "must", "about", "after",
    "before", "over", "under", "into", "through", "during", "between", "without", "again",
    "city", "river", "mountain", "forest", "garden", "house", "school", "church", "market",
    "music", "water", "light", "night", "morning", "evening", "summer", "winter", "spring",
    "history", "science", "language", "family", "friend", "teacher", "doctor", "student",
    "king", "queen", "army", "war", "peace", "power", "money", "office", "world", "country",
    "people", "children", "woman", "man", "girl", "boy", "dog", "cat", "horse", "bird",
    "fish", "tree", "flower", "stone", "road", "bridge", "ship", "train", "car", "book",
    "letter", "story", "song", "game", "team", "player", "hill", "village", "island",
    "sea", "sky", "sun", "moon", "star", "fire", "wind", "rain", "snow", "cloud", "field",
    "small", "large", "old", "new", "young", "long", "short", "high", "low", "early",
    "late", "good", "bad", "great", "little", "public", "private", "local", "national",
    "red", "blue", "green", "white", "black", "dark", "bright", "quiet", "strong", "happy",
    "walks", "runs", "reads", "writes", "builds", "opens", "closes", "finds", "keeps",
    "brings", "holds", "turns", "moves", "plays", "sings", "speaks", "carries", "follows",
    "today", "yesterday", "always", "never", "often", "sometimes", "slowly", "quickly",
    "near", "far", "above", "below", "behind", "inside", "outside", "around", "across",
)
# fmt: on


def _words(rng: random.Random, count: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(count)]


def short_text(rng: random.Random) -> str:
    """One short text: SHORT_WORDS words."""
    return " ".join(_words(rng, SHORT_WORDS))


def long_text(rng: random.Random) -> str:
    """One long text: LONG_WORDS words in sentences of SENTENCE_WORDS, each ending in '.'."""
    words = _words(rng, LONG_WORDS)
    sentences = [
        " ".join(words[i : i + SENTENCE_WORDS]) + "." for i in range(0, LONG_WORDS, SENTENCE_WORDS)
    ]
    return " ".join(sentences)


def short_texts(count: int, seed: int) -> list[str]:
    """`count` short texts from `seed`."""
    rng = random.Random(f"short-{seed}")
    return [short_text(rng) for _ in range(count)]


def long_texts(count: int, seed: int) -> list[str]:
    """`count` long texts from `seed`."""
    rng = random.Random(f"long-{seed}")
    return [long_text(rng) for _ in range(count)]


# Request sizes of the leak check, cycled: mostly single short texts, some batches.
# fmt: off
_MIXED_SHAPES: tuple[tuple[int, int], ...] = (
    (1, 0), (1, 0), (2, 0), (1, 0), (0, 1), (8, 0), (1, 0), (1, 0), (1, 0), (4, 0),
)
# fmt: on


def mixed_requests(count: int, seed: int) -> Iterator[list[str]]:
    """`count` requests of mixed sizes (1 to 8 texts, short or long), lazily."""
    rng = random.Random(f"mixed-{seed}")
    for i in range(count):
        n_short, n_long = _MIXED_SHAPES[i % len(_MIXED_SHAPES)]
        texts = [short_text(rng) for _ in range(n_short)]
        texts += [long_text(rng) for _ in range(n_long)]
        yield texts
