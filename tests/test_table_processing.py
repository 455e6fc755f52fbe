"""Table parsing (pairs, dicts, mappings, release strings) and serialisation with entity ids for MEM."""

import pytest

from modeling_scale.table_processing_scale import ScaleTableProcessor, TableFormatError, parse_table
from modeling_scale.tokenizer_training_scale import train_wordpiece_tokenizer

CORPUS = ["颜色 红色 尺码 大码 材质 棉", "colour red size large material cotton", "long sleeve summer dress"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece_tokenizer(CORPUS * 3, vocab_size=200)


def test_all_formats_parse_to_the_same_pairs():
    expected = [("颜色", "红色"), ("尺码", "M")]
    assert parse_table(expected) == expected
    assert parse_table([["颜色", "红色"], ["尺码", "M"]]) == expected
    assert parse_table([{"key": "颜色", "value": "红色"}, {"key": "尺码", "value": "M"}]) == expected
    assert parse_table({"颜色": "红色", "尺码": "M"}) == expected
    assert parse_table({"key": ["颜色", "尺码"], "value": ["红色", "M"]}) == expected  # columnar
    assert parse_table("颜色#:#红色#;#尺码#:#M") == expected


def test_release_string_edge_cases():
    assert parse_table(" 颜色 #:# 红色 #;##;#适用季节") == [("颜色", "红色"), ("适用季节", "")]
    assert parse_table([("a", None), (None, "b"), ("", " ")]) == [("a", ""), ("", "b")]


@pytest.mark.parametrize("table", ["", "#;#", [], [("", "")], {}])
def test_empty_tables_raise(table):
    with pytest.raises(TableFormatError, match="empty"):
        parse_table(table)


@pytest.mark.parametrize("table", [3, [("a", "b", "c")], ["just a string"], [5]])
def test_wrong_types_raise(table):
    with pytest.raises(TableFormatError, match="table"):
        parse_table(table)


def test_serialisation_and_entity_ids(tokenizer):
    processor = ScaleTableProcessor(tokenizer, max_length=64)
    row = processor([[("colour", "red"), ("size", "large")]])[0]
    tokens = tokenizer.convert_ids_to_tokens(row["table_input_ids"])
    assert tokens == ["[CLS]", "colour", ":", "red", ";", "size", ":", "large", "[SEP]"]
    assert row["table_entity_ids"] == [0, 1, 0, 2, 0, 3, 0, 4, 0]
    assert row["table_attention_mask"] == [1] * 9


def test_chinese_entities_span_several_tokens(tokenizer):
    row = ScaleTableProcessor(tokenizer)([parse_table("颜色#:#红色#;#材质#:#棉")])[0]
    tokens = tokenizer.convert_ids_to_tokens(row["table_input_ids"])
    assert tokens == ["[CLS]", "颜", "色", ":", "红", "色", ";", "材", "质", ":", "棉", "[SEP]"]
    assert row["table_entity_ids"] == [0, 1, 1, 0, 2, 2, 0, 3, 3, 0, 4, 0]
    # keys have odd ids, values even ones
    key_tokens = [t for t, e in zip(tokens, row["table_entity_ids"], strict=True) if e % 2 == 1]
    assert key_tokens == ["颜", "色", "材", "质"]


def test_value_less_key_and_key_less_value(tokenizer):
    row = ScaleTableProcessor(tokenizer)([[("colour", ""), ("", "red")]])[0]
    assert tokenizer.convert_ids_to_tokens(row["table_input_ids"]) == ["[CLS]", "colour", ";", "red", "[SEP]"]
    assert row["table_entity_ids"] == [0, 1, 0, 4, 0]


def test_truncation_keeps_whole_pairs(tokenizer):
    pairs = [("colour", "red"), ("size", "large"), ("material", "cotton")]
    # [CLS] colour : red ; size : large [SEP] = 9 tokens; the third pair needs 4 more
    for max_length in (9, 10, 12):
        row = ScaleTableProcessor(tokenizer, max_length=max_length)([pairs])[0]
        assert len(row["table_input_ids"]) == 9
        assert max(row["table_entity_ids"]) == 4
    assert len(ScaleTableProcessor(tokenizer, max_length=13)([pairs])[0]["table_input_ids"]) == 13


def test_first_pair_too_long_is_cut_token_wise(tokenizer):
    long_value = " ".join(["cotton"] * 10)
    row = ScaleTableProcessor(tokenizer, max_length=6)([[("colour", long_value), ("size", "large")]])[0]
    assert tokenizer.convert_ids_to_tokens(row["table_input_ids"]) == [
        "[CLS]",
        "colour",
        ":",
        "cotton",
        "cotton",
        "[SEP]",
    ]
    assert row["table_entity_ids"] == [0, 1, 0, 2, 2, 0]
    row = ScaleTableProcessor(tokenizer, max_length=4)([[("colour", "red")]])[0]
    assert tokenizer.convert_ids_to_tokens(row["table_input_ids"]) == ["[CLS]", "colour", "[SEP]"]


def test_separators_must_be_single_known_tokens():
    tokenizer = train_wordpiece_tokenizer(["abc"], vocab_size=50)
    with pytest.raises(ValueError, match="separator"):
        ScaleTableProcessor(tokenizer, pair_separator="|")
    with pytest.raises(ValueError, match="at least 3"):
        ScaleTableProcessor(tokenizer, max_length=2)


def test_untokenisable_table_raises(tokenizer):
    with pytest.raises(TableFormatError, match="no text"):
        ScaleTableProcessor(tokenizer)([[("\u200b", "\u200b")]])
