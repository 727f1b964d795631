"""Model references name[:version][@variant] and the name rules."""

from __future__ import annotations

import pytest

from store.exceptions import ModelRefError
from store.refs import ModelRef, check_name, looks_like_ref, parse_ref


@pytest.mark.parametrize("text, expected", [
    ("style", ModelRef("style", None, "fp32")),
    ("style:2", ModelRef("style", 2, "fp32")),
    ("style:latest@lut4", ModelRef("style", None, "lut4")),
    ("style@fp16", ModelRef("style", None, "fp16")),
    ("a.b-c_d:12@my-recipe", ModelRef("a.b-c_d", 12, "my-recipe")),
])
def test_parse(text: str, expected: ModelRef) -> None:
    assert parse_ref(text) == expected
    assert parse_ref(str(expected)) == expected  # the canonical form parses back


@pytest.mark.parametrize("text", ["", "style:", "style@", "style:0", "style:-1", "style:two", "../x", "..",
                                  ".hidden", "a/b", "a\\b", "x" * 65, "style@../master", "st yle", "style:1:2"])
def test_bad_refs_are_refused_with_the_rule(text: str) -> None:
    with pytest.raises(ModelRefError, match="model reference|not allowed"):
        parse_ref(text)


def test_names_up_to_64_characters() -> None:
    assert check_name("x" * 64) == "x" * 64
    with pytest.raises(ModelRefError, match="1-64 characters"):
        check_name("x" * 65)


def test_paths_are_not_refs() -> None:
    assert looks_like_ref("style:2@lut4")
    assert not looks_like_ref("models/style.corral") and not looks_like_ref("style.corral")
