from __future__ import annotations

import pytest

from mlship.runtime._settings import Settings, SettingsError


def test_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings() == Settings(max_rows=10_000, max_body_bytes=20 * 1024 * 1024, timeout=60.0, max_batch_rows=128,
                                  max_in_flight=1024, drain_delay=0.0, grace_period=30.0, access_log=True,
                                  log_format="json")


def test_every_setting_from_its_variable() -> None:
    env = {"MLSHIP_MAX_ROWS": "5", "MLSHIP_MAX_BODY_BYTES": "1_000", "MLSHIP_TIMEOUT": "2.5",
           "MLSHIP_MAX_BATCH_ROWS": "1", "MLSHIP_MAX_IN_FLIGHT": "7", "MLSHIP_DRAIN_DELAY": "3",
           "MLSHIP_GRACE_PERIOD": "0", "MLSHIP_ACCESS_LOG": "off", "MLSHIP_LOG_FORMAT": "TEXT"}
    assert Settings.from_env(env) == Settings(5, 1000, 2.5, 1, 7, 3.0, 0.0, False, "text")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MLSHIP_TIMEOUT", "0", "MLSHIP_TIMEOUT='0' must be a positive finite number of seconds"),
        ("MLSHIP_TIMEOUT", "soon", "MLSHIP_TIMEOUT='soon' is not a number of seconds"),
        ("MLSHIP_DRAIN_DELAY", "-1", "MLSHIP_DRAIN_DELAY='-1' must be a finite number of seconds"),
        ("MLSHIP_GRACE_PERIOD", "inf", "MLSHIP_GRACE_PERIOD='inf' must be a finite number of seconds"),
        ("MLSHIP_MAX_BATCH_ROWS", "0", "MLSHIP_MAX_BATCH_ROWS='0' must be at least 1"),
        ("MLSHIP_ACCESS_LOG", "maybe", "MLSHIP_ACCESS_LOG='maybe' must be 1 or 0"),
        ("MLSHIP_LOG_FORMAT", "xml", "MLSHIP_LOG_FORMAT='xml' must be one of json, text"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({name: value})
    assert str(error.value) == message
