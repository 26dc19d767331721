"""Pure checks of the BYTES wire format and the version ordering."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.errors import InvalidInput
from gateway.models.binding import decode_bytes_elements, encode_bytes_elements
from registry_client.schema import is_valid_name, version_sort_key


def test_bytes_elements_round_trip_including_empty_and_non_ascii():
    array = np.array(["", "a", "żółw", "x" * 70000], dtype=object)
    assert list(decode_bytes_elements(encode_bytes_elements(array), 4, "t", "m")) == list(array)


def test_bytes_encoding_is_length_prefixed_little_endian():
    assert encode_bytes_elements(np.array([b"ab"], dtype=object)) == b"\x02\x00\x00\x00ab"


def test_incomplete_length_prefix_is_refused():
    with pytest.raises(InvalidInput, match="incomplete BYTES element length"):
        decode_bytes_elements(b"\x02\x00", 1, "t", "m")


def test_versions_order_numerically_then_by_name():
    versions = ["10", "9", "2", "canary", "1"]
    assert sorted(versions, key=version_sort_key) == ["1", "2", "9", "10", "canary"]


@pytest.mark.parametrize("name", ["credit", "v1.2", "A_b-c", "9"])
def test_valid_names(name):
    assert is_valid_name(name)


@pytest.mark.parametrize(
    "name", ["", "../x", "a/../b", "/abs", " x", "x y", ".hidden", "a" * 129, "a..b"]
)
def test_invalid_names(name):
    assert not is_valid_name(name)
