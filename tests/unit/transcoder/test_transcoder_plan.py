import pytest

from services.transcoder.plan import (
    Part,
    clip_object_name,
    fit_geometry,
    plan_parts,
    plan_scene_parts,
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


# --- scene-aware parts -------------------------------------------------------------------

SCENES = ClipSpec(split="scenes")  # 20 s parts, a 5 s window, 30 fps


def spans(parts):
    """Each part's start and length, flat (``pytest.approx`` compares flat lists)."""
    return [value for part in parts for value in (part.start, part.duration)]


def flat(expected):
    return pytest.approx([value for span in expected for value in span], abs=1e-6)


def test_fixed_split_ignores_cuts():
    assert plan_parts(45, ClipSpec(), cuts=(7, 16, 29)) == plan_parts(45, ClipSpec())


@pytest.mark.parametrize("duration", [45, 40, 20, 7.5, 40.02, 40.05, 0.01])
def test_scenes_without_cuts_is_todays_split(duration):
    assert spans(plan_parts(duration, SCENES)) == pytest.approx(
        spans(plan_parts(duration, ClipSpec())), abs=1e-6
    )


def test_a_cut_outside_the_window_leaves_the_boundary_at_full_length():
    # 7 s is 13 s before the 20 s boundary, past the 5 s window.
    assert spans(plan_parts(45, SCENES, cuts=(7,))) == flat([(0, 20), (20, 20), (40, 5)])


def test_the_boundary_moves_back_to_the_last_cut_in_the_window():
    parts = plan_parts(45, SCENES, cuts=(15.5, 16, 18))
    assert spans(parts) == flat([(0, 18), (18, 20), (38, 7)])
    assert [p.index for p in parts] == [1, 2, 3]


def test_the_window_starts_scene_window_seconds_before_the_boundary():
    assert spans(plan_parts(30, SCENES, cuts=(15,))) == flat([(0, 15), (15, 15)])
    assert spans(plan_parts(30, SCENES, cuts=(14.9,))) == flat([(0, 20), (20, 10)])
    wide = ClipSpec(split="scenes", scene_window_seconds=10)
    assert spans(plan_parts(30, wide, cuts=(10.5,))) == flat([(0, 10.5), (10.5, 19.5)])


def test_every_part_stays_within_max_part_seconds():
    cuts = (7, 16, 29, 33, 41, 58, 59.5, 70, 77)
    parts = plan_parts(90, SCENES, cuts=cuts)
    assert all(p.duration <= 20 + 1e-9 for p in parts)
    assert spans(parts) == flat([(0, 16), (16, 17), (33, 20), (53, 17), (70, 20)])
    assert sum(p.duration for p in parts) == pytest.approx(90)


def test_a_cut_on_the_boundary_keeps_it():
    assert spans(plan_parts(45, SCENES, cuts=(20, 40))) == flat([(0, 20), (20, 20), (40, 5)])


def test_a_cut_at_the_start_is_no_boundary():
    # A cut on the source's first frame, and the cut a part starts on, cannot end it.
    assert spans(plan_parts(45, SCENES, cuts=(0, 0.01))) == flat([(0, 20), (20, 20), (40, 5)])
    tight = ClipSpec(split="scenes", scene_window_seconds=20)
    assert spans(plan_parts(30, tight, cuts=(10,))) == flat([(0, 10), (10, 20)])


def test_a_cut_closer_than_a_frame_to_the_boundary_keeps_the_boundary():
    for cut in (19.99, 20.01):
        assert spans(plan_parts(45, SCENES, cuts=(cut,))) == flat([(0, 20), (20, 20), (40, 5)])


def test_boundaries_are_snapped_to_output_frames():
    parts = plan_parts(45, SCENES, cuts=(17.01, 36.02))  # 25 fps-ish cut times
    assert spans(parts) == flat([(0, 17.0), (17.0, 19.033333), (36.033333, 8.966667)])
    for part in parts[1:]:
        assert part.start * 30 == pytest.approx(round(part.start * 30), abs=1e-4)
    assert sum(p.duration for p in parts) == pytest.approx(45, abs=1e-5)


def test_a_part_length_off_the_frame_grid_is_shortened_to_whole_frames():
    spec = ClipSpec(split="scenes", max_part_seconds=10.01)
    assert spans(plan_parts(25, spec)) == flat([(0, 10), (10, 10), (20, 5)])


def test_a_tail_shorter_than_a_frame_is_dropped():
    assert spans(plan_parts(40.02, SCENES, cuts=(18,))) == flat([(0, 18), (18, 20), (38, 2.02)])
    assert spans(plan_parts(20.02, SCENES)) == flat([(0, 20)])
    assert spans(plan_parts(20.02, SCENES, cuts=(19,))) == flat([(0, 19), (19, 1.02)])


def test_trim_keeps_only_the_first_scene_aware_part():
    trim = ClipSpec(split="scenes", mode="trim")
    assert plan_parts(45, trim, cuts=(7, 18, 38)) == [Part(1, 0.0, 18.0)]
    assert plan_parts(45, trim) == [Part(1, 0.0, 20.0)]
    assert plan_parts(8, trim, cuts=(4,)) == [Part(1, 0.0, 8.0)]  # shorter than a part: whole


def test_cuts_need_not_be_sorted_or_finite():
    assert plan_parts(45, SCENES, cuts=(float("nan"), 18, 16, 18)) == plan_parts(45, SCENES, cuts=(16, 18))


class CutFinder:
    """Answers ``find_cuts(start, seconds)`` from a list of the source's cuts, and keeps
    the spans it was asked for."""

    def __init__(self, cuts):
        self.cuts = cuts
        self.asked: list[tuple[float, float]] = []

    def __call__(self, start, seconds):
        self.asked.append((start, seconds))
        return [cut for cut in self.cuts if start < cut <= start + seconds]


@pytest.mark.parametrize(
    "duration, cuts",
    [
        (45, (7, 16, 29, 35)),
        (90, (7, 16, 29, 33, 41, 58, 59.5, 70, 77)),
        (45, ()),
        (45, (20, 40)),
        (40.02, (18,)),
        (12, (4, 8)),
    ],
)
def test_searching_only_the_windows_plans_what_all_cuts_plan(duration, cuts):
    finder = CutFinder(cuts)
    assert plan_scene_parts(duration, SCENES, finder) == plan_parts(duration, SCENES, cuts)


def test_only_the_window_before_each_full_length_end_is_searched():
    finder = CutFinder((7, 16, 29, 35))
    plan_scene_parts(45, SCENES, finder)
    # Part 1's window ends at 20; part 2 starts on the cut at 16, its window ends at 36;
    # part 3 (35-45) ends with the source. Each span starts a quarter second early.
    assert [value for span in finder.asked for value in span] == flat([(14.75, 5.25), (30.75, 5.25)])
    assert sum(seconds for _, seconds in finder.asked) < 45 / 4


def test_a_source_within_one_part_is_not_searched():
    finder = CutFinder((4,))
    assert plan_scene_parts(20, SCENES, finder) == [Part(1, 0.0, 20.0)]
    assert finder.asked == []


def test_trim_searches_the_first_window_only():
    finder = CutFinder((7, 18, 38))
    assert plan_scene_parts(45, ClipSpec(split="scenes", mode="trim"), finder) == [Part(1, 0.0, 18.0)]
    assert len(finder.asked) == 1
