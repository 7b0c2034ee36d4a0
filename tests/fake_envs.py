"""Tiny environments for the tests, registered on import.

Scripts reach them through gymnasium's `module:EnvName` ids, e.g.
`--env-id tests.fake_envs:ConstantReward-v0` (with the repository root on PYTHONPATH),
so a subprocess run sees them without any test code inside the script.
"""

import gymnasium as gym
import numpy as np


class ConstantRewardEnv(gym.Env):
    """Reward 1 at every step, never terminates, one constant observation.

    Only the time limit ends an episode, so the true value is $1/(1-\\gamma)$ in every state;
    a learner that treats truncation as termination learns something far smaller.
    """

    def __init__(self, continuous: bool = False, render_mode: str | None = None):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        if continuous:
            self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        else:
            self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([0.5, -0.5], dtype=np.float32), {}

    def step(self, action):
        return np.array([0.5, -0.5], dtype=np.float32), 1.0, False, False, {}


class Float64ObservationEnv(ConstantRewardEnv):
    """Observations in float64, as MuJoCo gives them: the float32 networks must still take them."""

    def __init__(self, continuous: bool = False, render_mode: str | None = None):
        super().__init__(continuous=continuous, render_mode=render_mode)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float64)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return obs.astype(np.float64), info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs.astype(np.float64), reward, terminated, truncated, info


class MultiBinaryActionEnv(ConstantRewardEnv):
    """An action space none of the scripts supports."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        self.action_space = gym.spaces.MultiBinary(3)


class ImageObservationEnv(ConstantRewardEnv):
    """A 2-D observation, which the MLP policies do not take."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        self.observation_space = gym.spaces.Box(0, 255, shape=(8, 8), dtype=np.uint8)


gym.register("ConstantReward-v0", entry_point=ConstantRewardEnv, max_episode_steps=5)
gym.register("ConstantRewardBox-v0", entry_point=ConstantRewardEnv, kwargs={"continuous": True}, max_episode_steps=5)
gym.register("Float64Observation-v0", entry_point=Float64ObservationEnv, max_episode_steps=5)
gym.register(
    "Float64ObservationBox-v0", entry_point=Float64ObservationEnv, kwargs={"continuous": True}, max_episode_steps=5
)
gym.register("MultiBinaryAction-v0", entry_point=MultiBinaryActionEnv, max_episode_steps=5)
gym.register("ImageObservation-v0", entry_point=ImageObservationEnv, max_episode_steps=5)


class NaNRewardEnv(ConstantRewardEnv):
    """Reward turns NaN after 20 steps: a run must stop with an error, not train on garbage."""

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.t += 1
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, float("nan") if self.t > 20 else reward, terminated, truncated, info


gym.register("NaNReward-v0", entry_point=NaNRewardEnv, kwargs={"continuous": False}, max_episode_steps=50)
gym.register("NaNRewardBox-v0", entry_point=NaNRewardEnv, kwargs={"continuous": True}, max_episode_steps=50)


# ## Envs that make the wiring of a training loop visible
class ClockEnv(gym.Env):
    """The observation is the clock: $s_t = (t, k \\bmod 2)$, $t$ the step within episode $k$.

    Episodes alternate: even ones *terminate* after `TERMINATE_AT` steps, odd ones are
    *truncated* (time limit) after `TRUNCATE_AT` steps. The reward of the step from $s_t$ is
    $r_t = t + 1$, whatever the action. So the true last observation of an episode, $(3, 0)$ or
    $(5, 1)$, differs from the first one of the next, $(0, \\cdot)$; a loop that bootstraps from the
    reset observation, or that lets a truncation stop the bootstrap, or a termination not stop it,
    feeds the math numbers a test can tell apart. Each sub-env of a vector env counts its own $k$.
    """

    TERMINATE_AT = 3
    TRUNCATE_AT = 5

    def __init__(self, continuous: bool = False, render_mode: str | None = None):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0.0, 10.0, shape=(2,), dtype=np.float32)
        if continuous:
            self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        else:
            self.action_space = gym.spaces.Discrete(2)
        self.t, self.k = 0, -1

    def _obs(self):
        return np.array([self.t, self.k % 2], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.k = 0, self.k + 1
        return self._obs(), {}

    def step(self, action):
        reward = float(self.t + 1)
        self.t += 1
        even = self.k % 2 == 0
        terminated = even and self.t == self.TERMINATE_AT
        truncated = not even and self.t == self.TRUNCATE_AT
        return self._obs(), reward, terminated, truncated, {}


class BanditEnv(gym.Env):
    """One step per episode (it terminates), one constant observation, a reward set by the action.

    Discrete: 3 arms paying `ARM_REWARDS`, the best is arm `BEST_ARM`. Box: one action in
    $[-1, 1]$ paying $-(a - 0.5)^2$, best at `BEST_ACTION` = 0.5. A few updates of any
    policy-gradient method must move the policy toward the best action; any sign error in the
    loop moves it away.
    """

    ARM_REWARDS = (0.0, 0.5, 1.0)
    BEST_ARM = 2
    BEST_ACTION = 0.5

    def __init__(self, continuous: bool = False, render_mode: str | None = None):
        self.render_mode = render_mode
        self.continuous = continuous
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        if continuous:
            self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        else:
            self.action_space = gym.spaces.Discrete(len(self.ARM_REWARDS))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([1.0, -1.0], dtype=np.float32), {}

    def step(self, action):
        if self.continuous:
            reward = -float((np.asarray(action).reshape(-1)[0] - self.BEST_ACTION) ** 2)
        else:
            reward = self.ARM_REWARDS[int(action)]
        return np.array([1.0, -1.0], dtype=np.float32), reward, True, False, {}


gym.register("Clock-v0", entry_point=ClockEnv)
gym.register("ClockBox-v0", entry_point=ClockEnv, kwargs={"continuous": True})
gym.register("Bandit-v0", entry_point=BanditEnv)
gym.register("BanditBox-v0", entry_point=BanditEnv, kwargs={"continuous": True})


class NoRenderModeEnv(ConstantRewardEnv):
    """A user's own env as often written: its constructor takes no `render_mode`."""

    def __init__(self, continuous: bool = False):
        super().__init__(continuous=continuous)


gym.register("NoRenderMode-v0", entry_point=NoRenderModeEnv, max_episode_steps=5)
gym.register("NoRenderModeBox-v0", entry_point=NoRenderModeEnv, kwargs={"continuous": True}, max_episode_steps=5)
