"""ddpg.py's math, each piece against a second computation of the same thing."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.helpers import load_script, make_args, train_in

ddpg = load_script("ddpg.py")
LOW, HIGH = np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32)


def test_polyak_update_matches_the_formula():
    torch.manual_seed(0)
    online, target = ddpg.Critic(3, 2, 8), ddpg.Critic(3, 2, 8)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ddpg.polyak_update(target, online, 0.1)
    for name, value in target.state_dict().items():
        expected = 0.1 * online.state_dict()[name] + 0.9 * before[name]
        torch.testing.assert_close(value, expected)
    ddpg.polyak_update(target, online, 1.0)  # tau = 1: a hard copy
    for name, value in target.state_dict().items():
        torch.testing.assert_close(value, online.state_dict()[name], rtol=0, atol=0)


def test_td_target_bootstraps_on_truncation_and_not_on_termination():
    # Three transitions: mid-episode, terminated, truncated (stored as terminated = 0).
    rewards, terminated = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 0.0])
    next_q = torch.tensor([10.0, 20.0, 30.0])
    y = ddpg.td_target(rewards, terminated, next_q, 0.9)
    assert y.tolist() == pytest.approx([1.0 + 0.9 * 10.0, 2.0, 3.0 + 0.9 * 30.0])


class CounterEnv(gym.Env):
    """Observation = steps taken in the episode; never terminates, so only time limits end it."""

    observation_space = gym.spaces.Box(0.0, 100.0, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], dtype=np.float32), 1.0, False, False, {}


def test_stored_next_obs_is_the_true_final_one():
    thunks = [lambda k=k: gym.wrappers.TimeLimit(CounterEnv(), max_episode_steps=3 + k) for k in range(2)]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.reset(seed=0)
    seen = []
    for _ in range(4):
        next_obs, _, _, truncated, info = envs.step(np.zeros((2, 1), dtype=np.float32))
        seen.append((ddpg.true_next_obs(next_obs, info)[:, 0].tolist(), truncated.tolist(), next_obs[:, 0].tolist()))
    # Env 0 is truncated at its 3rd step, env 1 at its 4th: s_{t+1} is 3 and 4, not the reset's 0.
    assert seen[2] == ([3.0, 3.0], [True, False], [0.0, 3.0])
    assert seen[3] == ([1.0, 4.0], [False, True], [1.0, 0.0])
    envs.close()


def fill(buffer, markers, num_envs=1):
    """Add transitions whose every field holds its marker value, `num_envs` at a time."""
    for start in range(0, len(markers), num_envs):
        m = np.asarray(markers[start : start + num_envs], dtype=np.float64)
        col = m[:, None]
        buffer.add(np.repeat(col, 3, 1), np.repeat(col, 2, 1), m, np.repeat(-col, 3, 1), m % 2)


def test_replay_buffer_wraps_around():
    rb = ddpg.ReplayBuffer(5, 3, 2, torch.device("cpu"))
    fill(rb, range(7))
    assert (rb.pos, rb.size) == (2, 5)
    assert rb.rewards[:, 0].tolist() == [5, 6, 2, 3, 4]
    assert rb.next_obs[:, 0].tolist() == [-5, -6, -2, -3, -4] and rb.terminated[:, 0].tolist() == [1, 0, 0, 1, 0]
    rb = ddpg.ReplayBuffer(4, 3, 2, torch.device("cpu"))
    fill(rb, range(6), num_envs=3)  # a vector step that crosses the end of the ring
    assert (rb.pos, rb.size) == (2, 4) and rb.actions[:, 1].tolist() == [4, 5, 2, 3]


def test_replay_buffer_samples_only_filled_rows_with_fields_aligned():
    rb = ddpg.ReplayBuffer(100, 3, 2, torch.device("cpu"))
    fill(rb, [1, 2, 3])
    torch.manual_seed(0)
    obs, actions, rewards, next_obs, terminated = rb.sample(600)
    assert set(rewards.tolist()) == {1.0, 2.0, 3.0}
    shapes = [(600, 3), (600, 2), (600,), (600, 3), (600,)]
    for x, shape in zip([obs, actions, rewards, next_obs, terminated], shapes):
        assert x.dtype == torch.float32 and tuple(x.shape) == shape
    torch.testing.assert_close(obs, rewards[:, None].expand(600, 3))
    torch.testing.assert_close(actions, rewards[:, None].expand(600, 2))
    torch.testing.assert_close(next_obs, -obs)
    torch.testing.assert_close(terminated, rewards % 2)


def test_actor_gradient_is_grad_a_q_times_grad_theta_pi():
    torch.manual_seed(1)
    actor, critic = ddpg.Actor(3, 2, 4, LOW, HIGH), ddpg.Critic(3, 2, 4)
    obs = torch.randn(5, 3)
    params = list(actor.parameters())
    auto = torch.autograd.grad(ddpg.actor_loss(actor, critic, obs), params)
    # By hand: for each state, grad_a Q at a = pi(s) (a leaf, so no path into theta), then the
    # chain rule with the Jacobian d pi_j / d theta, one output dimension j at a time.
    manual = [torch.zeros_like(p) for p in params]
    for s in obs:
        a = actor(s).detach().requires_grad_(True)
        (grad_a,) = torch.autograd.grad(critic(s, a), a)
        for j in range(2):
            for m, g in zip(manual, torch.autograd.grad(actor(s)[j], params)):
                m -= grad_a[j] * g / len(obs)  # the loss is -mean Q
    for a_grad, m_grad in zip(auto, manual):
        torch.testing.assert_close(a_grad, m_grad)


def test_actor_stays_inside_the_box():
    torch.manual_seed(2)
    actor = ddpg.Actor(3, 2, 8, LOW, HIGH)
    with torch.no_grad():
        actor.net[-1].weight.mul_(1000.0)  # saturate the tanh
        a = actor(torch.randn(1000, 3))
    assert (a >= torch.from_numpy(LOW)).all() and (a <= torch.from_numpy(HIGH)).all()
    assert a[:, 1].min() < 0.01 and a[:, 1].max() > 0.99


def test_exploration_noise_is_independent_per_dimension_and_scaled():
    rng = np.random.default_rng(0)
    std = np.array([0.1, 2.0], dtype=np.float32)
    a = ddpg.explore(np.zeros((20_000, 2), dtype=np.float32), std, -100.0, 100.0, rng)
    np.testing.assert_allclose(a.std(0), std, rtol=0.03)
    assert abs(np.corrcoef(a.T)[0, 1]) < 0.03  # one draw shared by all dimensions would give 1
    clipped = ddpg.explore(np.zeros((1000, 2), dtype=np.float32), std, LOW, HIGH, rng)
    assert (clipped >= LOW).all() and (clipped <= HIGH).all() and clipped.dtype == np.float32


def test_evaluation_adds_no_noise():
    torch.manual_seed(3)
    env = gym.make("Pendulum-v1")
    actor = ddpg.Actor(3, 1, 8, env.action_space.low, env.action_space.high)
    args = make_args(ddpg, env_id="Pendulum-v1", eval_episodes=2, seed=7)
    first = ddpg.evaluate(actor, args, "unused", torch.device("cpu"))
    torch.manual_seed(99), np.random.seed(99)
    assert ddpg.evaluate(actor, args, "unused", torch.device("cpu")) == first
    # The same episodes, acting with pi(s) itself.
    for episode, expected in enumerate(first):
        obs, _ = env.reset(seed=7 + 10_000 + episode)
        total, done = 0.0, False
        while not done:
            with torch.no_grad():
                action = actor(torch.as_tensor(obs)).numpy()
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        assert total == pytest.approx(expected, abs=1e-9)


def test_q_learns_the_infinite_horizon_value_through_time_limits(tmp_path):
    # Reward 1 forever, cut every 5 steps by a time limit: Q = 1 / (1 - gamma) = 2 for gamma = 0.5.
    # Treating truncation as termination would give 1 / (1 - 0.5 * 4/5) = 1.67 instead.
    summary, run_dir = train_in(
        tmp_path, ddpg, env_id="tests.fake_envs:ConstantRewardBox-v0", gamma=0.5, tau=0.1, total_timesteps=800,
        learning_starts=50, batch_size=32, learning_rate=3e-3, eval_episodes=1, save_model=True, seed=0,
    )  # fmt: skip
    saved = torch.load(next(run_dir.glob("*.pt")), weights_only=True)
    critic = ddpg.Critic(2, 1, 64)
    critic.load_state_dict(saved["critic"])
    with torch.no_grad():
        q = critic(torch.tensor([[0.5, -0.5]]).expand(21, 2), torch.linspace(-1, 1, 21)[:, None])
    np.testing.assert_allclose(q.numpy(), 2.0, atol=0.08)


def test_nan_reward_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="global_step=\\d+"):
        train_in(tmp_path, ddpg, env_id="tests.fake_envs:NaNRewardBox-v0", total_timesteps=200, learning_starts=10)


def test_model_of_another_env_is_refused(tmp_path):
    _, run_dir = train_in(tmp_path, ddpg, env_id="tests.fake_envs:ConstantRewardBox-v0", total_timesteps=60,
                          learning_starts=50, eval_episodes=1, save_model=True)  # fmt: skip
    model = str(next(run_dir.glob("*.pt")))
    with pytest.raises(ddpg.ArgError, match="model-path"):
        train_in(tmp_path, ddpg, env_id="Pendulum-v1", total_timesteps=0, model_path=model)
