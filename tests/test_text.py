import pandas as pd
import pytest

from recbase.data.text import format_item, format_items

TOY = {"title": "Toy Story", "year": 1995, "category": "Animation, Children's, Comedy"}


def test_formatted_names_fields_in_fixed_order():
    assert format_item(TOY) == "Title: Toy Story. Year: 1995. Category: Animation, Children's, Comedy."
    # the order is the schema's, not the mapping's
    assert format_item(dict(reversed(list(TOY.items())))) == format_item(TOY)


def test_raw_concatenates_values_only():
    assert format_item(TOY, "raw") == "Toy Story 1995 Animation, Children's, Comedy"


def test_missing_fields_whitespace_and_end_punctuation():
    item = {"title": "Who?  Me\n", "year": None, "description": "Ends with a period.", "brand": float("nan")}
    assert format_item(item) == "Title: Who? Me. Description: Ends with a period."


def test_unknown_style_is_an_error():
    with pytest.raises(ValueError, match="unknown text style"):
        format_item(TOY, "html")


def test_dataframe_version_matches_row_version():
    df = pd.DataFrame([TOY, {"title": "Heat", "year": pd.NA, "category": None}])
    df["year"] = df["year"].astype("Int32")
    assert list(format_items(df)) == [format_item(TOY), "Title: Heat."]
