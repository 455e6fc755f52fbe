"""Product property tables: parsing the formats of users and of the M5Product release, serialising to tokens.

A table becomes "[CLS] key1 : value1 ; key2 : value2 ... [SEP]". Every key and every value is an *entity*
(key of pair k -> entity 2k-1, value -> 2k, so parity tells key from value); `table_entity_ids` records which
entity each token belongs to (0 for [CLS], [SEP], separators and padding) so that MEM can mask whole entities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

RELEASE_PAIR_SEPARATOR = "#;#"
RELEASE_KEY_VALUE_SEPARATOR = "#:#"


class TableFormatError(ValueError):
    """A table that is empty or of a type the processor does not understand."""


def parse_table(table: Any) -> list[tuple[str, str]]:
    """
    (key, value) pairs from any of the accepted formats:

    - a list of `(key, value)` pairs,
    - a list of `{"key": ..., "value": ...}` dicts (the converted dataset's `table` feature),
    - a `{key: value}` mapping,
    - the M5Product release's `"prop#:#value#;#prop#:#value"` string (a segment without `#:#` is a key
      without value).

    Pairs whose key and value are both blank are dropped; a table left without any pair is an error, because
    it would be a "present" modality with no content (pass `None` for a missing table).
    """
    if isinstance(table, str):
        pairs = []
        for segment in table.split(RELEASE_PAIR_SEPARATOR):
            key, _, value = segment.partition(RELEASE_KEY_VALUE_SEPARATOR)
            pairs.append((key, value))
    elif isinstance(table, Mapping):
        if (
            set(table) == {"key", "value"}
            and isinstance(table["key"], Sequence)
            and not isinstance(table["key"], str)
        ):
            pairs = list(
                zip(table["key"], table["value"], strict=True)
            )  # columnar: {"key": [...], "value": [...]}
        else:
            pairs = list(table.items())
    elif isinstance(table, Sequence):
        pairs = []
        for position, pair in enumerate(table):
            if isinstance(pair, Mapping) and "key" in pair and "value" in pair:
                pairs.append((pair["key"], pair["value"]))
            elif isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2:
                pairs.append((pair[0], pair[1]))
            else:
                raise TableFormatError(
                    f"table row {position} is {pair!r}; expected a (key, value) pair or a "
                    "{'key', 'value'} dict"
                )
    else:
        raise TableFormatError(
            f"unsupported table type {type(table).__name__}; expected a list of (key, value) pairs, a "
            "list of "
            "{'key', 'value'} dicts, a mapping or a 'prop#:#value#;#...' string"
        )
    cleaned = []
    for key, value in pairs:
        key = "" if key is None else str(key).strip()
        value = "" if value is None else str(value).strip()
        if key or value:
            cleaned.append((key, value))
    if not cleaned:
        raise TableFormatError("the table is empty (no key or value with text)")
    return cleaned


class ScaleTableProcessor:
    r"""
    Serialises parsed tables into `table_input_ids`, `table_attention_mask` and `table_entity_ids` (lists of
    ints, unpadded) with the processor's tokenizer.

    Truncation to `max_length` tokens happens on entity boundaries: pairs are kept in order while they fit; a
    key whose value does not fit is dropped with it. Only when not even the first pair fits is it cut
    token-wise.
    """

    def __init__(
        self, tokenizer: Any, max_length: int = 64, key_separator: str = ":", pair_separator: str = ";"
    ):
        if max_length < 3:
            raise ValueError(
                f"a table needs at least 3 tokens ([CLS] entity [SEP]), got max_length={max_length}"
            )
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.key_separator_id = self._single_token_id(key_separator)
        self.pair_separator_id = self._single_token_id(pair_separator)

    def _single_token_id(self, text: str) -> int:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == self.tokenizer.unk_token_id:
            raise ValueError(
                f"the tokenizer must encode the table separator {text!r} as one known token, got {ids}"
            )
        return ids[0]

    def _serialise(self, pairs: list[tuple[list[int], list[int]]]) -> dict[str, list[int]]:
        budget = self.max_length - 2  # [CLS] ... [SEP]
        ids: list[int] = []
        entities: list[int] = []
        for index, (key_ids, value_ids) in enumerate(pairs):
            pair_ids, pair_entities = [], []
            if index:
                pair_ids.append(self.pair_separator_id)
                pair_entities.append(0)
            if key_ids:
                pair_ids += key_ids
                pair_entities += [2 * index + 1] * len(key_ids)
            if key_ids and value_ids:
                pair_ids.append(self.key_separator_id)
                pair_entities.append(0)
            if value_ids:
                pair_ids += value_ids
                pair_entities += [2 * index + 2] * len(value_ids)
            if len(ids) + len(pair_ids) > budget:
                if not ids:  # not even the first pair fits: keep as much of it as we can
                    ids, entities = pair_ids[:budget], pair_entities[:budget]
                    if entities[-1] == 0:  # do not end on a dangling separator
                        ids, entities = ids[:-1], entities[:-1]
                break
            ids += pair_ids
            entities += pair_entities
        ids = [self.tokenizer.cls_token_id] + ids + [self.tokenizer.sep_token_id]
        entities = [0] + entities + [0]
        return {"table_input_ids": ids, "table_attention_mask": [1] * len(ids), "table_entity_ids": entities}

    def __call__(self, tables: list[list[tuple[str, str]]]) -> list[dict[str, list[int]]]:
        """Parsed tables (see `parse_table`) -> one dict of token lists per table."""
        texts = [text for pairs in tables for pair in pairs for text in pair]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        outputs, cursor = [], 0
        for pairs in tables:
            tokenised = []
            for _ in pairs:
                tokenised.append((encoded[cursor], encoded[cursor + 1]))
                cursor += 2
            if not any(key_ids or value_ids for key_ids, value_ids in tokenised):
                raise TableFormatError("the table has no text the tokenizer can encode")
            outputs.append(self._serialise(tokenised))
        return outputs


__all__ = ["ScaleTableProcessor", "TableFormatError", "parse_table"]
