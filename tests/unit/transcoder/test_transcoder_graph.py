"""The ffmpeg command a clip is made with: built, not run."""

from pathlib import Path

import pytest

from services.transcoder.graph import build_clip_command
from services.transcoder.pipeline import ProgressThrottle
from services.transcoder.plan import Part
from shared.events import ClipSpec
from tests.support.media import source_info as info


def command(spec=ClipSpec(), part=Part(2, 20.0, 20.0), **changes):
    return build_clip_command(
        Path("/scratch/source"),
        info(**changes),
        part,
        spec,
        Path("/assets/logo.png"),
        Path("/scratch/part-02.mp4"),
        Path("/scratch/part-02.jpg"),
    )


def options_before(args, target):
    """The options given to the input ``target`` (between the previous -i and its own)."""
    end = args.index(target) - 1
    start = max((i for i in range(end) if args[i] == "-i"), default=-1) + 2
    return dict(zip(args[start:end:2], args[start + 1 : end : 2]))


def test_the_source_is_read_from_a_file_url_through_the_allow_lists():
    args = command().args
    source_options = options_before(args, "file:/scratch/source")
    assert source_options["-protocol_whitelist"] == "file"
    whitelist = source_options["-format_whitelist"].split(",")
    assert "mov" in whitelist and "matroska" in whitelist
    for indirection in ("hls", "concat", "image2", "lavfi", "tee", "subfile", "data"):
        assert indirection not in whitelist
    assert (source_options["-ss"], source_options["-t"]) == ("20.000000", "20.000000")
    logo_options = options_before(args, "file:/assets/logo.png")
    assert logo_options["-protocol_whitelist"] == "file"


def test_one_run_writes_the_clip_and_its_poster_with_the_spec():
    cmd = command()
    args = cmd.args
    assert args.count("-filter_complex") == 1
    assert args.count("-map") == 3  # clip video, clip audio, poster
    joined = " ".join(args)
    for expected in (
        "-vcodec libx264",
        "-preset veryfast",
        "-crf 23",
        "-pix_fmt yuv420p",
        "-r 30",
        "-fps_mode cfr",
        "-acodec aac",
        "-ar 48000",
        "-ac 2",
        "-movflags +faststart",
        "-map_metadata -1",
        "-progress pipe:1",
    ):
        assert expected in joined
    assert "-y" in args and "-nostdin" in args
    assert "/scratch/part-02.mp4" in args and "/scratch/part-02.jpg" in args
    assert cmd.expected_seconds == pytest.approx(22.0)


def test_the_graph_follows_the_fit_and_the_spec():
    graph = command(ClipSpec(fit="crop", width=640, height=360, fps=25, crf=28)).args
    graph = graph[graph.index("-filter_complex") + 1]
    assert "fps=25" in graph and "crop=640:360" in graph and "pad=640:360:0" not in graph
    assert "concat=a=1:n=3:v=1" in graph
    # Frames are thinned before the (costly) scaling of the source.
    assert graph.index("fps=25[") < graph.index("]zscale=filter=bicubic:h=360:w=640[")
    pad = command(display_width=1080, display_height=1920, width=1080, height=1920).args
    pad = pad[pad.index("-filter_complex") + 1]
    assert "zscale=filter=bicubic:h=720:w=404" in pad and "pad=1280:720:438:0" in pad


def test_a_silent_source_gets_silence_for_its_part():
    graph = command(has_audio=False).args
    joined = graph[graph.index("-filter_complex") + 1]
    assert "asplit=3" in joined and "[2:a" not in joined
    with_audio = command().args
    assert "[2:a:0]" in with_audio[with_audio.index("-filter_complex") + 1]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_is_throttled_to_one_report_per_interval():
    clock, sent = FakeClock(), []
    throttle = ProgressThrottle(sent.append, 2.0, clock)
    for tick in range(0, 60):  # ffmpeg reports every 0.5 s
        clock.now = tick * 0.5
        throttle(tick * 1.5)
    assert sent == sorted(set(sent))
    assert len(sent) == 15  # 30 s of reports, one per 2 s
    assert max(sent) <= 99  # 100 belongs to the processed event


def test_progress_never_goes_back():
    clock, sent = FakeClock(), []
    throttle = ProgressThrottle(sent.append, 2.0, clock)
    for now, percent in ((0, 40), (3, 30), (6, 50)):
        clock.now = now
        throttle(percent)
    assert sent == [40, 50]


def test_the_source_s_decoders_come_from_an_allow_list_and_refuse_oversized_pictures():
    from services.transcoder.hardening import DecodeLimits

    args = command(decode=DecodeLimits(7680, 4320, memory_bytes=2**30)).args
    source_options = options_before(args, "file:/scratch/source")
    assert source_options["-max_pixels"] == str(7680 * 4320)
    decoders = source_options["-codec_whitelist"].split(",")
    assert {"h264", "hevc", "vp9", "libdav1d", "prores", "aac", "opus"} <= set(decoders)
    for off_the_list in ("cinepak", "snow", "smackvid", "bink", "vp6f", "mdec"):
        assert off_the_list not in decoders
    logo_options = options_before(args, "file:/assets/logo.png")
    assert logo_options["-codec_whitelist"] == "png,mjpeg"


def _threads_before_each_output(args):
    """The ``-threads`` given to each output file (the options since the last output or -i)."""
    outputs = [i for i, arg in enumerate(args) if arg.startswith("/scratch/part-")]
    found = []
    for end, start in zip(outputs, [args.index("-filter_complex"), *outputs[:-1]]):
        window = args[start:end]
        found.append(window[window.index("-threads") + 1] if "-threads" in window else None)
    return found


def test_every_decoder_filter_graph_and_encoder_of_the_run_gets_the_configured_threads():
    from services.transcoder.hardening import DecodeLimits

    args = command(decode=DecodeLimits(threads=1)).args
    assert options_before(args, "file:/scratch/source")["-threads"] == "1"
    assert _threads_before_each_output(args) == ["1", "1"]  # the clip and its poster
    assert args[args.index("-filter_complex_threads") + 1] == "1"
    assert args[args.index("-filter_threads") + 1] == "1"


def test_without_a_thread_setting_ffmpeg_chooses_its_threads():
    args = command().args
    assert "-threads" not in args
    assert "-filter_complex_threads" not in args and "-filter_threads" not in args
