"""How an ffmpeg or ffprobe run is launched under the memory limit, and what its words
about a refused picture tell the task's owner (no process started)."""

import pytest

from services.transcoder.runner import launch_prefix, memory_reason, oversized_picture


def test_the_memory_limit_caps_the_address_space_through_prlimit():
    prefix = launch_prefix(3 * 2**30)
    assert prefix[-3].endswith("prlimit") and prefix[-2:] == [f"--as={3 * 2**30}:{3 * 2**30}", "--"]
    assert not any(part.endswith("prlimit") for part in launch_prefix(0))


@pytest.mark.parametrize(
    "line, reason",
    [
        (
            "[png @ 0x55d3fc1e8480] [IMGUTILS @ 0x7f6692956c40] Picture size 16000x16000 exceeds "
            "specified max pixel count 33177600, see the documentation if you wish to increase it",
            "16000x16000",
        ),
        ("Error while decoding stream #0:0: Invalid argument", None),
    ],
)
def test_a_picture_over_the_pixel_limit_is_found_in_ffmpeg_s_words(line, reason):
    assert oversized_picture(line) == reason


def test_the_memory_reason_names_the_limit():
    assert (
        memory_reason(3 * 2**30)
        == "decoding the source needs more than the 3072 MiB of memory a clip may use"
    )


def test_a_failure_reason_never_keeps_half_of_a_local_path():
    """A long path at the start of what is kept was cut mid-way before its folders were
    removed, and the owner read "7/popen-gw0/.../part-01.mp4"."""
    from services.transcoder.runner import detail_for_owner

    path = "/tmp/pytest-of-root/pytest-7/popen-gw0/faults-scratch-full0/scratch/task-2c32/part-01-preview.mp4"
    said = f"Error closing file {path}: No space left on device; " + "x" * 440
    detail = detail_for_owner(said)
    assert len(detail) <= 500
    assert "pytest" not in detail and "scratch" not in detail and "popen" not in detail
    assert detail.endswith("x" * 440)
