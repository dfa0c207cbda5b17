"""Texts in the user's language (issue 20): one catalogue per language, the same keys and fields
in each; the locale is a context setting, numbers and dates follow it."""

from __future__ import annotations

import pytest

from forecaster.i18n import LOCALES, catalogue, catalogue_problems, current_locale, kpi_name, t, use_locale


def test_every_key_is_in_every_language_with_the_same_fields():
    assert catalogue_problems() == []
    assert set(LOCALES) == {"en", "nl"}


def test_the_locale_is_set_for_a_block_and_restored():
    assert current_locale() == "en"
    with use_locale("nl"):
        assert current_locale() == "nl" and t("phase.see") == "See"
        assert kpi_name("conversion_rate") == "conversieratio" and kpi_name("my_kpi") == "my_kpi"
    assert current_locale() == "en" and kpi_name("conversion_rate") == "conversion_rate"


def test_an_unknown_locale_or_key_is_an_error_not_english():
    with pytest.raises(ValueError, match="locale must be one of en, nl. Got: 'de'"):
        with use_locale("de"):
            pass
    with pytest.raises(KeyError):
        t("no.such.key")
    assert "phase.do" in catalogue("nl")
