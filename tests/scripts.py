"""The scripts under the contract tests, and how to run each one tiny.

A new script joins every contract test by adding its `ScriptSpec` to `SCRIPTS`.
"""

from dataclasses import dataclass, field


@dataclass
class ScriptSpec:
    name: str
    """file name at the repository root"""
    tiny: dict
    """Args overrides for a run of a second or two, on `envs[0]`"""
    envs: list[str]
    """benchmark envs the script supports; the tiny run is repeated on each"""
    size_field: str
    """a size field that must be positive"""
    small_budget: int
    """a total_timesteps too small for one update"""
    unsupported_env: str = "tests.fake_envs:MultiBinaryAction-v0"
    """an env whose action space the script rejects"""
    extra: dict = field(default_factory=dict)


SCRIPTS = [
    ScriptSpec(
        name="ppo.py",
        tiny={"total_timesteps": 512, "num_envs": 2, "num_steps": 128, "update_epochs": 2, "eval_episodes": 2},
        envs=["CartPole-v1", "Pendulum-v1"],
        size_field="num_envs",
        small_budget=200,
    ),
]

IDS = [s.name for s in SCRIPTS]
