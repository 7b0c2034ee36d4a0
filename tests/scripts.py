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
    ScriptSpec(
        name="trpo.py",
        tiny={"total_timesteps": 512, "num_envs": 2, "num_steps": 128, "critic_epochs": 2, "eval_episodes": 2},
        envs=["CartPole-v1", "Pendulum-v1"],
        size_field="num_envs",
        small_budget=200,
    ),
    ScriptSpec(
        name="reinforce.py",
        tiny={"total_timesteps": 1000, "num_envs": 2, "hidden_size": 8, "eval_episodes": 2},
        envs=["CartPole-v1", "Pendulum-v1"],
        size_field="num_envs",
        small_budget=1,
    ),
    ScriptSpec(
        name="reinforce_baseline.py",
        tiny={"total_timesteps": 1000, "num_envs": 2, "hidden_size": 8, "vf_epochs": 2, "eval_episodes": 2},
        envs=["CartPole-v1", "Pendulum-v1"],
        size_field="num_envs",
        small_budget=1,
    ),
    ScriptSpec(
        name="finite_diff.py",
        tiny={"total_timesteps": 3000, "num_envs": 2, "eval_episodes": 2},
        envs=["CartPole-v1", "Pendulum-v1"],
        size_field="num_envs",
        small_budget=10,
    ),
    ScriptSpec(
        name="ddpg.py",
        tiny={"total_timesteps": 400, "learning_starts": 100, "batch_size": 32, "eval_episodes": 2},
        envs=["Pendulum-v1"],
        size_field="batch_size",
        small_budget=100,  # total_timesteps <= learning_starts: no gradient step would run
        unsupported_env="CartPole-v1",
    ),
    ScriptSpec(
        name="ppo_continuous.py",
        tiny={"total_timesteps": 512, "num_envs": 2, "num_steps": 128, "update_epochs": 2, "eval_episodes": 2},
        envs=["Pendulum-v1"],
        size_field="num_steps",
        small_budget=200,
        unsupported_env="CartPole-v1",
    ),
    ScriptSpec(
        name="a2c.py",
        tiny={"total_timesteps": 500, "num_envs": 2, "num_steps": 5, "eval_episodes": 2},
        envs=["CartPole-v1", "Pendulum-v1"],
        size_field="num_steps",
        small_budget=5,
    ),
    ScriptSpec(
        name="actor_critic.py",
        tiny={"total_timesteps": 600, "num_envs": 2, "eval_episodes": 2},
        envs=["CartPole-v1", "Pendulum-v1"],
        size_field="num_envs",
        small_budget=1,
    ),
]

IDS = [s.name for s in SCRIPTS]
