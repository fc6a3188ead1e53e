"""What every benchmark prints: its lines, flushed at once, and the machine it ran on."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import psutil


def say(message: str = "") -> None:
    print(message, flush=True)


def machine() -> str:
    """vCPUs and their model, memory, kernel, Python and ffmpeg versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = psutil.virtual_memory().total / 2**30
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False).stdout.split(
        "\n", 1
    )[0]
    return (
        f"{psutil.cpu_count()} vCPU ({cpu}), {memory_gib:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; {ffmpeg}"
    )
