"""A submission's processing options: ``formats``, ``loudness``, ``card`` and ``split``.

They arrive as JSON fields beside ``url``, as multipart form fields beside ``file``, or as
``Upload-Metadata`` values of a resumable upload (docs/api.md, "Processing options").
:func:`parse_options` is the one place they are checked; :meth:`TaskOptions.clip_spec`
turns them into the spec the task is processed with. Leaving a field out, or sending it
as ``null``, keeps its default.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, cast, get_args

from shared.config import Settings
from shared.errors import BadRequest, Unprocessable
from shared.events import CARD_TEXT_MAX_CHARS, CardText, ClipFormat, ClipSpec, FormatSpec, LoudnessSpec

OPTION_FIELDS: Final = ("formats", "loudness", "card", "split")
FORMAT_NAMES: Final[tuple[str, ...]] = get_args(ClipFormat)
FITS: Final = ("pad", "crop")
LOUDNESS_CHOICES: Final = ("on", "off")
SPLIT_CHOICES: Final = ("fixed", "scenes")
CARD_FIELDS: Final = ("title", "subtitle")
# Unassigned, private-use and surrogate code points, control characters but the newline,
# and the line and paragraph separators (the newline is the one line break).
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})

Split = Literal["fixed", "scenes"]


@dataclass(frozen=True)
class TaskOptions:
    """The options of one submission, checked and normalized; the defaults are what a
    submission without options gets."""

    formats: tuple[FormatSpec, ...] = ()
    loudness: bool = True
    card: CardText | None = None
    split: Split = "fixed"

    def clip_spec(self, settings: Settings) -> ClipSpec:
        """The spec in force for these options: the loudness target and the scene window
        come from the settings."""
        loudness = (
            LoudnessSpec(
                target_lufs=settings.loudness_target_lufs,
                true_peak_dbtp=settings.loudness_true_peak_dbtp,
            )
            if self.loudness
            else None
        )
        return ClipSpec(
            formats=self.formats,
            loudness=loudness,
            card=self.card,
            split=self.split,
            scene_window_seconds=settings.scene_window_seconds,
        )

    def fingerprint_parts(self) -> tuple[bytes, ...]:
        """What the options add to a submission's idempotency fingerprint: nothing for the
        defaults (a retry sent before options existed still matches), else their
        canonical JSON. The settings are left out, so a retry still matches after they
        change."""
        if self == TaskOptions():
            return ()
        canonical = {
            "formats": [f.model_dump() for f in self.formats],
            "loudness": self.loudness,
            "card": self.card.model_dump() if self.card else None,
            "split": self.split,
        }
        return (b"options", json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode())


def _bad_shape(field: str, expected: str) -> BadRequest:
    return BadRequest(f"{field}: must be {expected}", code="invalid_option")


def _refused(field: str, why: str) -> Unprocessable:
    return Unprocessable(f"{field}: {why}", code="invalid_option")


def parse_options(raw: Mapping[str, object]) -> TaskOptions:
    """Check the raw options (JSON values keyed by option name) and normalize them.

    Raises :class:`BadRequest` (400 ``invalid_option``) for a value of the wrong type and
    :class:`Unprocessable` (422 ``invalid_option``) for a value outside what the option
    allows, each naming the field; an unknown name is 422 ``invalid_field``.
    """
    unknown = sorted(set(raw) - set(OPTION_FIELDS))
    if unknown:
        raise Unprocessable(f"{unknown[0][:60]}: may not be set", code="invalid_field")

    def given(name: str) -> bool:
        return raw.get(name) is not None

    return TaskOptions(
        formats=_formats(raw["formats"]) if given("formats") else (),
        loudness=_choice("loudness", raw["loudness"], LOUDNESS_CHOICES) == "on"
        if given("loudness")
        else True,
        card=_card(raw["card"]) if given("card") else None,
        split=_split(raw["split"]) if given("split") else "fixed",
    )


def _split(value: object) -> Split:
    return "scenes" if _choice("split", value, SPLIT_CHOICES) == "scenes" else "fixed"


def _choice(field: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise _bad_shape(field, " or ".join(f'"{c}"' for c in choices))
    if value not in choices:
        raise _refused(field, f"must be {' or '.join(choices)}, not {value[:40]!r}")
    return value


def _formats(value: object) -> tuple[FormatSpec, ...]:
    if not isinstance(value, list):
        raise _bad_shape("formats", 'a list such as ["16:9", "9:16"]')
    if not value:
        raise _refused("formats", f"name at least one of {', '.join(FORMAT_NAMES)}")
    found: list[FormatSpec] = []
    for index, item in enumerate(value):
        spec = _format(f"formats[{index}]", item)
        if any(f.format == spec.format for f in found):
            raise _refused("formats", f"{spec.format} is listed twice")
        found.append(spec)
    return tuple(found)


def _format(field: str, item: object) -> FormatSpec:
    if isinstance(item, str):
        return FormatSpec(format=_format_name(field, item))
    if not isinstance(item, dict):
        raise _bad_shape(field, 'a format name or an object such as {"format": "9:16", "fit": "crop"}')
    extra = sorted(set(item) - {"format", "fit"})
    if extra:
        raise _refused(f"{field}.{str(extra[0])[:40]}", "may not be set")
    if "format" not in item:
        raise _bad_shape(f"{field}.format", "given")
    name = item["format"]
    if not isinstance(name, str):
        raise _bad_shape(f"{field}.format", "a format name")
    fit = item.get("fit", "pad")
    if not isinstance(fit, str):
        raise _bad_shape(f"{field}.fit", '"pad" or "crop"')
    if fit not in FITS:
        raise _refused(f"{field}.fit", f"must be pad or crop, not {fit[:40]!r}")
    return FormatSpec(format=_format_name(f"{field}.format", name), fit="crop" if fit == "crop" else "pad")


def _format_name(field: str, name: str) -> ClipFormat:
    if name in FORMAT_NAMES:
        return cast(ClipFormat, name)
    raise _refused(field, f"{name[:40]!r} is not a format; use {', '.join(FORMAT_NAMES)}")


def _card(value: object) -> CardText:
    if not isinstance(value, dict):
        raise _bad_shape("card", 'an object such as {"title": "Ana Díaz #12", "subtitle": "Slalom, 3 May"}')
    extra = sorted(set(value) - set(CARD_FIELDS))
    if extra:
        raise _refused(f"card.{str(extra[0])[:40]}", "may not be set; use title and subtitle")
    texts = {
        name: card_text(f"card.{name}", value[name]) for name in CARD_FIELDS if value.get(name) is not None
    }
    if not texts:
        raise _refused("card", "set a title, a subtitle or both")
    return CardText(**texts)


def card_text(field: str, value: object) -> str:
    """A card line as it will be drawn: NFC, CRLF as a newline, each line stripped;
    1 to 60 characters of printable text, the newline meaning a line break."""
    if not isinstance(value, str):
        raise _bad_shape(field, "text")
    text = unicodedata.normalize("NFC", value).replace("\r\n", "\n")
    text = "\n".join(line.strip() for line in text.strip().split("\n"))
    if not text:
        raise _refused(field, "must not be blank")
    if len(text) > CARD_TEXT_MAX_CHARS:
        raise _refused(field, f"at most {CARD_TEXT_MAX_CHARS} characters, this one has {len(text)}")
    for char in text:
        if char != "\n" and unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise _refused(field, f"U+{ord(char):04X} is not allowed: printable text and line breaks only")
    return text


def options_from_text(fields: Mapping[str, Sequence[str]]) -> dict[str, object]:
    """The raw options in text fields (multipart form fields, Upload-Metadata values),
    for :func:`parse_options`. Each value is JSON or a bare word (``loudness=off``,
    ``formats=9:16``); ``formats`` may repeat, each holding a format, a format object
    or a list of them; the other options are sent once."""
    raw: dict[str, object] = {}
    for name, texts in fields.items():
        if name not in OPTION_FIELDS or not texts:
            continue
        values = [_text_value(text) for text in texts]
        if name == "formats":
            raw[name] = _format_list(values)
        elif len(values) > 1:
            raise BadRequest(f"{name}: send it once", code="invalid_option")
        else:
            raw[name] = values[0]
    return raw


def parse_text_options(fields: Mapping[str, Sequence[str]]) -> TaskOptions:
    """The options in text fields (:func:`options_from_text`), checked. A text field is
    well-formed whatever it holds, so every value the option cannot take is 422
    ``invalid_option`` here, a wrong shape too (``card=Ana``)."""
    raw = options_from_text(fields)
    try:
        return parse_options(raw)
    except BadRequest as exc:
        raise Unprocessable(exc.message, code=exc.code) from None


def options_from_metadata(metadata: Mapping[str, str]) -> TaskOptions:
    """The options a resumable upload's ``Upload-Metadata`` carries (its other keys, such
    as ``filename``, are the client's own)."""
    return parse_text_options({key: [value] for key, value in metadata.items()})


def _format_list(values: list[object]) -> object:
    if len(values) == 1 and (values[0] is None or isinstance(values[0], list)):
        return values[0]
    items: list[object] = []
    for value in values:
        items.extend(value if isinstance(value, list) else [value])
    return items


def _text_value(text: str) -> object:
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        return stripped
