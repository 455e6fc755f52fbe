"""Extending an English BERT vocabulary with the characters of a product corpus.

The offline text-encoder initialisation (MiniLM-L6, bert-base-uncased's vocabulary) maps almost every Chinese
character to [UNK]: on M5Product-like data (half the captions and all table keys / values in Chinese) the
text and table encoders would then see little but [UNK]. Appending the corpus' missing characters to the
vocabulary (one token each, as BERT splits CJK text per character) keeps every pretrained embedding row and
adds new rows that the model initialises randomly (`resize_token_embeddings`-style). With a Chinese BERT
(bert-base-chinese, the paper's choice) nothing is missing and this is a no-op.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from transformers import BertTokenizerFast, PreTrainedTokenizerBase


def _is_cjk(character: str) -> bool:
    code = ord(character)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def missing_characters(
    tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], min_count: int = 1
) -> list[str]:
    """CJK characters of `texts` (seen >= `min_count` times) that `tokenizer` would turn into [UNK]."""
    vocabulary = tokenizer.get_vocab()
    counts = Counter(ch for text in texts if text for ch in text if _is_cjk(ch))
    return sorted(ch for ch, count in counts.items() if count >= min_count and ch not in vocabulary)


def extend_vocabulary(
    tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], min_count: int = 1
) -> tuple[PreTrainedTokenizerBase, int]:
    """
    A BERT tokenizer whose vocabulary is `tokenizer`'s followed by the CJK characters of `texts` it lacks.
    Existing ids are unchanged, new ones follow. Returns (tokenizer, number of characters added).
    """
    added = missing_characters(tokenizer, texts, min_count)
    if not added:
        return tokenizer, 0
    vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    if [index for _, index in vocabulary] != list(range(len(vocabulary))):
        raise ValueError("the tokenizer's vocabulary ids are not contiguous; cannot append characters to it")
    extended_vocabulary = {token: index for token, index in vocabulary}
    for character in added:
        extended_vocabulary[character] = len(extended_vocabulary)
    extended = BertTokenizerFast(
        vocab=extended_vocabulary,
        do_lower_case=getattr(tokenizer, "do_lower_case", True),
        tokenize_chinese_chars=True,
        model_max_length=tokenizer.model_max_length,
    )
    return extended, len(added)


def trim_vocabulary(
    tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], keep: Iterable[str] = (":", ";")
) -> tuple[PreTrainedTokenizerBase, list[int]]:
    """
    A BERT tokenizer with only the tokens a small corpus needs: the special tokens, every single character
    (and its "##" form), `keep` (the table serialisation's separators), and every token `tokenizer` produces
    on `texts`. WordPiece takes the longest vocabulary prefix, so `texts` are tokenised exactly as before.

    Why: MiniLM's 30 k-token vocabulary makes the MLM / MEM prediction heads (vocabulary x hidden, over every
    caption and table position) about 40 % of a pretraining step of the small sample model, for words the
    sample never uses. Returns the tokenizer and, for each new id, the old id (to copy embedding rows).
    """
    vocabulary = tokenizer.get_vocab()
    used = {token for text in texts if text for token in tokenizer.tokenize(text)}
    wanted = set(tokenizer.all_special_tokens) | used | set(keep)
    wanted |= {token for token in vocabulary if len(token.removeprefix("##")) == 1}
    specials = [token for token in tokenizer.all_special_tokens if token in vocabulary]
    ordered = sorted(specials, key=vocabulary.get) + sorted(
        (token for token in wanted if token in vocabulary and token not in specials), key=vocabulary.get
    )
    trimmed = BertTokenizerFast(
        vocab={token: index for index, token in enumerate(ordered)},
        do_lower_case=getattr(tokenizer, "do_lower_case", True),
        tokenize_chinese_chars=True,
        model_max_length=tokenizer.model_max_length,
    )
    return trimmed, [vocabulary[token] for token in ordered]
