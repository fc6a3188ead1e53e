"""mypy finds no type error in the services and the code they share
(pyproject.toml [tool.mypy]: the files, the strict modules, the libraries without types)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MYPY = Path(sys.executable).with_name("mypy")


def _mypy(*arguments: str) -> subprocess.CompletedProcess[str]:
    # The cache (.mypy_cache) makes a second run take seconds; a first one, about twenty
    # seconds of CPU.
    return subprocess.run(
        [str(MYPY), "--config-file", str(ROOT / "pyproject.toml"), *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_mypy_finds_nothing():
    result = _mypy()
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_reports_a_type_error(tmp_path):
    # The same configuration on a module with one error: the check above can fail.
    broken = tmp_path / "broken.py"
    broken.write_text("def clip_count(parts: list[int]) -> int:\n    return len(parts) + '1'\n")
    result = _mypy("--cache-dir", str(tmp_path / "cache"), str(broken))
    assert result.returncode == 1
    assert 'Unsupported operand types for + ("int" and "str")' in result.stdout
