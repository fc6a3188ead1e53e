"""Parsed deployment files for the infrastructure tests: Terraform (python-hcl2), the
Dockerfiles and cloudbuild.yaml. Nothing here needs a cloud, Docker or Terraform."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import hcl2
from hcl2.utils import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "infra" / "terraform"
SERVICES = ("auth", "api", "transcoder", "notifier", "dispatcher")
DOCKERFILES = {service: REPO / "services" / service / "Dockerfile" for service in SERVICES}

_OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


def load_tf(path: Path) -> dict:
    with path.open() as handle:
        return hcl2.load(handle, serialization_options=_OPTIONS)


@dataclass
class TerraformDir:
    """Every block of one Terraform directory (root or module), by kind, type and name."""

    path: Path
    resources: dict[str, dict[str, dict]] = field(default_factory=dict)
    data: dict[str, dict[str, dict]] = field(default_factory=dict)
    modules: dict[str, dict] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    locals: dict[str, object] = field(default_factory=dict)

    def resource(self, kind: str, name: str) -> dict:
        assert name in self.resources.get(kind, {}), f"{self.path.name}: no {kind}.{name}"
        return self.resources[kind][name]

    def of_type(self, kind: str) -> dict[str, dict]:
        return self.resources.get(kind, {})


def parse_dir(path: Path) -> TerraformDir:
    parsed = TerraformDir(path)
    for tf in sorted(path.glob("*.tf")):
        body = load_tf(tf)
        for block in body.get("resource", []):
            for kind, named in block.items():
                parsed.resources.setdefault(kind, {}).update(named)
        for block in body.get("data", []):
            for kind, named in block.items():
                parsed.data.setdefault(kind, {}).update(named)
        for kind in ("module", "variable", "output"):
            target = {"module": parsed.modules, "variable": parsed.variables, "output": parsed.outputs}[kind]
            for block in body.get(kind, []):
                target.update(block)
        for block in body.get("locals", []):
            parsed.locals.update(block)
    return parsed


def only(blocks: object) -> dict:
    """The single nested block hcl2 returns as a one-element list."""
    assert isinstance(blocks, list) and len(blocks) == 1, blocks
    return blocks[0]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    pairs = []
    for entry in logical:
        match = re.match(r"^([A-Za-z]+)\s+(.*)$", entry)
        assert match, f"{path}: cannot read {entry!r}"
        pairs.append((match.group(1).upper(), match.group(2).strip()))
    return pairs


def final_stage(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [index for index, (instruction, _) in enumerate(pairs) if instruction == "FROM"]
    assert starts, "no FROM"
    return pairs[starts[-1] :]
