"""Settings: defaults in code, the environment overrides, production stops on gaps."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.config import PRODUCTION_SETTINGS, Settings, settings_table


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


@pytest.fixture
def no_settings_in_the_environment(monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.parametrize("service", sorted(PRODUCTION_SETTINGS))
def test_production_on_local_defaults_stops_naming_the_database(service, no_settings_in_the_environment):
    settings = Settings(environment="production")
    assert settings.database_url  # a default exists, and does not count
    with pytest.raises(SystemExit, match=f"^{service}: .*INSTANCE_CONNECTION_NAME or DATABASE_URL"):
        settings.require_production(service)


def test_a_setting_given_empty_is_missing(no_settings_in_the_environment):
    settings = Settings(
        environment="production",
        database_url="",
        google_cloud_project="idrl-prod",
        clips_bucket="idrl-prod-clips",
        public_base_url="https://videos.example",
    )
    assert settings.missing_production_settings("notifier") == ["INSTANCE_CONNECTION_NAME or DATABASE_URL"]


def test_one_of_a_group_is_enough(no_settings_in_the_environment):
    settings = Settings(
        environment="production",
        database_url="postgresql+pg8000://idrl@db/idrl",
        token_signing_key_file="/k.pem",
    )
    assert settings.missing_production_settings("auth") == []


def test_the_environment_counts_as_given(monkeypatch, no_settings_in_the_environment):
    monkeypatch.setenv("INSTANCE_CONNECTION_NAME", "p:r:i")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "idrl-prod")
    monkeypatch.setenv("CLIPS_BUCKET", "idrl-prod-clips")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://videos.example")
    Settings(environment="production").require_production("notifier")


@pytest.mark.parametrize("service", sorted(PRODUCTION_SETTINGS))
def test_local_defaults_need_nothing(service, no_settings_in_the_environment):
    Settings(environment="local").require_production(service)


def test_the_readme_lists_every_setting_as_the_code_defines_it():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = readme.split("<!-- settings -->\n", 1)[1].split("\n<!-- /settings -->", 1)[0]
    assert listed == settings_table()
    assert listed.count("\n| `") == len(Settings.model_fields)


def test_a_renamed_setting_stops_the_process_naming_its_new_name(monkeypatch):
    monkeypatch.setenv("MAX_TASKS_IN_FLIGHT_PER_USER", "8")
    with pytest.raises(
        ValidationError, match="MAX_TASKS_IN_FLIGHT_PER_USER is now MAX_PARTS_IN_FLIGHT_PER_USER"
    ):
        Settings()


@pytest.mark.parametrize("field", ["max_parts_in_flight_per_user", "max_stored_bytes_per_user"])
def test_the_per_user_limits_must_be_positive(field):
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: 0})


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


@pytest.mark.parametrize(
    "field, value",
    [
        ("loudness_target_lufs", -4.0),
        ("loudness_target_lufs", -71.0),
        ("loudness_true_peak_dbtp", 0.5),
        ("loudness_true_peak_dbtp", -10.0),
        ("scene_window_seconds", 0),
        ("scene_window_seconds", 21),
    ],
)
def test_clip_option_settings_outside_what_a_spec_holds_stop_the_process(field, value):
    # Every task's spec is built from them: a bad one must fail at start, not per task.
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_the_lease_bound_counts_every_run_of_the_shortest_scene_aware_parts():
    settings = Settings(max_source_seconds=600, scene_window_seconds=5, ffmpeg_timeout_seconds=100)
    # 600 s in parts of at least 15 s: 40 parts, each a scene window, a loudness measurement and a clip.
    runs = 40 * 3 * 100
    fixed = (
        settings.fetch_total_timeout_seconds + settings.probe_timeout_seconds + settings.drain_grace_seconds
    )
    assert settings.transcoder_max_lease_seconds == fixed + runs
    wider = Settings(max_source_seconds=600, scene_window_seconds=10, ffmpeg_timeout_seconds=100)
    assert wider.transcoder_max_lease_seconds == fixed + 60 * 3 * 100
