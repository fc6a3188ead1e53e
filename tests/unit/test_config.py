"""Settings: defaults in code, the environment overrides, production stops on gaps."""

from pathlib import Path

import pytest

from shared.config import Settings, settings_table


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("UPLOADS_BUCKET", "league-uploads")
    monkeypatch.setenv("MAX_UPLOAD_BYTES", "1048576")
    settings = Settings()
    assert settings.uploads_bucket == "league-uploads"
    assert settings.max_upload_bytes == 1048576
    assert settings.clips_bucket == "idrl-clips"


def test_upload_chunks_must_suit_resumable_uploads():
    with pytest.raises(ValueError, match="262144"):
        Settings(upload_chunk_bytes=1000)


def test_a_missing_production_setting_stops_the_process():
    settings = Settings(environment="production", token_signing_key_secret=None)
    with pytest.raises(SystemExit, match="TOKEN_SIGNING_KEY_SECRET"):
        settings.require_production("token_signing_key_secret")


def test_local_defaults_need_nothing():
    Settings(environment="local").require_production("token_signing_key_secret")


def test_the_readme_lists_every_setting_as_the_code_defines_it():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = readme.split("<!-- settings -->\n", 1)[1].split("\n<!-- /settings -->", 1)[0]
    assert listed == settings_table()
    assert listed.count("\n| `") == len(Settings.model_fields)


@pytest.mark.parametrize(
    "values",
    [
        {"tus_upload_expiry_hours": 0},
        {"tus_max_uploads_in_progress": 0},
        {"tus_cors_origins": "*"},
        {"tus_cors_origins": "https://app.league.example/uploads"},
        {"tus_cors_origins": "app.league.example"},
    ],
)
def test_resumable_upload_settings_that_would_break_the_protocol_are_refused(values):
    with pytest.raises(ValueError):
        Settings(**values)


def test_cors_origins_take_a_list():
    Settings(tus_cors_origins="https://app.league.example, http://localhost:3000")
