import json

import pytest

from dataset_script.raw_layout import format_pv, iter_annotations, parse_pv


def test_parse_pv_keeps_every_well_formed_pair():
    pv = format_pv([("材质", "纯棉"), ("brand", "Nuvo")])
    assert parse_pv(pv) == ([{"key": "材质", "value": "纯棉"}, {"key": "brand", "value": "Nuvo"}], [])
    pairs, malformed = parse_pv("材质#:#纯棉#;#garbage#;##:#novalue#;#a#:#b#:#c#;#产地#:#浙江")
    assert pairs == [{"key": "材质", "value": "纯棉"}, {"key": "产地", "value": "浙江"}]
    assert malformed == ["garbage", "#:#novalue", "a#:#b#:#c"]
    assert parse_pv(None) == ([], []) and parse_pv("") == ([], [])


@pytest.mark.parametrize("chunk_chars", [1, 7, 1 << 20])
def test_iter_annotations_streams_exactly_what_json_load_reads(tmp_path, chunk_chars):
    records = {
        "560000000001": {"title": 'Nuvo 连衣裙 "quoted" {brace}', "pv": "a#:#b", "label": "x", "n": 12345},
        "560000000002": {},
        "3": {"title": "", "nested": {"list": [1, 2.5, None, True]}},
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
    assert dict(iter_annotations(str(path), chunk_chars=chunk_chars)) == records
    path.write_text("{}", encoding="utf-8")
    assert list(iter_annotations(str(path), chunk_chars=chunk_chars)) == []


def test_iter_annotations_rejects_a_list(tmp_path):
    path = tmp_path / "annotations.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="one JSON object keyed by item id"):
        list(iter_annotations(str(path)))
