"""ppo_continuous.py's math and its normalization, each against a second computation, and the wiring of `train`."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import tests.fake_envs  # noqa: F401  (registers the fake envs for in-process runs)
from tests import wiring_ppo_common as wiring
from tests.helpers import cli_flags, installed, load_script, make_args, run_cli, train_in
from tests.test_contract import assert_one_line_error
from tests.test_ppo import random_batch
from tests.wiring_ppo_common import naive_gae

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


@pytest.mark.grades("RunningMeanStd.__init__", "RunningMeanStd.update")
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


@pytest.mark.grades("normalize_obs")
def test_normalize_obs_against_the_formula_and_the_clip():
    rms = pc.RunningMeanStd(shape=(2,))
    rms.mean, rms.var = np.array([1.0, -2.0]), np.array([4.0, 0.01])
    obs = np.array([[3.0, -2.0], [1.0, 5.0]])
    out = pc.normalize_obs(obs, rms, clip=10.0)
    assert out.dtype == np.float32
    # (3-1)/2 = 1, 0 / 0.1 = 0, 0, 7/0.1 = 70 -> clipped to 10
    np.testing.assert_allclose(out, [[1.0, 0.0], [0.0, 10.0]], rtol=1e-6)
    np.testing.assert_array_equal(pc.normalize_obs(obs, None, 10.0), obs.astype(np.float32))


@pytest.mark.grades("RewardScaler.__init__", "RewardScaler.__call__")
def test_reward_scaler_divides_by_the_std_of_the_discounted_return():
    rng = np.random.default_rng(1)
    gamma, T, N = 0.9, 300, 3
    rewards = rng.normal(2.0, 1.0, size=(T, N))
    dones = rng.random((T, N)) < 0.05
    scaler = pc.RewardScaler(N, gamma)
    scaled = scaler(rewards, dones)  # one call per rollout; each step scaled by the std up to it
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


@pytest.mark.grades("gaussian_log_prob_entropy")
def test_gaussian_log_prob_and_entropy_match_torch_distributions():
    torch.manual_seed(0)
    mean, log_std, actions = torch.randn(5, 3, dtype=torch.float64), torch.randn(3), torch.randn(5, 3) * 3
    log_prob, entropy = pc.gaussian_log_prob_entropy(mean, log_std.double(), actions.double())
    dist = torch.distributions.Normal(mean, log_std.double().exp())
    torch.testing.assert_close(log_prob, dist.log_prob(actions.double()).sum(-1))
    torch.testing.assert_close(entropy, dist.entropy().sum(-1))


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.0), (1.0, 1.0)])
@pytest.mark.grades("gae")
def test_gae_matches_the_naive_double_loop(gamma, lam):
    batch = random_batch(seed=3)
    got = pc.gae(*[np.asarray(x, dtype=np.float64) for x in batch], gamma, lam)  # numpy (T, N), as in ppo.py
    np.testing.assert_allclose(got, naive_gae(*batch, gamma, lam), atol=1e-10)


@pytest.mark.grades("clipped_policy_loss")
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


@pytest.mark.grades("value_loss")
def test_value_loss_clipping_against_hand_values():
    """Catches a value clip around V_old of the wrong width, or min taken for max."""
    wiring.check_value_loss_against_hand_values(pc)


@pytest.mark.grades("train")
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


@pytest.mark.grades("train", "frozen_policy")
def test_statistics_are_saved_restored_exactly_and_frozen_at_eval(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trained, run_a = train_in(
        tmp_path / "a", pc, env_id="Pendulum-v1", seed=7, save_model=True, eval_episodes=2, **TINY
    )
    saved_a = torch.load(next(run_a.glob("*.pt")), weights_only=True)
    mean, var, count = (saved_a["obs_rms"][key] for key in ("mean", "var", "count"))
    assert count == pytest.approx(512 + 2, abs=1e-3)  # the reset observations and every step's
    assert (var != 1).all() and (mean != 0).all()
    evaluated, run_b = train_in(tmp_path / "b", pc, env_id="Pendulum-v1", seed=7, save_model=True, eval_episodes=2,
                                model_path=str(next(run_a.glob("*.pt"))), **dict(TINY, total_timesteps=0))  # fmt: skip
    saved_b = torch.load(next(run_b.glob("*.pt")), weights_only=True)
    for part in ("obs_rms", "reward_rms"):
        assert saved_a[part].keys() == saved_b[part].keys() == {"mean", "var", "count"}
        for key in saved_a[part]:  # exact: loaded, then not updated by eval
            assert torch.equal(saved_a[part][key], saved_b[part][key]), (part, key)
    assert evaluated["eval_mean_return"] == trained["eval_mean_return"]


@pytest.mark.grades("frozen_policy", "normalize_obs")
def test_eval_feeds_the_policy_observations_normalized_with_the_frozen_statistics():
    agent = pc.Agent(2, 1, 8)
    seen = []
    real_mode = agent.mode
    agent.mode = lambda x: seen.append(x.clone()) or real_mode(x)
    rms = pc.RunningMeanStd(shape=(2,))
    rms.mean, rms.var, rms.count = np.array([0.5, 0.0]), np.array([4.0, 0.25]), 1000.0
    args = make_args(pc, env_id="tests.fake_envs:ConstantRewardBox-v0", eval_episodes=2)
    run = SimpleNamespace(args=args, name="unused", device=torch.device("cpu"), discrete=False,
                          action_low=np.array([-1.0]), action_high=np.array([1.0]))  # fmt: skip
    returns = pc.evaluate(pc.frozen_policy(agent, rms, 10.0), run)
    assert returns == [5.0, 5.0] and len(seen) == 10
    # the env always shows [0.5, -0.5]: normalized (0.5-0.5)/2 = 0 and -0.5/0.5 = -1
    torch.testing.assert_close(torch.cat(seen), torch.tensor([[0.0, -1.0]] * 10), atol=1e-6, rtol=0)
    assert rms.count == 1000.0 and rms.mean.tolist() == [0.5, 0.0] and rms.var.tolist() == [4.0, 0.25]


@pytest.mark.grades("train")
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
    rms.mean, rms.var = saved["obs_rms"]["mean"].numpy(), saved["obs_rms"]["var"].numpy()
    x = torch.from_numpy(pc.normalize_obs(np.array([[0.5, -0.5]]), rms, 10.0))
    assert agent.value(x).item() == pytest.approx(1 / (1 - gamma), rel=0.1)


@pytest.mark.parametrize("norm_obs,scale_rewards", [(False, False), (True, False), (False, True)])
@pytest.mark.grades("train")
def test_normalizations_switch_off(norm_obs, scale_rewards, tmp_path):
    summary, run_dir = train_in(tmp_path, pc, env_id="Pendulum-v1", norm_obs=norm_obs, scale_rewards=scale_rewards,
                                save_model=True, eval_episodes=1, **TINY)  # fmt: skip
    saved = torch.load(next(run_dir.glob("*.pt")), weights_only=True)
    assert ("obs_rms" in saved) == norm_obs  # the tail drops a part that is None
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
    assert_one_line_error(no_stats, mentions="was saved with --norm-obs, this run has --no-norm-obs")


@pytest.mark.grades("train")
def test_nan_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="global_step="):
        train_in(tmp_path, pc, env_id="tests.fake_envs:NaNRewardBox-v0", total_timesteps=256, num_envs=2,
                 num_steps=64, num_minibatches=2, eval_episodes=1)  # fmt: skip


@pytest.mark.skipif(not installed("mujoco"), reason='needs pip install "gymnasium[mujoco]"')
def test_tiny_run_on_mujoco_hopper(tmp_path):
    summary, _ = train_in(tmp_path, pc, env_id="Hopper-v5", eval_episodes=1, **TINY)
    assert summary["global_step"] == 512 and np.isfinite(summary["eval_mean_return"])


# ## The wiring of `train`: what the loop feeds the math, on envs whose every transition is known
CLOCK_RUNS = {
    # observations normalized (with a clip that bites), rewards scaled, advantages normalized, step size annealed
    "normalized": {"clip_obs": 1.5},
    "switched-off": {"norm_obs": False, "scale_rewards": False, "norm_adv": False, "anneal_lr": False,
                     "clip_vloss": True},
}  # fmt: skip
UPHILL = {"num_envs": 8, "num_steps": 8, "total_timesteps": 128, "update_epochs": 4, "num_minibatches": 2,
          "learning_rate": 5e-3, "anneal_lr": False}  # fmt: skip


@pytest.fixture(scope="module", params=list(CLOCK_RUNS))
def clock(request, tmp_path_factory):
    """A run on the Clock env, spied on, and what its loop should have fed the math."""
    overrides = dict(wiring.CLOCK, env_id="tests.fake_envs:ClockBox-v0", **CLOCK_RUNS[request.param])
    rec = wiring.record_train(pc, tmp_path_factory.mktemp("clock"), **overrides)
    args, N = rec.args, rec.args.num_envs
    steps = args.num_steps * len(rec.rollouts)
    tr = wiring.clock_transitions(steps)
    obs, next_obs, rewards = tr["obs"], tr["next_obs"], tr["reward"]
    if args.norm_obs:
        # statistics of every observation the env returned so far (the reset ones too), this one included
        returned = np.vstack([tr["obs"][:1], tr["returned"]])

        def norm(x, seen):
            mean, var = wiring.running_moments(np.repeat(returned[:seen], N, axis=0))
            return np.clip((x - mean) / np.sqrt(var + 1e-8), -args.clip_obs, args.clip_obs)

        obs = np.array([norm(tr["obs"][t], t + 1) for t in range(steps)])
        next_obs = np.array([norm(tr["next_obs"][t], t + 2) for t in range(steps)])
    if args.scale_rewards:
        # $r_t$ over the std of the discounted returns $G$ of every step so far, this one's included
        G = wiring.discounted_returns(tr["reward"], tr["done"], args.gamma)
        var = np.array([wiring.running_moments(np.repeat(G[: t + 1], N))[1] for t in range(steps)])
        rewards = rewards / np.sqrt(var + 1e-8)
    return rec, wiring.expected_rollouts(rec, obs, next_obs, rewards)


@pytest.mark.grades("train", "normalize_obs")
def test_the_policy_acts_on_the_observation_normalized_with_the_statistics_up_to_it(clock):
    """Catches observations normalized with stale statistics, not normalized, not clipped, or not updated at the reset."""
    rec, expected = clock
    wiring.check_rollout_obs(rec, expected)
    if rec.args.norm_obs:
        assert any((np.abs(e["obs"]) == rec.args.clip_obs).any() for e in expected), "the clip never bit"


@pytest.mark.grades("train")
def test_gae_gets_scaled_rewards_both_masks_and_V_of_s_t_and_of_the_true_next_state(clock):
    """Catches the reset obs bootstrapped at a truncation, V(s_t)/V(s_t+1) or terminated/dones swapped, reward scaling multiplied or not reset at episode ends, gamma or lambda misplaced."""
    wiring.check_gae_inputs(*clock)


@pytest.mark.grades("train")
def test_each_minibatch_sample_keeps_its_own_action_old_log_prob_and_advantage(clock):
    """Catches negated or unnormalized advantages, clipped or misaligned actions, old log-probs not from the rollout's policy, epochs that skip samples."""
    wiring.check_minibatches(*clock)


@pytest.mark.grades("train")
def test_the_value_target_is_the_advantage_plus_the_old_value(clock):
    """Catches returns = A - V or A + V(s_t+1), V regressed at the wrong observation, the value clip switch inverted."""
    wiring.check_value_targets(*clock)


@pytest.mark.grades("train")
def test_the_ratio_is_one_on_the_first_minibatch_of_every_update(clock):
    """Catches log pi_old taken from another policy, action or observation than the one the loss uses."""
    wiring.check_ratio_starts_at_one(clock[0])


@pytest.mark.grades("train")
def test_each_step_follows_the_gradient_of_its_own_minibatch_loss(clock):
    """Catches a flipped sign or dropped factor on L^CLIP, c1 L^VF or c2 S, gradients not zeroed, the norm clip skipped."""
    wiring.check_gradients(clock[0])


@pytest.mark.grades("train")
def test_the_learning_rate_decays_linearly_from_alpha_per_update(clock):
    """Catches annealing off by one update, or ignoring --anneal-lr."""
    wiring.check_learning_rates(clock[0])


@pytest.mark.grades("train")
def test_progress_has_every_episode_of_every_env(clock):
    """Catches episode returns or lengths not reset, or episodes lost at a termination or truncation."""
    wiring.check_progress(clock[0])


@pytest.mark.grades("true_next_obs", "make_envs")
def test_true_next_obs_is_final_obs_where_an_episode_ended():
    """Catches the reset observation taken for s_t+1 at a termination or truncation."""
    wiring.check_true_next_obs(pc)


@pytest.mark.grades("clipped_policy_loss")
def test_the_clip_bounds_are_one_plus_and_minus_epsilon():
    """Catches the clip range moved, e.g. to 1 + 2 epsilon."""
    wiring.check_clip_bounds(pc)


@pytest.mark.grades("train")
def test_the_env_gets_the_clipped_action(tmp_path):
    """Catches the env stepped with the unclipped Gaussian sample."""
    wiring.check_env_gets_the_clipped_action(pc, tmp_path, num_envs=4, num_steps=16, total_timesteps=64)


@pytest.mark.grades("train")
def test_target_kl_ends_the_update_after_the_epoch_that_exceeds_it(tmp_path):
    """Catches the early stop inverted, ignored or taken inside the epoch."""
    overrides = dict(wiring.CLOCK, env_id="tests.fake_envs:ClockBox-v0", update_epochs=3, target_kl=1e-12)
    assert wiring.steps_per_update(pc, tmp_path, **overrides) == [2] * 3


@pytest.mark.grades("Agent.sample")
def test_sampling_follows_the_policy():
    """Catches actions drawn with the wrong mean or spread, or a mode that is not the density's peak."""
    wiring.check_gaussian_sampling(pc.Agent(3, 2, 8), obs_dim=3)


@pytest.mark.grades("Agent.__init__", "Agent.value", "Agent.log_prob_entropy")
def test_policy_and_value_use_their_own_networks():
    """Catches V computed by the actor, or log pi by the critic."""
    torch.manual_seed(0)
    agent = pc.Agent(3, 2, 8)
    obs = torch.randn(5, 3)
    wiring.check_policy_and_value_use_their_own_networks(agent, obs, agent.sample(obs).detach())


@pytest.mark.grades("train")
def test_a_few_updates_move_the_mean_toward_the_best_action(tmp_path):
    """Catches a sign error anywhere between the reward and the step: the mean would move away from 0.5."""
    for seed in (1, 2, 3):
        before, after = wiring.best_action_before_after(pc, tmp_path, env_id="tests.fake_envs:BanditBox-v0",
                                                        seed=seed, **UPHILL)  # fmt: skip
        assert after > before + 0.1, f"seed {seed}: {before} -> {after}"
