"""The Locust scenario and the JMeter plan describe the same load, and both parse."""

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

HERE = Path(__file__).parent
MIX = {"GET /tasks": 35.0, "GET /tasks/<id>": 35.0, "POST /auth/login": 20.0, "POST /tasks": 10.0}


@pytest.fixture(scope="module")
def plan() -> ET.Element:
    return ET.parse(HERE / "video-tasks.jmx").getroot()


def _prop(element: ET.Element, name: str) -> str:
    found = element.find(f"*[@name='{name}']")
    assert found is not None, name
    return found.text or ""


def test_the_jmeter_plan_has_the_scenario_shape(plan):
    assert plan.tag == "jmeterTestPlan"
    groups = plan.findall(".//ThreadGroup")
    assert len(groups) == 1
    group = groups[0]
    assert _prop(group, "ThreadGroup.num_threads") == "50"
    assert _prop(group, "ThreadGroup.ramp_time") == "20"
    assert _prop(group, "ThreadGroup.scheduler") == "true"
    assert _prop(group, "ThreadGroup.duration") == "140"


def test_the_jmeter_mix_matches_the_locust_mix(plan):
    # Each throughput controller is followed by the hashTree holding its sampler.
    mix = {}
    children = list(plan.iter())
    for controller in plan.iter("ThroughputController"):
        percent = float(controller.find("FloatProperty/value").text)
        sampler = children[children.index(controller) + 1 :]
        name = next(el.get("testname") for el in sampler if el.tag == "HTTPSamplerProxy")
        mix[name] = percent
    assert mix == MIX
    assert sum(mix.values()) == 100.0


def test_every_jmeter_sampler_targets_a_real_route(plan):
    for sampler in plan.iter("HTTPSamplerProxy"):
        path = _prop(sampler, "HTTPSampler.path")
        method = _prop(sampler, "HTTPSampler.method")
        assert re.fullmatch(r"/auth/(signup|login)|/tasks(\?max=20&order=1)?|/tasks/\$\{task_id\}", path), (
            path
        )
        assert sampler.get("testname").startswith(method + " ")


def test_the_locust_weights_are_the_documented_mix():
    tree = ast.parse((HERE / "locustfile.py").read_text())
    weights = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "task":
                    weights[node.name] = decorator.args[0].value
    assert weights == {"login": 20, "list_tasks": 35, "get_task": 35, "submit": 10}
    names = set(re.findall(r'name="([A-Z]+ /[^"]+)"', (HERE / "locustfile.py").read_text()))
    assert set(MIX) <= names
