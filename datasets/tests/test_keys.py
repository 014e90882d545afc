"""Dataset keys: how names and versions are sanitised, and what a valid key is."""

from __future__ import annotations

import pytest

from datasets.keys import KEY_MAX_LENGTH, InvalidDatasetKey, dataset_key_make, dataset_key_validate

TRAVERSAL_KEYS = ["..", "../x", "a/../../b", "a\\b", "..\\x", "a%2F..%2Fb", "/etc", "x/y", "a..b"]


@pytest.mark.parametrize(
    ("name", "version", "key"),
    [
        ("ungar_hcd_baseline", "v1", "ungar_hcd_baseline-v1"),
        ("my dataset", "v 1.0", "my_dataset-v_1.0"),
        ("path/to/data", "v1/beta", "path_to_data-v1_beta"),
    ],
)
def test_key_make_sanitises_spaces_and_slashes(name: str, version: str, key: str) -> None:
    assert dataset_key_make(name, version) == key


@pytest.mark.parametrize("key", ["a", "demo-v1", "A.b_c-9", "x" * KEY_MAX_LENGTH, "v1.0.2"])
def test_valid_keys_come_back_unchanged(key: str) -> None:
    assert dataset_key_validate(key) == key


@pytest.mark.parametrize(
    "key", [*TRAVERSAL_KEYS, "", "x" * (KEY_MAX_LENGTH + 1), "é", "a b", "a\x00b", "a\nb"]
)
def test_invalid_keys_are_refused_with_a_message_naming_the_field(key: str) -> None:
    with pytest.raises(InvalidDatasetKey) as caught:
        dataset_key_validate(key)
    assert "dataset_key" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_key_make_names_the_offending_field() -> None:
    with pytest.raises(InvalidDatasetKey) as caught:
        dataset_key_make("a\\..", "v1")
    assert caught.value.field == "dataset_name"
    assert str(caught.value).startswith("dataset_name:")
    with pytest.raises(InvalidDatasetKey) as caught:
        dataset_key_make("name", "../../v1")
    assert caught.value.field == "dataset_version"
    with pytest.raises(InvalidDatasetKey):
        dataset_key_make("n", "v" * KEY_MAX_LENGTH)


def test_long_keys_are_shortened_in_the_message() -> None:
    with pytest.raises(InvalidDatasetKey) as caught:
        dataset_key_validate("/" * 500)
    assert len(str(caught.value)) < 200
