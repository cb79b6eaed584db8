"""Settings come from TAXI_* variables only, with clear errors for anything invalid."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from taxi.config import ConfigError, DatabaseURL, Settings, configuration_table


def test_embedded_defaults_need_no_variables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.database == DatabaseURL(backend="sqlite", name="taxi.sqlite3")
    assert settings.redis_url is None
    assert settings.access_token_lifetime == 300 and settings.refresh_token_lifetime == 86400
    assert settings.media_root == Path("media") and settings.public_url is None
    assert settings.cors_origins == ()
    assert len(settings.secret_key) >= 32
    # The generated key is kept, so the next process (another worker, a restart) signs with the same one.
    assert Settings.from_env({}).secret_key == settings.secret_key
    assert (tmp_path / ".taxi-secret").stat().st_mode & 0o777 == 0o600


def test_every_variable_is_read(tmp_path):
    env = {
        "TAXI_DATABASE_URL": "postgresql://app:p%40ss@db.internal:6543/rides",
        "TAXI_REDIS_URL": "redis://cache:6379/3",
        "TAXI_SECRET_KEY": "s" * 40,
        "TAXI_MEDIA_ROOT": str(tmp_path),
        "TAXI_ACCESS_TOKEN_LIFETIME": "60",
        "TAXI_REFRESH_TOKEN_LIFETIME": "3600",
        "TAXI_CORS_ORIGINS": "http://localhost:3000, https://app.example/",
        "TAXI_PUBLIC_URL": "https://api.example/",
    }
    settings = Settings.from_env(env)
    assert settings.database == DatabaseURL("postgresql", "rides", "db.internal", 6543, "app", "p@ss")
    assert settings.redis_url == "redis://cache:6379/3"
    assert settings.secret_key == "s" * 40
    assert settings.media_root == tmp_path
    assert (settings.access_token_lifetime, settings.refresh_token_lifetime) == (60, 3600)
    assert settings.cors_origins == ("http://localhost:3000", "https://app.example")
    assert settings.public_url == "https://api.example"


@pytest.mark.parametrize(
    "env,variable",
    [
        ({"TAXI_DATABASE_URL": "mysql://x/y"}, "TAXI_DATABASE_URL"),
        ({"TAXI_DATABASE_URL": "sqlite:///:memory:"}, "TAXI_DATABASE_URL"),
        ({"TAXI_DATABASE_URL": "postgresql://h:5432/"}, "TAXI_DATABASE_URL"),
        ({"TAXI_DATABASE_URL": "postgresql://h/db"}, "TAXI_SECRET_KEY"),
        ({"TAXI_DATABASE_URL": "postgresql://h/db", "TAXI_SECRET_KEY": "x" * 31}, "TAXI_SECRET_KEY"),
        ({"TAXI_ACCESS_TOKEN_LIFETIME": "soon"}, "TAXI_ACCESS_TOKEN_LIFETIME"),
        ({"TAXI_ACCESS_TOKEN_LIFETIME": "0"}, "TAXI_ACCESS_TOKEN_LIFETIME"),
        ({"TAXI_BCRYPT_ROUNDS": "40"}, "TAXI_BCRYPT_ROUNDS"),
        ({"TAXI_SECRET_KEY": "secret"}, "TAXI_SECRET_KEY"),  # short keys are refused with SQLite too
        ({"TAXI_ROTATE_REFRESH_TOKENS": "maybe"}, "TAXI_ROTATE_REFRESH_TOKENS"),
    ],
)
def test_invalid_settings_name_the_variable(env, variable, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_the_readme_table_is_the_settings_definition():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("| variable | default | meaning |")
    table = readme[start : readme.index("\n\n", start)]
    assert table == configuration_table(), "regenerate the README's table from taxi.config.configuration_table()"


def test_every_setting_can_be_set_from_its_variable(tmp_path):
    env = {"TAXI_SECRET_KEY": "s" * 40}
    expected = {}
    for item in fields(Settings):
        if item.type == "int":
            value = (item.metadata["low"] or 0) + 2
            if item.metadata["high"] is not None:
                value = min(value, item.metadata["high"])
            env[item.metadata["env"]] = str(value)
            expected[item.name] = value
    expected["trip_list_default"] = min(expected["trip_list_default"], expected["trip_list_max"])
    settings = Settings.from_env(env)
    assert {name: getattr(settings, name) for name in expected} == expected


def test_refresh_token_rotation_is_on_unless_switched_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).rotate_refresh_tokens is True
    for off in ("0", "false", "OFF", "no"):
        assert Settings.from_env({"TAXI_ROTATE_REFRESH_TOKENS": off}).rotate_refresh_tokens is False
    assert Settings.from_env({"TAXI_ROTATE_REFRESH_TOKENS": "on"}).rotate_refresh_tokens is True
