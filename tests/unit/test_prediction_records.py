"""The prediction log's record: packed small, read back exactly, found from the id alone."""

from __future__ import annotations

import pytest

from registry_client.quality.predictions import (
    DAY_SECONDS,
    MAX_BUCKETS,
    MIN_BUCKETS,
    PRIMARY,
    SHADOW,
    PredictionFormatError,
    PredictionRecord,
    bucket_count,
    bucket_of,
    day_of,
    decode_records,
    encode_records,
)

NOW = 20_425 * 86_400 + 12_345  # a moment 12,345 s into a UTC day


def test_records_of_an_id_round_trip_primary_and_shadow():
    records = [
        PredictionRecord("2", PRIMARY, NOW, ("F", "18-25"), 0.8123457),
        PredictionRecord("3-rc1", SHADOW, NOW + 1, ("F", "18-25"), 0.25),
    ]
    assert decode_records(encode_records(records), day_of(NOW)) == records


def test_class_indices_and_no_segments_round_trip():
    records = [PredictionRecord("1", PRIMARY, NOW, (), 7.0)]
    assert encode_records(records) == "1\x1fp12345\x1f\x1f7"
    assert decode_records(encode_records(records), day_of(NOW)) == records


def test_a_record_with_two_segments_and_a_score_stays_small():
    record = PredictionRecord("12", PRIMARY, NOW, ("F", "35-44"), 0.123456789)
    assert len(record.encode()) <= 30  # with a 32-character id: ~65 bytes of hash entry


@pytest.mark.parametrize(
    "value",
    ["", "1\x1fp1\x1f", "\x1fp1\x1f\x1f0.5", "1\x1fx1\x1f\x1f0.5", "1\x1fp99999\x1f\x1f0.5",
     "1\x1fp1\x1f\x1fnan", "1\x1fpa\x1f\x1f0.5"],
)  # fmt: skip
def test_malformed_records_are_refused(value):
    with pytest.raises(PredictionFormatError):
        decode_records(value, 0)


def test_the_bucket_depends_on_the_id_only_and_spreads():
    assert bucket_of("req-1", 64) == bucket_of("req-1", 64)
    counts = [0] * 64
    for i in range(6400):
        counts[bucket_of(f"req-{i}", 64)] += 1
    assert max(counts) < 150 and min(counts) > 50


def test_a_days_buckets_follow_the_day_before_within_bounds():
    assert bucket_count(0) == MIN_BUCKETS
    assert bucket_count(86_400_000) == MAX_BUCKETS  # 1,000 req/s: capped
    assert bucket_count(80_000) == 1_000
    assert day_of(NOW) * DAY_SECONDS <= NOW < (day_of(NOW) + 1) * DAY_SECONDS
