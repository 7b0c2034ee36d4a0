"""The W&B sweep files: the command line an agent builds from them parses through each script's CLI."""

import math
from pathlib import Path

import pytest
import tyro
import yaml

from tests.helpers import ROOT, load_script
from tests.scripts import SCRIPTS

SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))


def agent_command_lines(config: dict) -> list[list[str]]:
    """The `--name=value` arguments a W&B agent passes (${args_no_boolean_flags}), for the
    smallest, the largest and each listed value of every parameter."""
    params = config["parameters"]
    lines = []
    for pick in ("low", "high", *range(max(len(p.get("values", [])) for p in params.values()))):
        args = []
        for name, p in params.items():
            if "value" in p:
                value = p["value"]
            elif "values" in p:
                value = p["values"][pick if isinstance(pick, int) and pick < len(p["values"]) else 0]
            else:
                value = p["min"] if pick == "low" else p["max"]
            args.append(f"--{name}={value}")
        lines.append(args)
    return lines


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_sweep_command_lines_parse_through_the_script(path: Path):
    config = yaml.safe_load(path.read_text())
    script = ROOT / config["program"]
    assert script.is_file(), f"{path.name}: no program {config['program']}"
    assert "${args_no_boolean_flags}" in config["command"] and "--track" in config["command"]
    module = load_script(config["program"])
    assert repr(config["metric"]["name"]) in script.read_text().replace('"', "'"), "the metric is never logged"
    for args in agent_command_lines(config):
        parsed = tyro.cli(module.Args, args=args)
        for arg in args:
            name, value = arg[2:].split("=", 1)
            got = getattr(parsed, name.replace("-", "_"))
            assert math.isclose(float(got), float(value)) if isinstance(got, float) else str(got) == value, arg


def test_every_script_has_a_sweep_that_searches_its_method():
    """One sweep per script, each searching at least two of the method's own fields (not only the seed), none of
    them a boolean: ${args_no_boolean_flags} would drop a false one and the trial would run the default."""
    assert {p.name for p in SWEEPS} == {spec.name.replace(".py", ".yaml") for spec in SCRIPTS}
    for path in SWEEPS:
        params = yaml.safe_load(path.read_text())["parameters"]
        searched = {name for name, p in params.items() if "value" not in p} - {"seed"}
        assert len(searched) >= 2, (path.name, searched)
        values = [v for p in params.values() for v in p.get("values", [p.get("value")])]
        assert not any(isinstance(v, bool) for v in values), path.name
