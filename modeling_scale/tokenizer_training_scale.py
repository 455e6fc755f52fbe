"""Building SCALE's WordPiece tokenizer offline: a vocabulary trained on product text (Chinese, English)."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import BertTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TABLE_SEPARATORS = (":", ";")


def train_wordpiece_tokenizer(
    corpus: Iterable[str],
    vocab_size: int = 21128,
    min_frequency: int = 1,
    lowercase: bool = True,
) -> BertTokenizerFast:
    """
    A BERT-style WordPiece tokenizer trained on `corpus` (captions, table keys and values...).

    The BERT normaliser and pre-tokeniser split every CJK character into its own word, like bert-base-chinese,
    so Chinese text gets one token per character and English gets sub-words. The table separators ":" and ";"
    are always in the vocabulary because the table serialisation needs them. `vocab_size` is an upper bound:
    a small corpus yields fewer tokens.
    """
    tokenizer = Tokenizer(WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(TABLE_SEPARATORS),
        continuing_subword_prefix="##",
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return BertTokenizerFast(
        vocab=tokenizer.get_vocab(), do_lower_case=lowercase, tokenize_chinese_chars=True
    )


__all__ = ["train_wordpiece_tokenizer"]
