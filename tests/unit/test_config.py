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


@pytest.mark.parametrize("seconds", [0, -5])
def test_the_api_key_cache_time_must_be_positive(seconds):
    # PyJWT refuses a lifespan of 0 or less; it would stop the api at its first token.
    with pytest.raises(ValueError, match="jwks_cache_seconds"):
        Settings(jwks_cache_seconds=seconds)


@pytest.mark.parametrize("seconds", [-1, 30.5, 300])
def test_the_api_keeps_a_session_cutoff_30_s_at_most(seconds):
    # The documented window of a logged-out token (docs/api.md, "Sessions").
    with pytest.raises(ValueError, match="token_cutoff_cache_seconds"):
        Settings(token_cutoff_cache_seconds=seconds)
    assert Settings(token_cutoff_cache_seconds=0).token_cutoff_cache_seconds == 0


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
