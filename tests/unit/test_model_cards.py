"""Model cards: read from JSON or YAML into the same normalized dict, and every refusal naming
the file and the field."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from registry_client.cards.card import (
    CARD_FIELDS,
    DATASET_FIELDS,
    MAX_CARD_BYTES,
    MAX_PROSE_CHARS,
    TIME_RANGE_FIELDS,
    load_card,
    validate_card,
)
from registry_client.errors import Rejected

SHA = "ab" * 32
CARD_YAML = f"""\
training_data:
  uri: s3://datasets/churn/2024-h1.parquet
  sha256: {SHA}
  rows: 1_200_000
  time_range:
    start: 2024-01-01
    end: 2024-06-30T23:59:59Z
  description: |
    Customers active in the first half of 2024,
    labelled with churn within 90 days.
evaluation_data:
  uri: s3://datasets/churn/2024-q3.parquet
  rows: 300000
  time_range: {{start: 2024-07-01, end: 2024-09-30}}
feature_engineering: >
  Tenure in months, spend per month
  and support tickets per quarter.
algorithm: gradient-boosted trees (LightGBM 4.3), 500 trees of depth 6
intended_use: Ranking customers for retention offers.
limitations: Not validated for business accounts.
evaluated_segments: [gender, age_band]
contact: churn-team@example.com
"""
NORMALIZED = {
    "training_data": {
        "uri": "s3://datasets/churn/2024-h1.parquet",
        "sha256": SHA,
        "rows": 1_200_000,
        "time_range": {"start": "2024-01-01", "end": "2024-06-30T23:59:59+00:00"},
        "description": "Customers active in the first half of 2024,\n"
        "labelled with churn within 90 days.",
    },
    "evaluation_data": {
        "uri": "s3://datasets/churn/2024-q3.parquet",
        "rows": 300_000,
        "time_range": {"start": "2024-07-01", "end": "2024-09-30"},
    },
    "feature_engineering": "Tenure in months, spend per month and support tickets per quarter.",
    "algorithm": "gradient-boosted trees (LightGBM 4.3), 500 trees of depth 6",
    "intended_use": "Ranking customers for retention offers.",
    "limitations": "Not validated for business accounts.",
    "evaluated_segments": ["gender", "age_band"],
    "contact": "churn-team@example.com",
}
CARD_JSON = {
    **NORMALIZED,
    "training_data": {
        **NORMALIZED["training_data"],  # type: ignore[dict-item]  # a dict, as written above
        "time_range": {"start": "2024-01-01", "end": "2024-06-30T23:59:59Z"},
    },
    "algorithm": "  gradient-boosted trees (LightGBM 4.3), 500 trees of depth 6\n",
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refusal(card: object) -> str:
    with pytest.raises(Rejected) as err:
        validate_card(card)
    return str(err.value)


def load_refusal(path: Path) -> str:
    with pytest.raises(Rejected) as err:
        load_card(path)
    return str(err.value)


def with_training(**fields: object) -> dict[str, object]:
    return {"training_data": {"uri": "s3://d/x.parquet", **fields}}


# Round trips.


def test_yaml_card_is_normalized(tmp_path):
    assert load_card(write(tmp_path, "card.yaml", CARD_YAML)) == NORMALIZED


def test_json_card_is_normalized_to_the_same_dict(tmp_path):
    assert load_card(write(tmp_path, "card.json", json.dumps(CARD_JSON))) == NORMALIZED


def test_yml_suffix_in_capitals_is_read_as_yaml(tmp_path):
    assert load_card(write(tmp_path, "CARD.YML", CARD_YAML)) == NORMALIZED


def test_normalized_card_is_plain_json_and_validates_to_itself(tmp_path):
    card = load_card(write(tmp_path, "card.yaml", CARD_YAML))
    assert json.loads(json.dumps(card)) == card
    assert validate_card(card) == card


def test_a_card_with_one_field_is_enough():
    assert validate_card({"contact": "ml@example.com"}) == {"contact": "ml@example.com"}


def test_utf8_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "card.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"algorithm": "k-NN"}).encode())
    assert load_card(path) == {"algorithm": "k-NN"}


def test_card_fields_document_every_accepted_field():
    listed = ", ".join(sorted(CARD_FIELDS))
    assert refusal({"x": 1}) == f"card.x: unknown field; expected one of {listed}"
    assert set(DATASET_FIELDS) == {"uri", "sha256", "rows", "time_range", "description"}
    assert set(TIME_RANGE_FIELDS) == {"start", "end"}


# Unknown and missing fields.


def test_unknown_top_level_field_is_named():
    assert refusal({"algorithm": "trees", "owner": "me"}) == (
        "card.owner: unknown field; expected one of algorithm, contact, evaluated_segments,"
        " evaluation_data, feature_engineering, intended_use, limitations, training_data"
    )


def test_unknown_nested_field_is_named_with_its_path():
    assert refusal(with_training(rowz=3)) == (
        "card.training_data.rowz: unknown field;"
        " expected one of description, rows, sha256, time_range, uri"
    )


def test_unknown_field_of_a_time_range_is_named():
    card = with_training(time_range={"start": "2024-01-01", "end": "2024-02-01", "tz": "UTC"})
    assert refusal(card) == (
        "card.training_data.time_range.tz: unknown field; expected one of end, start"
    )


def test_unknown_key_that_is_not_plain_is_escaped():
    assert refusal({"\x1b[31mred": 1}).startswith(r"card.'\x1b[31mred': unknown field")


def test_time_range_without_end_is_refused():
    card = with_training(time_range={"start": "2024-01-01"})
    assert refusal(card) == "card.training_data.time_range.end: missing"


def test_empty_card_is_refused():
    assert refusal({}).startswith("card: empty; expected at least one of algorithm, contact,")


def test_empty_dataset_is_refused():
    assert refusal({"evaluation_data": {}}).startswith(
        "card.evaluation_data: empty; expected at least one of description, rows,"
    )


# Wrong types and values.


def test_card_that_is_not_a_mapping_is_refused():
    assert refusal(["algorithm"]) == "card: expected a mapping, got a list (1 items)"


def test_dataset_that_is_text_is_refused():
    assert refusal({"training_data": "s3://d"}) == (
        "card.training_data: expected a mapping, got 's3://d'"
    )


def test_number_as_text_is_refused():
    assert refusal({"algorithm": 42}) == "card.algorithm: expected text, got 42"


def test_blank_text_is_refused():
    assert refusal({"limitations": " \n "}) == "card.limitations: expected text, got blanks"


def test_text_over_the_limit_is_refused():
    assert refusal({"intended_use": "x" * (MAX_PROSE_CHARS + 1)}) == (
        f"card.intended_use: expected at most {MAX_PROSE_CHARS} characters,"
        f" got {MAX_PROSE_CHARS + 1}"
    )


def test_bool_as_rows_is_refused():
    assert refusal(with_training(rows=True)) == (
        f"card.training_data.rows: expected an integer from 0 to {2**63 - 1}, got True"
    )


@pytest.mark.parametrize("rows", [-1, 1.5, 10.0, "10", None, 2**63])
def test_rows_that_are_not_a_count_are_refused(rows):
    assert refusal(with_training(rows=rows)).startswith(
        "card.training_data.rows: expected an integer from 0 to"
    )


@pytest.mark.parametrize("sha", [SHA.upper(), SHA[:-1], SHA + "0", "zz" * 32, 12])
def test_bad_sha256_is_refused(sha):
    assert refusal(with_training(sha256=sha)).startswith(
        "card.training_data.sha256: expected 64 lowercase hexadecimal digits, got"
    )


def test_reversed_time_range_is_refused():
    card = with_training(time_range={"start": "2024-06-30", "end": "2024-01-01"})
    assert refusal(card) == (
        "card.training_data.time_range: start 2024-06-30 is after end 2024-01-01"
    )


def test_reversed_date_times_are_refused():
    card = with_training(
        time_range={"start": "2024-01-01T12:00:00Z", "end": "2024-01-01T13:00:00+02:00"}
    )
    assert "is after end 2024-01-01T13:00:00+02:00" in refusal(card)


def test_a_day_and_an_instant_on_that_day_are_in_order():
    card = with_training(time_range={"start": "2024-01-01T18:00:00", "end": "2024-01-01"})
    assert validate_card(card)["training_data"]["time_range"] == {
        "start": "2024-01-01T18:00:00",
        "end": "2024-01-01",
    }


def test_time_range_mixing_offsets_and_none_is_refused():
    card = with_training(time_range={"start": "2024-01-01T00:00:00", "end": "2024-02-01T00:00Z"})
    assert refusal(card) == (
        "card.training_data.time_range: expected start and end both with a UTC offset, or neither"
    )


@pytest.mark.parametrize("start", ["2024-13-01", "January 2024", "", 20240101])
def test_start_that_is_not_iso_8601_is_refused(start):
    card = with_training(time_range={"start": start, "end": "2024-12-31"})
    assert refusal(card).startswith(
        "card.training_data.time_range.start: expected an ISO-8601 date or date-time"
    )


def test_segments_that_are_text_are_refused():
    assert refusal({"evaluated_segments": "gender"}) == (
        "card.evaluated_segments: expected a list of segment names, got 'gender'"
    )


def test_segment_that_is_not_a_name_is_refused():
    assert refusal({"evaluated_segments": ["gender", "age band"]}).startswith(
        "card.evaluated_segments[1]: expected a segment name (1 to 128 characters"
    )


def test_segment_listed_twice_is_refused():
    assert refusal({"evaluated_segments": ["gender", "region", "gender"]}) == (
        "card.evaluated_segments[2]: 'gender' is listed twice"
    )


# Characters.


def test_escape_sequence_in_text_is_refused():
    assert refusal({"algorithm": "trees\x1b[2J"}) == (
        "card.algorithm: expected text without control or format characters,"
        " got '\\x1b' (U+001B) at character 6"
    )


def test_bidi_override_in_text_is_refused():
    assert "(U+202E) at character 3" in refusal({"contact": "ab\u202ecd@example.com"})


def test_line_break_in_a_one_line_field_is_refused():
    assert "(U+000A) at character 4" in refusal(with_training(uri="s3:\n//d"))


def test_line_breaks_in_prose_are_kept():
    card = validate_card({"limitations": "Line one.\nLine two.\n"})
    assert card == {"limitations": "Line one.\nLine two."}


def test_carriage_return_in_prose_is_refused():
    assert "(U+000D) at character 10" in refusal({"limitations": "Line one.\r\nLine two."})


# Files.


@pytest.mark.parametrize("name", ["card.txt", "card.yaml.bak", "card"])
def test_card_file_of_another_suffix_is_refused(tmp_path, name):
    message = load_refusal(write(tmp_path, name, "algorithm: trees\n"))
    assert message.startswith(f"{tmp_path / name}: a model card is a .json, .yaml or .yml file")


def test_missing_file_is_refused(tmp_path):
    path = tmp_path / "absent.yaml"
    assert load_refusal(path) == f"{path}: cannot read the model card (No such file or directory)"


def test_file_over_the_size_limit_is_refused(tmp_path):
    path = write(tmp_path, "card.yaml", "algorithm: " + "x" * MAX_CARD_BYTES)
    assert load_refusal(path) == f"{path}: a model card is at most {MAX_CARD_BYTES} bytes"


def test_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_bytes(b"algorithm: caf\xe9\n")
    assert load_refusal(path) == f"{path}: not UTF-8 text (byte 15)"


def test_invalid_yaml_is_refused_with_its_position(tmp_path):
    path = write(tmp_path, "card.yaml", "algorithm: trees\ncontact: [a, b\nrows: 3\n")
    message = load_refusal(path)
    assert message.startswith(f"{path}: not valid YAML at line 3, column 5:")


def test_invalid_json_is_refused_with_its_position(tmp_path):
    path = write(tmp_path, "card.json", '{\n  "algorithm": "trees"\n  "contact": "me"\n}\n')
    assert load_refusal(path) == (
        f"{path}: not valid JSON at line 3, column 3: Expecting ',' delimiter"
    )


def test_yaml_control_character_is_refused_with_its_position(tmp_path):
    path = write(tmp_path, "card.yaml", "algorithm: tr\x07ees\n")
    assert load_refusal(path).startswith(f"{path}: not valid YAML at character 14:")


def test_yaml_python_tag_is_refused(tmp_path):
    path = write(tmp_path, "card.yaml", "algorithm: !!python/object/apply:os.getcwd []\n")
    assert load_refusal(path).startswith(f"{path}: not valid YAML at line 1, column 12:")


def test_yaml_date_that_does_not_exist_is_refused(tmp_path):
    path = write(tmp_path, "card.yaml", "training_data: {time_range: {start: 2024-13-45}}\n")
    assert load_refusal(path) == (
        f"{path}: not valid YAML: month must be in 1..12 (quote the value if it is text)"
    )


@pytest.mark.parametrize(
    ("name", "text", "got"),
    [
        ("card.yaml", "- algorithm: trees\n", "a list (1 items)"),
        ("card.json", '"trees"', "'trees'"),
        ("card.yaml", "", "None"),
        ("card.yml", "# nothing but a comment\n", "None"),
    ],
)
def test_top_level_that_is_not_a_mapping_is_refused(tmp_path, name, text, got):
    path = write(tmp_path, name, text)
    assert load_refusal(path) == (
        f"{path}: expected a mapping of card fields at the top level, got {got}"
    )


def test_empty_mapping_file_is_refused(tmp_path):
    path = write(tmp_path, "card.json", "{}")
    assert load_refusal(path).startswith(f"{path}: card: empty; expected at least one of")


def test_field_refusal_names_the_file_and_the_field(tmp_path):
    path = write(tmp_path, "card.yaml", "training_data:\n  rows: yes\n")
    assert load_refusal(path) == (
        f"{path}: card.training_data.rows: expected an integer from 0 to {2**63 - 1}, got True"
    )


@pytest.mark.parametrize(
    ("field", "got"),
    [("limitations", "expected text, got a list (10 items)"),
     ("evaluated_segments[1]", "expected a segment name")],
)  # fmt: skip
def test_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path, field, got):
    # Each item lists the one before ten times: 10**10 strings if anything walked or printed it.
    levels = ["&a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    name = field.split("[")[0]
    items = ["gender", *levels] if name == "evaluated_segments" else levels
    path = write(tmp_path, "card.yaml", f"{name}: [{', '.join(items)}]\n")
    started = time.monotonic()
    message = load_refusal(path)
    assert time.monotonic() - started < 5
    assert message.startswith(f"{path}: card.{field}: {got}")


def test_deeply_nested_json_is_refused(tmp_path):
    path = write(tmp_path, "card.json", "[" * 100_000 + "]" * 100_000)
    assert load_refusal(path) == f"{path}: not valid JSON: nested too deeply"
