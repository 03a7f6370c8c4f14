"""The texts the fidelity reference is computed on.

Plain data with no dependencies, so the reference script (run with
sentence-transformers in a separate environment) and the tests (run in
emberd's environment) read the same list. The long texts are built from
fixed pieces, so the list is the same on every run.
"""

from __future__ import annotations

# Context the reference is computed with, in tokens, [CLS] and [SEP] included.
NUM_CTX = 512
# Content tokens that fit beside [CLS] and [SEP].
CONTENT_LIMIT = NUM_CTX - 2

_ANIMALS = ("cat", "dog", "fox", "owl", "bee", "elk", "yak", "ant")
_PLACES = ("garden", "river", "forest", "kitchen", "station", "harbour", "library")


def _long_story(sentences: int) -> str:
    """Ordinary English, about 12 tokens a sentence, with numbers and punctuation."""
    parts = []
    for i in range(sentences):
        animal = _ANIMALS[i % len(_ANIMALS)]
        place = _PLACES[(i * 3) % len(_PLACES)]
        parts.append(
            f"On day {i + 1}, the {animal} walked to the {place} and counted {i * 7} stones."
        )
    return " ".join(parts)


def _repeated(word: str, count: int) -> str:
    """`word` `count` times, one space apart: `count` tokens for a one-token word."""
    return " ".join([word] * count)


TEXTS: tuple[str, ...] = (
    # short and plain
    "why is the sky blue?",
    "Hello, world!",
    "a",
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map text to vectors so that similar meanings end up close together.",
    # mixed case
    "HeLLo WoRLD, this Is MiXeD CaSe",
    "NASA and the ESA launched the JWST; iPhone users wrote about it on GitHub.",
    # numbers
    "3.14159 is close to pi, and 2.71828 is close to e.",
    "Call 555-0123 before 2024-01-15 at 09:30, or pay $1,000,000 (about 920,000 EUR).",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 10000 123456789",
    # punctuation
    "Wait... what?! No -- really? (Yes.) [Maybe] {never}; 'quoted' \"double\" `tick`",
    "e.g., i.e., U.S.A., Ph.D., a/b\\c | x^2 ~ y @home #tag %50 &co *star* _under_ +plus= <lt>",
    "“Smart quotes” — an em dash – an en dash … an ellipsis, «guillemets» ¿qué? ¡sí!",
    # accents (composed, decomposed and upper case)
    "café, naïve, Zürich",
    "Crème brûlée in São Paulo; résumé of Ångström's façade in Kraków.",
    "cafe\u0301 and nai\u0308ve written with combining marks",
    "ÉCOLE NORMALE SUPÉRIEURE, ÜBER ALLES, ÑANDÚ",
    "Straße, Œuvre, Æsir, Øresund, Łódź, İstanbul",
    # other scripts
    "Καλημέρα κόσμε, Ελλάδα",
    "Привет, мир! Ёлка и ёж.",
    "中文",
    "我爱自然语言处理。今天天气很好！",
    "日本語",
    "日本語のテキストです。ひらがなとカタカナ、がぎぐげご。",
    "مرحبا بالعالم، שלום עולם, สวัสดีครับ, Việt Nam",
    "English mixed with 中文 and 日本語 and café.",
    # emoji and symbols
    "I love pizza 🍕 and cats 😺!",
    "👍🏽 ❤️ 👨‍👩‍👧 🇫🇷 ✨✨✨",
    "€50 £30 ¥1000 ≥ ≤ ± × ÷ ° © ®",
    # special-token text and web-ish strings
    "literal [SEP] and [CLS] [UNK] x[MASK]y",
    "see http://example.com/path?q=1&r=2#frag or mail user@example.com (C++, node.js)",
    # whitespace oddities
    "  leading and trailing spaces  ",
    "tabs\tbetween\twords\nand\nnew lines\r\nand CRLF",
    "many     spaces      inside",
    "non\u00a0breaking\u00a0space and zero\u200bwidth\u200bspace",
    "\n\t \n",
    # empty
    "",
    # long: truncated to the context
    _long_story(80),
    # exactly at the context, and one token past it
    _repeated("hello", CONTENT_LIMIT),
    _repeated("hello", CONTENT_LIMIT + 1),
    # long and not English, past the context too
    "Zürich café naïve 中文 日本語 " * 120,
)

# Texts that Hugging Face's BertTokenizer and llama.cpp's WordPiece tokenizer
# split differently, by a short name, with the reason. They are in the
# reference so the gap is measured; tests/test_fidelity.py expects them to
# differ until it is closed.
DIVERGENT_TEXTS: dict[str, str] = {
    # llama.cpp's NFD table maps a Hangul syllable to its leading jamo only,
    # dropping the vowel and final consonant that full NFD yields.
    "hangul": "한국어 문장입니다.",
    # Devanagari vowel signs of category Mc: Hugging Face strips only Mn marks,
    # llama.cpp strips every \p{M}.
    "devanagari-mc": "हिन्दी भाषा",
    # A word over 100 characters: Hugging Face's WordPiece gives one [UNK],
    # llama.cpp has no length cap.
    "word-over-100-chars": "x" * 101,
    # Vertical tab, form feed and NEL are control characters to Hugging Face
    # (removed, the words join) and whitespace to llama.cpp (the words split).
    "vt-ff-nel": "a\x0bb c\x0cd nel\x85x",
}
