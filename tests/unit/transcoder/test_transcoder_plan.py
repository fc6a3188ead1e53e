import pytest

from services.transcoder.plan import (
    Part,
    clip_object_name,
    fit_geometry,
    plan_parts,
    poster_object_name,
)
from shared.events import ClipSpec


@pytest.mark.parametrize(
    "duration, expected",
    [
        (45, [(0, 20), (20, 20), (40, 5)]),
        (40, [(0, 20), (20, 20)]),
        (20, [(0, 20)]),
        (7.5, [(0, 7.5)]),
        (40.02, [(0, 20), (20, 20)]),  # a tail under one frame is rounding, not content
        (40.05, [(0, 20), (20, 20), (40, 0.05)]),
        (0.01, [(0, 0.01)]),
    ],
)
def test_split_cuts_consecutive_parts_of_at_most_max_part_seconds(duration, expected):
    parts = plan_parts(duration, ClipSpec())
    assert [p.start for p in parts] == pytest.approx([start for start, _ in expected])
    assert [p.duration for p in parts] == pytest.approx([length for _, length in expected])
    assert [p.index for p in parts] == list(range(1, len(expected) + 1))


def test_trim_keeps_only_the_first_part():
    assert plan_parts(45, ClipSpec(mode="trim")) == [Part(1, 0.0, 20.0)]
    assert plan_parts(8, ClipSpec(mode="trim")) == [Part(1, 0.0, 8.0)]


def test_part_length_is_configurable():
    parts = plan_parts(25, ClipSpec(max_part_seconds=10))
    assert [p.duration for p in parts] == [10, 10, 5]


@pytest.mark.parametrize("duration", [0, -1, float("nan"), float("inf")])
def test_a_duration_must_be_positive(duration):
    with pytest.raises(ValueError):
        plan_parts(duration, ClipSpec())


@pytest.mark.parametrize(
    "display, mode, expected",
    [
        ((1920, 1080), "pad", (1280, 720, 0, 0)),
        ((1080, 1920), "pad", (404, 720, 438, 0)),  # portrait: pillarbox
        ((320, 240), "pad", (960, 720, 160, 0)),
        ((2560, 720), "pad", (1280, 360, 0, 180)),  # ultra-wide: letterbox
        ((320, 240), "crop", (1280, 960, 0, 120)),
        ((1080, 1920), "crop", (1280, 2276, 0, 778)),
        ((3840, 2160), "crop", (1280, 720, 0, 0)),
    ],
)
def test_fit_keeps_the_aspect_ratio(display, mode, expected):
    fit = fit_geometry(*display, 1280, 720, mode)
    assert (fit.scale_width, fit.scale_height, fit.x, fit.y) == expected
    source_ratio = display[0] / display[1]
    assert fit.scale_width / fit.scale_height == pytest.approx(source_ratio, rel=0.01)
    for value in (fit.scale_width, fit.scale_height, fit.x, fit.y):
        assert value % 2 == 0
    if mode == "pad":
        assert fit.scale_width <= 1280 and fit.scale_height <= 720
    else:
        assert fit.scale_width >= 1280 and fit.scale_height >= 720


def test_output_names_are_deterministic():
    part = Part(3, 40.0, 5.0)
    assert clip_object_name("t-1", part) == "tasks/t-1/part-03.mp4"
    assert poster_object_name("t-1", part) == "tasks/t-1/part-03.jpg"
