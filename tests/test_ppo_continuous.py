"""ppo_continuous.py's math and its normalization, each against a second computation."""

import importlib.util

import gymnasium as gym
import numpy as np
import pytest
import torch

import tests.fake_envs  # noqa: F401  (registers the fake envs for in-process runs)
from tests.helpers import cli_flags, load_script, make_args, run_cli, train_in
from tests.test_contract import assert_one_line_error
from tests.test_ppo import naive_gae, random_batch

pc = load_script("ppo_continuous.py")
TINY = {"total_timesteps": 512, "num_envs": 2, "num_steps": 128, "update_epochs": 2}


class RecordActionsEnv(gym.Env):
    """Box(-1, 1) actions, reward 0; keeps every action it is given in `RecordActionsEnv.seen`."""

    seen: list = []

    def __init__(self, render_mode=None):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, size=2).astype(np.float32), {}

    def step(self, action):
        RecordActionsEnv.seen.append(np.array(action, dtype=np.float32))
        return self.np_random.uniform(-1, 1, size=2).astype(np.float32), 0.0, False, False, {}


gym.register("PPOContinuousRecordActions-v0", entry_point=RecordActionsEnv, max_episode_steps=16)


def test_running_mean_std_matches_numpy_over_a_stream_of_batches():
    rng = np.random.default_rng(0)
    stream = [rng.normal([3.0, -1.0, 0.0], [2.0, 0.1, 5.0], size=(n, 3)) for n in (1, 8, 8, 100, 3, 1)]
    rms = pc.RunningMeanStd(shape=(3,))
    prior = 1e-4  # the statistics start as mean 0, variance 1, with weight 1e-4
    for k, batch in enumerate(stream, 1):
        rms.update(batch)
        seen = np.concatenate(stream[:k])
        # pooled moments of all samples seen plus the prior, in one pass
        mean = seen.sum(0) / (len(seen) + prior)
        var = (prior * (1.0 + mean**2) + ((seen - mean) ** 2).sum(0)) / (len(seen) + prior)
        np.testing.assert_allclose(rms.mean, mean, rtol=1e-10)
        np.testing.assert_allclose(rms.var, var, rtol=1e-10)
    np.testing.assert_allclose(rms.mean, seen.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.var, seen.var(0), rtol=1e-3)
    assert rms.count == pytest.approx(121, abs=1e-3)


def test_normalize_obs_against_the_formula_and_the_clip():
    rms = pc.RunningMeanStd(shape=(2,))
    rms.mean, rms.var = np.array([1.0, -2.0]), np.array([4.0, 0.01])
    obs = np.array([[3.0, -2.0], [1.0, 5.0]])
    out = pc.normalize_obs(obs, rms, clip=10.0)
    assert out.dtype == np.float32
    # (3-1)/2 = 1, 0 / 0.1 = 0, 0, 7/0.1 = 70 -> clipped to 10
    np.testing.assert_allclose(out, [[1.0, 0.0], [0.0, 10.0]], rtol=1e-6)
    np.testing.assert_array_equal(pc.normalize_obs(obs, None, 10.0), obs.astype(np.float32))


def test_reward_scaler_divides_by_the_std_of_the_discounted_return():
    rng = np.random.default_rng(1)
    gamma, T, N = 0.9, 300, 3
    rewards = rng.normal(2.0, 1.0, size=(T, N))
    dones = rng.random((T, N)) < 0.05
    scaler = pc.RewardScaler(N, gamma)
    scaled = np.array([scaler(rewards[t], dones[t]) for t in range(T)])
    # Naive: $G_t = \gamma G_{t-1} + r_t$ per env, restarted after each end, every value kept.
    all_g, g_seen = [], []
    for t in range(T):
        for n in range(N):
            prev = 0.0 if t == 0 or dones[t - 1, n] else g_seen[-N]
            g_seen.append(gamma * prev + rewards[t, n])
        all_g.append(np.array(g_seen))
    for t in (10, 100, T - 1):
        # (the running statistics start from a prior of weight 1e-4, invisible at this tolerance)
        np.testing.assert_allclose(scaled[t], rewards[t] / np.sqrt(all_g[t].var() + 1e-8), rtol=1e-3)


def test_gaussian_log_prob_and_entropy_match_torch_distributions():
    torch.manual_seed(0)
    mean, log_std, actions = torch.randn(5, 3, dtype=torch.float64), torch.randn(3), torch.randn(5, 3) * 3
    log_prob, entropy = pc.gaussian_log_prob_entropy(mean, log_std.double(), actions.double())
    dist = torch.distributions.Normal(mean, log_std.double().exp())
    torch.testing.assert_close(log_prob, dist.log_prob(actions.double()).sum(-1))
    torch.testing.assert_close(entropy, dist.entropy().sum(-1))


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.0), (1.0, 1.0)])
def test_gae_matches_the_naive_double_loop(gamma, lam):
    batch = random_batch(seed=3)
    got = pc.gae(*[torch.tensor(x, dtype=torch.float64) for x in batch], gamma, lam).numpy()
    np.testing.assert_allclose(got, naive_gae(*batch, gamma, lam), atol=1e-10)


def test_clipped_policy_loss_against_the_piecewise_definition():
    rng = np.random.default_rng(2)
    new_lp, old_lp, adv = rng.normal(size=40) * 0.3, rng.normal(size=40) * 0.3, rng.normal(size=40)
    eps = 0.2
    # $\min(rA, \text{clip}(r)A)$ is $\min(r, 1+\epsilon)A$ for $A > 0$ and $\max(r, 1-\epsilon)A$ for $A < 0$
    r = np.exp(new_lp - old_lp)
    piecewise = np.where(adv > 0, np.minimum(r, 1 + eps) * adv, np.maximum(r, 1 - eps) * adv)
    loss, approx_kl, clip_frac = pc.clipped_policy_loss(*map(torch.tensor, (new_lp, old_lp, adv)), eps)
    assert loss.item() == pytest.approx(-piecewise.mean())
    assert approx_kl.item() == pytest.approx(np.mean(r - 1 - np.log(r)))
    assert clip_frac.item() == pytest.approx(np.mean(np.abs(r - 1) > eps))


def test_the_ratio_uses_the_unclipped_action_the_env_gets_the_clipped_one(tmp_path, monkeypatch):
    calls, losses = [], []
    real_log_prob, real_loss = pc.gaussian_log_prob_entropy, pc.clipped_policy_loss

    def spy_log_prob(mean, log_std, actions):
        calls.append((mean.detach().clone(), log_std.detach().clone(), actions.detach().clone()))
        return real_log_prob(mean, log_std, actions)

    def spy_loss(new_log_prob, old_log_prob, advantages, clip_coef):
        losses.append((new_log_prob.detach().clone(), old_log_prob.clone()))
        return real_loss(new_log_prob, old_log_prob, advantages, clip_coef)

    monkeypatch.setattr(pc, "gaussian_log_prob_entropy", spy_log_prob)
    monkeypatch.setattr(pc, "clipped_policy_loss", spy_loss)
    RecordActionsEnv.seen.clear()
    # sigma = e: most samples fall outside [-1, 1]
    train_in(tmp_path, pc, env_id="PPOContinuousRecordActions-v0", total_timesteps=64, num_envs=1, num_steps=64,
             num_minibatches=2, update_epochs=1, init_log_std=1.0, eval_episodes=0)  # fmt: skip
    mean, log_std, stored = calls[0]  # the first call: $\log\pi_{\theta_{old}}$ of the whole rollout
    stored = stored.reshape(64, 1)
    env_got = torch.tensor(np.array(RecordActionsEnv.seen[:64]))
    assert (stored.abs() > 1).float().mean() > 0.3
    torch.testing.assert_close(env_got, stored.clamp(-1, 1), rtol=0, atol=0)
    dist = torch.distributions.Normal(mean.reshape(64, 1), log_std.exp())
    lp_unclipped, lp_clipped = dist.log_prob(stored).squeeze(-1), dist.log_prob(env_got).squeeze(-1)
    new_log_prob, old_log_prob = losses[0]
    # every $\log\pi_{\theta_{old}}$ handed to the ratio is that of an unclipped sample ...
    match = torch.isclose(old_log_prob[:, None], lp_unclipped[None, :], rtol=1e-5, atol=1e-5)
    assert match.any(1).all()
    # ... and not that of the clipped action, wherever clipping changed it
    changed = (stored.abs() > 1).squeeze(-1)
    assert not torch.isclose(lp_clipped[changed], lp_unclipped[changed], rtol=1e-3).any()
    torch.testing.assert_close(new_log_prob, old_log_prob)  # first minibatch: $r_t = 1$


def test_statistics_are_saved_restored_exactly_and_frozen_at_eval(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trained, run_a = train_in(
        tmp_path / "a", pc, env_id="Pendulum-v1", seed=7, save_model=True, eval_episodes=2, **TINY
    )
    saved_a = torch.load(next(run_a.glob("*.pt")), weights_only=True)
    mean, var, count = saved_a["obs_rms"]
    assert count == pytest.approx(512 + 2, abs=1e-3)  # the reset observations and every step's
    assert (var != 1).all() and (mean != 0).all()
    evaluated, run_b = train_in(tmp_path / "b", pc, env_id="Pendulum-v1", seed=7, save_model=True, eval_episodes=2,
                                model_path=str(next(run_a.glob("*.pt"))), **dict(TINY, total_timesteps=0))  # fmt: skip
    saved_b = torch.load(next(run_b.glob("*.pt")), weights_only=True)
    for a, b in zip(saved_a["obs_rms"] + saved_a["reward_rms"], saved_b["obs_rms"] + saved_b["reward_rms"]):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))  # exact: loaded, then not updated by eval
    assert evaluated["eval_mean_return"] == trained["eval_mean_return"]


def test_eval_feeds_the_policy_observations_normalized_with_the_frozen_statistics():
    agent = pc.Agent(2, 1, 8)
    seen = []
    real_mode = agent.mode
    agent.mode = lambda x: seen.append(x.clone()) or real_mode(x)
    rms = pc.RunningMeanStd(shape=(2,))
    rms.mean, rms.var, rms.count = np.array([0.5, 0.0]), np.array([4.0, 0.25]), 1000.0
    args = make_args(pc, env_id="tests.fake_envs:ConstantRewardBox-v0", eval_episodes=2)
    returns = pc.evaluate(agent, rms, args, "unused", torch.device("cpu"))
    assert returns == [5.0, 5.0] and len(seen) == 10
    # the env always shows [0.5, -0.5]: normalized (0.5-0.5)/2 = 0 and -0.5/0.5 = -1
    torch.testing.assert_close(torch.cat(seen), torch.tensor([[0.0, -1.0]] * 10), atol=1e-6, rtol=0)
    assert rms.count == 1000.0 and rms.mean.tolist() == [0.5, 0.0] and rms.var.tolist() == [4.0, 0.25]


def test_truncation_bootstraps_from_the_final_observation(tmp_path):
    """Reward 1 forever, cut at 5 steps by a time limit: V must approach 1/(1-gamma) = 10, not ~2.6."""
    gamma = 0.9
    _, run_dir = train_in(
        tmp_path, pc, env_id="tests.fake_envs:ConstantRewardBox-v0", total_timesteps=6_000, num_envs=2,
        num_steps=50, num_minibatches=4, gamma=gamma, scale_rewards=False, learning_rate=3e-3, anneal_lr=False,
        save_model=True, eval_episodes=1,
    )  # fmt: skip
    saved = torch.load(next(run_dir.glob("*.pt")), weights_only=True)
    agent = pc.Agent(2, 1, 64)
    agent.load_state_dict(saved["agent"])
    rms = pc.RunningMeanStd(shape=(2,))
    rms.load(saved["obs_rms"])
    x = torch.from_numpy(pc.normalize_obs(np.array([[0.5, -0.5]]), rms, 10.0))
    assert agent.value(x).item() == pytest.approx(1 / (1 - gamma), rel=0.1)


@pytest.mark.parametrize("norm_obs,scale_rewards", [(False, False), (True, False), (False, True)])
def test_normalizations_switch_off(norm_obs, scale_rewards, tmp_path):
    summary, run_dir = train_in(tmp_path, pc, env_id="Pendulum-v1", norm_obs=norm_obs, scale_rewards=scale_rewards,
                                save_model=True, eval_episodes=1, **TINY)  # fmt: skip
    saved = torch.load(next(run_dir.glob("*.pt")), weights_only=True)
    assert (saved["obs_rms"] is None) == (not norm_obs)
    assert np.isfinite(summary["eval_mean_return"])


def test_a_model_that_does_not_fit_is_one_error_line(tmp_path):
    _, run_dir = train_in(tmp_path, pc, env_id="Pendulum-v1", save_model=True, eval_episodes=1, **TINY)
    model = str(next(run_dir.glob("*.pt")))
    evaluate_only = dict(TINY, total_timesteps=0, model_path=model)
    other_env = run_cli(
        "ppo_continuous.py", *cli_flags(env_id="MountainCarContinuous-v0", **evaluate_only), cwd=tmp_path
    )
    assert_one_line_error(other_env, mentions="model-path")
    no_stats = run_cli(
        "ppo_continuous.py", *cli_flags(env_id="Pendulum-v1", norm_obs=False, **evaluate_only), cwd=tmp_path
    )
    assert_one_line_error(no_stats, mentions="norm-obs")


def test_nan_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="global_step="):
        train_in(tmp_path, pc, env_id="tests.fake_envs:NaNRewardBox-v0", total_timesteps=256, num_envs=2,
                 num_steps=64, num_minibatches=2, eval_episodes=1)  # fmt: skip


@pytest.mark.skipif(importlib.util.find_spec("mujoco") is None, reason='needs pip install "gymnasium[mujoco]"')
def test_tiny_run_on_mujoco_hopper(tmp_path):
    summary, _ = train_in(tmp_path, pc, env_id="Hopper-v5", eval_episodes=1, **TINY)
    assert summary["global_step"] == 512 and np.isfinite(summary["eval_mean_return"])
