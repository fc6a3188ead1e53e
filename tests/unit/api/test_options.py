"""The processing options of a submission: every accepted shape, every refusal, the spec
they give and what they add to the idempotency fingerprint."""

from __future__ import annotations

import pytest

from services.api.options import (
    TaskOptions,
    options_from_metadata,
    options_from_text,
    parse_options,
    parse_text_options,
)
from shared.config import Settings
from shared.errors import BadRequest, DomainError, Unprocessable
from shared.events import CardText, ClipSpec, FormatSpec, LoudnessSpec
from shared.taskview import render_options


def test_no_options_give_the_platform_defaults_with_loudness_from_the_settings():
    settings = Settings(loudness_target_lufs=-16.0, loudness_true_peak_dbtp=-2.0, scene_window_seconds=3.0)
    spec = parse_options({}).clip_spec(settings)
    assert spec == ClipSpec(
        loudness=LoudnessSpec(target_lufs=-16.0, true_peak_dbtp=-2.0), scene_window_seconds=3.0
    )
    # Everything else is today's clip.
    assert spec.model_copy(update={"loudness": None, "scene_window_seconds": 5.0}) == ClipSpec()


def test_null_is_the_same_as_leaving_an_option_out():
    assert parse_options({"formats": None, "loudness": None, "card": None, "split": None}) == TaskOptions()


def test_every_option_maps_to_its_spec_field():
    options = parse_options(
        {
            "formats": ["16:9", {"format": "9:16", "fit": "crop"}, {"format": "1:1"}],
            "loudness": "off",
            "card": {"title": "  Ana Díaz #12 ", "subtitle": "Slalom\r\n3 May 2026"},
            "split": "scenes",
        }
    )
    spec = options.clip_spec(Settings())
    assert spec.formats == (
        FormatSpec(format="16:9", fit="pad"),
        FormatSpec(format="9:16", fit="crop"),
        FormatSpec(format="1:1", fit="pad"),
    )
    assert spec.loudness is None
    assert spec.card == CardText(title="Ana Díaz #12", subtitle="Slalom\n3 May 2026")
    assert (spec.split, spec.scene_window_seconds) == ("scenes", 5.0)


def test_card_text_is_normalized_to_nfc_and_counted_in_characters():
    combining = "Jose\u0301 " + "é" * 55  # 60 characters once composed
    card = parse_options({"card": {"title": combining}}).card
    assert card is not None and card.title == "José " + "é" * 55 and len(card.title) == 60
    assert card.subtitle is None
    assert parse_options({"card": {"subtitle": "Ω" * 60}}).card == CardText(subtitle="Ω" * 60)


@pytest.mark.parametrize(
    "raw, error, field",
    [
        # wrong types: 400
        ({"formats": "16:9"}, BadRequest, "formats"),
        ({"formats": {"format": "16:9"}}, BadRequest, "formats"),
        ({"formats": [169]}, BadRequest, "formats[0]"),
        ({"formats": [["16:9"]]}, BadRequest, "formats[0]"),
        ({"formats": [{"fit": "crop"}]}, BadRequest, "formats[0].format"),
        ({"formats": [{"format": 1}]}, BadRequest, "formats[0].format"),
        ({"formats": [{"format": "9:16", "fit": True}]}, BadRequest, "formats[0].fit"),
        ({"loudness": True}, BadRequest, "loudness"),
        ({"loudness": -14}, BadRequest, "loudness"),
        ({"card": "Ana Díaz"}, BadRequest, "card"),
        ({"card": ["Ana"]}, BadRequest, "card"),
        ({"card": {"title": 12}}, BadRequest, "card.title"),
        ({"split": 20}, BadRequest, "split"),
        # values outside what the option allows: 422
        ({"formats": []}, Unprocessable, "formats"),
        ({"formats": ["4:3"]}, Unprocessable, "formats[0]"),
        ({"formats": ["16:9", "9:16", "16:9"]}, Unprocessable, "formats"),
        ({"formats": ["9:16", {"format": "9:16", "fit": "crop"}]}, Unprocessable, "formats"),
        ({"formats": [{"format": "9:16", "fit": "stretch"}]}, Unprocessable, "formats[0].fit"),
        ({"formats": [{"format": "9:16", "size": "720x1280"}]}, Unprocessable, "formats[0].size"),
        ({"formats": ["16:9 "]}, Unprocessable, "formats[0]"),
        ({"loudness": "loud"}, Unprocessable, "loudness"),
        ({"loudness": "ON"}, Unprocessable, "loudness"),
        ({"split": "scene"}, Unprocessable, "split"),
        ({"card": {}}, Unprocessable, "card"),
        ({"card": {"title": None}}, Unprocessable, "card"),
        ({"card": {"title": "Ana", "colour": "red"}}, Unprocessable, "card.colour"),
        ({"card": {"title": "   \n  "}}, Unprocessable, "card.title"),
        ({"card": {"title": ""}}, Unprocessable, "card.title"),
        ({"card": {"title": "a" * 61}}, Unprocessable, "card.title"),
        ({"card": {"subtitle": "x" * 10 * 1024}}, Unprocessable, "card.subtitle"),
        ({"card": {"title": "Ana\tDíaz"}}, Unprocessable, "card.title"),
        ({"card": {"title": "Ana\x00"}}, Unprocessable, "card.title"),
        ({"card": {"title": "Ana\x1b[31m"}}, Unprocessable, "card.title"),
        ({"card": {"title": "Ana\u2028Díaz"}}, Unprocessable, "card.title"),
        ({"card": {"title": "Ana\ue000"}}, Unprocessable, "card.title"),
        ({"card": {"title": "Ana\u0378"}}, Unprocessable, "card.title"),
        ({"card": {"title": "Ana\x85Díaz"}}, Unprocessable, "card.title"),
        # a misspelt option is refused, never ignored
        ({"fromats": ["9:16"]}, Unprocessable, "fromats"),
        ({"loudness_target": -23}, Unprocessable, "loudness_target"),
    ],
)
def test_every_bad_value_is_refused_naming_its_field(raw, error, field):
    with pytest.raises(DomainError) as refused:
        parse_options(raw)
    assert type(refused.value) is error
    assert refused.value.message.startswith(f"{field}:"), refused.value.message
    assert refused.value.code in ("invalid_option", "invalid_field")


def test_the_status_of_each_refusal_is_the_designs():
    assert BadRequest.status == 400 and Unprocessable.status == 422


@pytest.mark.parametrize(
    "fields, raw",
    [
        ({"loudness": ["off"]}, {"loudness": "off"}),
        ({"loudness": ['"off"']}, {"loudness": "off"}),
        ({"split": [" scenes\n"]}, {"split": "scenes"}),
        ({"formats": ["9:16"]}, {"formats": ["9:16"]}),
        ({"formats": ['["16:9", "9:16"]']}, {"formats": ["16:9", "9:16"]}),
        (
            {"formats": ["16:9", '{"format": "1:1", "fit": "crop"}']},
            {"formats": ["16:9", {"format": "1:1", "fit": "crop"}]},
        ),
        ({"formats": ['["16:9"]', "1:1"]}, {"formats": ["16:9", "1:1"]}),
        ({"formats": ["null"]}, {"formats": None}),
        ({"card": ['{"title": "Ana"}']}, {"card": {"title": "Ana"}}),
        ({"card": ["Ana"]}, {"card": "Ana"}),
        ({"filename": ["run.mp4"], "filetype": ["video/mp4"]}, {}),
    ],
)
def test_text_fields_hold_json_or_a_bare_word(fields, raw):
    assert options_from_text(fields) == raw


def test_an_option_other_than_formats_is_sent_once():
    with pytest.raises(BadRequest, match="loudness: send it once"):
        options_from_text({"loudness": ["on", "off"]})


def test_upload_metadata_carries_the_options_beside_the_clients_own_keys():
    options = options_from_metadata({"filename": "run.mp4", "formats": '["9:16"]', "loudness": "off"})
    assert options == TaskOptions(formats=(FormatSpec(format="9:16"),), loudness=False)
    with pytest.raises(Unprocessable, match="split"):
        options_from_metadata({"filename": "run.mp4", "split": "sometimes"})


def test_the_fingerprint_adds_nothing_for_the_defaults_and_tells_options_apart():
    assert parse_options({}).fingerprint_parts() == ()
    assert parse_options({"loudness": "on", "split": "fixed"}).fingerprint_parts() == ()
    vertical = parse_options({"formats": ["9:16"]}).fingerprint_parts()
    assert (
        vertical
        and vertical == parse_options({"formats": [{"format": "9:16", "fit": "pad"}]}).fingerprint_parts()
    )
    others = [
        parse_options({"formats": ["9:16", "1:1"]}),
        parse_options({"formats": [{"format": "9:16", "fit": "crop"}]}),
        parse_options({"loudness": "off"}),
        parse_options({"card": {"title": "Ana"}}),
        parse_options({"card": {"subtitle": "Ana"}}),
        parse_options({"split": "scenes"}),
    ]
    fingerprints = [vertical, *(o.fingerprint_parts() for o in others)]
    assert len(set(fingerprints)) == len(fingerprints)


def test_the_options_shown_are_those_in_force():
    spec = parse_options(
        {"formats": ["9:16", {"format": "1:1", "fit": "crop"}], "card": {"title": "Ana"}, "split": "scenes"}
    ).clip_spec(Settings())
    assert render_options(spec.model_dump(mode="json")) == {
        "formats": [{"format": "9:16", "fit": "pad"}, {"format": "1:1", "fit": "crop"}],
        "loudness": {"target_lufs": -14.0, "true_peak_dbtp": -1.0},
        "card": {"title": "Ana", "subtitle": None},
        "split": "scenes",
    }
    # A task stored before the options existed: one 16:9 frame, the source's levels.
    assert render_options({}) == {
        "formats": [{"format": "16:9", "fit": "pad"}],
        "loudness": "off",
        "card": None,
        "split": "fixed",
    }


@pytest.mark.parametrize(
    "fields", [{"card": ["Ana"]}, {"card": [""]}, {"formats": ["7"]}, {"loudness": ["1"]}, {"split": ["[]"]}]
)
def test_in_text_fields_a_value_of_the_wrong_shape_is_422(fields):
    # A form field or metadata value is well-formed text whatever it holds; JSON says 400.
    with pytest.raises(Unprocessable) as refused:
        parse_text_options(fields)
    assert refused.value.code == "invalid_option"
    with pytest.raises(BadRequest):
        parse_options(options_from_text(fields))
