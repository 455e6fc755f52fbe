"""train_wordpiece_tokenizer: an offline BERT-style vocabulary for Chinese and English product text."""

from transformers import AutoTokenizer

from modeling_scale.tokenizer_training_scale import SPECIAL_TOKENS, train_wordpiece_tokenizer

CORPUS = ["2021夏季新款 纯棉短袖连衣裙", "Summer cotton dresses, short sleeves", "颜色:红色;尺码:M"] * 5


def test_chinese_is_split_per_character_and_english_into_subwords():
    tokenizer = train_wordpiece_tokenizer(CORPUS, vocab_size=120)
    assert tokenizer.tokenize("纯棉连衣裙") == ["纯", "棉", "连", "衣", "裙"]
    english = tokenizer.tokenize("Cotton DRESSES")
    assert "".join(piece.removeprefix("##") for piece in english) == "cottondresses"  # lower-cased
    assert tokenizer.convert_ids_to_tokens(tokenizer("裙")["input_ids"]) == ["[CLS]", "裙", "[SEP]"]


def test_specials_separators_and_size():
    tokenizer = train_wordpiece_tokenizer(CORPUS, vocab_size=80)
    vocabulary = tokenizer.get_vocab()
    assert [vocabulary[token] for token in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tokenizer.pad_token_id == 0 and tokenizer.mask_token == "[MASK]"
    assert ":" in vocabulary and ";" in vocabulary and len(vocabulary) <= 80
    assert tokenizer.tokenize("未见过") == ["[UNK]"] * 3  # characters outside the corpus


def test_save_and_reload_with_auto_tokenizer(tmp_path):
    tokenizer = train_wordpiece_tokenizer(CORPUS, vocab_size=120)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "红色 cotton dress"
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
