"""ppo.py's math, each piece against a second computation of the same thing, and the wiring of its `train`."""

import numpy as np
import pytest
import torch

from tests import wiring_ppo_common as wiring
from tests.helpers import installed, load_script, train_in
from tests.wiring_ppo_common import naive_gae

ppo = load_script("ppo.py")


def random_batch(T=12, N=3, seed=0):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, N))
    values = rng.normal(size=(T, N))
    terminated = (rng.random((T, N)) < 0.15).astype(float)
    truncated = ((rng.random((T, N)) < 0.15) & (terminated == 0)).astype(float)
    dones = np.maximum(terminated, truncated)
    # V(s_{t+1}): the next row's value inside an episode, V(final obs) where it ended.
    next_values = np.vstack([values[1:], rng.normal(size=(1, N))])
    ended = dones.astype(bool)
    next_values[ended] = rng.normal(size=ended.sum())
    assert terminated.any() and truncated.any()
    return rewards, values, next_values, terminated, dones


def run_gae(batch, gamma, lam):
    return ppo.gae(*batch, gamma, lam)


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.5), (1.0, 1.0)])
@pytest.mark.grades("gae")
def test_gae_matches_naive_double_loop(gamma, lam):
    batch = random_batch()
    np.testing.assert_allclose(run_gae(batch, gamma, lam), naive_gae(*batch, gamma, lam), atol=1e-10)


@pytest.mark.grades("gae")
def test_gae_lambda_0_is_the_td_error():
    rewards, values, next_values, terminated, dones = batch = random_batch(seed=1)
    delta = rewards + 0.97 * next_values * (1 - terminated) - values
    np.testing.assert_allclose(run_gae(batch, 0.97, 0.0), delta, atol=1e-12)


@pytest.mark.grades("gae")
def test_gae_lambda_1_is_discounted_return_minus_value():
    rewards, values, next_values, terminated, dones = batch = random_batch(seed=2)
    gamma, T, N = 0.97, *rewards.shape
    expected = np.zeros((T, N))
    for n in range(N):
        G = 0.0  # return to the end of the episode (or rollout), bootstrapped unless terminated
        for t in reversed(range(T)):
            if dones[t, n] or t == T - 1:
                G = 0.0 if terminated[t, n] else next_values[t, n]
            G = rewards[t, n] + gamma * G
            expected[t, n] = G - values[t, n]
    np.testing.assert_allclose(run_gae(batch, gamma, 1.0), expected, atol=1e-10)


@pytest.mark.grades("gae")
def test_gae_truncation_bootstraps_and_termination_does_not():
    # One env, two steps: step 0 truncated with V(final)=5, step 1 terminated with V(final)=7.
    r, v = np.array([[1.0], [1.0]]), np.array([[0.0], [0.0]])
    next_v, term, done = np.array([[5.0], [7.0]]), np.array([[0.0], [1.0]]), np.array([[1.0], [1.0]])
    adv = ppo.gae(r, v, next_v, term, done, 0.5, 0.9)
    assert adv.flatten().tolist() == [1.0 + 0.5 * 5.0, 1.0]


@pytest.mark.grades("clipped_policy_loss")
def test_ratio_is_one_on_the_first_minibatch():
    torch.manual_seed(0)
    for discrete in (True, False):
        agent = ppo.Agent(4, 2, discrete, 16)
        obs = torch.randn(64, 4)
        with torch.no_grad():
            actions = agent.sample(obs)
            old_log_prob, _ = agent.log_prob_entropy(obs, actions)  # whole batch, as in train
        mb = torch.randperm(64)[:16]
        new_log_prob, _ = agent.log_prob_entropy(obs[mb], actions[mb])
        adv = torch.randn(16)
        loss, approx_kl, clip_frac = ppo.clipped_policy_loss(new_log_prob, old_log_prob[mb], adv, 0.2)
        torch.testing.assert_close(new_log_prob.exp() / old_log_prob[mb].exp(), torch.ones(16))
        assert abs(approx_kl.item()) < 1e-6 and clip_frac.item() == 0.0
        assert loss.item() == pytest.approx(-adv.mean().item(), abs=1e-5)


@pytest.mark.grades("clipped_policy_loss")
def test_clipped_samples_give_zero_gradient():
    eps = 0.2
    ratios = torch.tensor([1.5, 0.5, 1.5, 0.5, 1.1, 0.9])
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
    # ratio 1.5 with A>0 and 0.5 with A<0: clipped side, no gradient. The other four keep it.
    new_log_prob = ratios.log().requires_grad_()
    loss, _, clip_frac = ppo.clipped_policy_loss(new_log_prob, torch.zeros(6), adv, eps)
    loss.backward()
    expected = -(ratios * adv) / 6  # d/dlogp of -mean(r A) is -r A / n
    expected[:2] = 0.0
    torch.testing.assert_close(new_log_prob.grad, expected)
    assert clip_frac.item() == pytest.approx(4 / 6)


@pytest.mark.grades("value_loss")
def test_value_loss_clipping_against_hand_values():
    """Catches a value clip around V_old of the wrong width, or min taken for max."""
    wiring.check_value_loss_against_hand_values(ppo)


@pytest.mark.grades("categorical_log_prob_entropy")
def test_categorical_log_prob_and_entropy_closed_form():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], dtype=torch.float64)
    actions = torch.tensor([2, 0])
    log_prob, entropy = ppo.categorical_log_prob_entropy(logits, actions)
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    np.testing.assert_allclose(log_prob.numpy(), np.log([p[0, 2], p[1, 0]]))
    np.testing.assert_allclose(entropy.numpy(), -(p * np.log(p)).sum(1))


@pytest.mark.grades("gaussian_log_prob_entropy")
def test_gaussian_log_prob_and_entropy_closed_form():
    mean = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=torch.float64)
    log_std = torch.tensor([0.3, -0.7], dtype=torch.float64)
    actions = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    log_prob, entropy = ppo.gaussian_log_prob_entropy(mean, log_std, actions)
    s = np.exp(log_std.numpy())
    density = np.exp(-((actions.numpy() - mean.numpy()) ** 2) / (2 * s**2)) / np.sqrt(2 * np.pi * s**2)
    np.testing.assert_allclose(log_prob.numpy(), np.log(density).sum(1))
    np.testing.assert_allclose(entropy.numpy(), [np.sum(0.5 * np.log(2 * np.pi * np.e * s**2))] * 2)


@pytest.mark.grades("Agent.sample")
def test_sampling_follows_the_policy():
    """Catches actions drawn from another distribution than the one log_prob_entropy scores."""
    torch.manual_seed(0)
    agent = ppo.Agent(3, 3, True, 8)
    with torch.no_grad():
        agent.actor[-1].bias.copy_(torch.tensor([2.0, 0.0, -1.0]))  # far from uniform
        obs = torch.randn(1, 3)
        probs = torch.softmax(agent.actor(obs), -1)[0]
        draws = agent.sample(obs.expand(40_000, 3))
    freq = torch.bincount(draws, minlength=3).double() / 40_000
    assert probs.min() < 0.2
    torch.testing.assert_close(freq, probs.double(), atol=0.01, rtol=0)
    wiring.check_gaussian_sampling(ppo.Agent(3, 2, False, 8), obs_dim=3)


@pytest.mark.grades("RunningMeanStd.__init__", "RunningMeanStd.update")
def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    stream = [rng.normal(3.0, 2.0, size=(n, 2)) for n in (1, 7, 50, 3)]
    rms = ppo.RunningMeanStd(shape=(2,))
    for batch in stream:
        rms.update(batch)
    everything = np.concatenate(stream)
    np.testing.assert_allclose(rms.mean, everything.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.var, everything.var(0), rtol=1e-4)


@pytest.mark.grades("train")
def test_truncation_is_not_termination(tmp_path):
    """Reward 1 forever, cut at 5 steps by a time limit: V(s) must approach 1/(1-gamma) = 10.

    Treating the time limit as termination would teach V about 2.6 (the mean over t of
    $(1-\\gamma^{5-t})/(1-\\gamma)$, since the observation does not reveal t)."""
    gamma = 0.9
    _, run_dir = train_in(
        tmp_path, ppo, env_id="tests.fake_envs:ConstantReward-v0", total_timesteps=6_000, num_envs=2,
        num_steps=50, gamma=gamma, gae_lambda=0.95, scale_rewards=False, learning_rate=3e-3,
        anneal_lr=False, save_model=True, eval_episodes=1,
    )  # fmt: skip
    agent = ppo.Agent(2, 2, True, 64)
    agent.load_state_dict(torch.load(next(run_dir.glob("*.pt")))["agent"])
    value = agent.value(torch.tensor([[0.5, -0.5]])).item()
    assert value == pytest.approx(1 / (1 - gamma), rel=0.1)


@pytest.mark.grades("train")
def test_nan_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="global_step="):
        train_in(tmp_path, ppo, env_id="tests.fake_envs:NaNReward-v0", total_timesteps=512, num_envs=2,
                 num_steps=64, eval_episodes=1)  # fmt: skip


@pytest.mark.skipif(not installed("Box2D"), reason='needs pip install "gymnasium[box2d]"')
def test_tiny_run_on_lunar_lander(tmp_path):
    summary, _ = train_in(tmp_path, ppo, env_id="LunarLander-v3", total_timesteps=512, num_envs=2, num_steps=64,
                          num_minibatches=2, eval_episodes=1)  # fmt: skip
    assert summary["global_step"] == 512 and np.isfinite(summary["eval_mean_return"])


UPHILL = {"num_envs": 8, "num_steps": 8, "total_timesteps": 128, "update_epochs": 4, "num_minibatches": 2,
          "learning_rate": 5e-3, "anneal_lr": False}  # fmt: skip


# ## The wiring of `train`: what the loop feeds the math, on envs whose every transition is known
CLOCK_RUNS = {
    "Clock-v0": {},  # the defaults: rewards scaled, advantages normalized, step size annealed
    "ClockBox-v0": {"scale_rewards": False, "norm_adv": False, "anneal_lr": False, "clip_vloss": True},
}


@pytest.fixture(scope="module", params=list(CLOCK_RUNS))
def clock(request, tmp_path_factory):
    """A run on the Clock env, spied on, and what its loop should have fed the math."""
    overrides = dict(wiring.CLOCK, env_id=f"tests.fake_envs:{request.param}", **CLOCK_RUNS[request.param])
    rec = wiring.record_train(ppo, tmp_path_factory.mktemp("clock"), **overrides)
    T, N = rec.args.num_steps, rec.args.num_envs
    tr = wiring.clock_transitions(T * len(rec.rollouts))
    rewards = tr["reward"]
    if rec.args.scale_rewards:
        # each rollout's $r_t$ over the std of the discounted returns $G_t$ of all rollouts so far, this one's too
        G = wiring.discounted_returns(tr["reward"], tr["done"], rec.args.gamma)
        var = [wiring.running_moments(np.repeat(G[: (i + 1) * T], N))[1] for i in range(len(rec.rollouts))]
        rewards = rewards / np.repeat(np.sqrt(np.array(var) + 1e-8), T)
    return rec, wiring.expected_rollouts(rec, tr["obs"], tr["next_obs"], rewards)


@pytest.mark.grades("train")
def test_the_policy_acts_on_the_current_observation(clock):
    """Catches sampling a_t from a stale or wrong observation."""
    wiring.check_rollout_obs(*clock)


@pytest.mark.grades("train", "RewardScaler.__init__", "RewardScaler.__call__")
def test_gae_gets_scaled_rewards_both_masks_and_V_of_s_t_and_of_the_true_next_state(clock):
    """Catches the reset obs bootstrapped at a truncation, V(s_t)/V(s_t+1) or terminated/dones swapped, rewards not divided by the std, gamma or lambda misplaced."""
    wiring.check_gae_inputs(*clock)


@pytest.mark.grades("train")
def test_each_minibatch_sample_keeps_its_own_action_old_log_prob_and_advantage(clock):
    """Catches negated or unnormalized advantages, misaligned minibatch indexing, old log-probs not from the rollout's policy, epochs that skip samples."""
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
    wiring.check_true_next_obs(ppo)


@pytest.mark.grades("clipped_policy_loss")
def test_the_clip_bounds_are_one_plus_and_minus_epsilon():
    """Catches the clip range moved, e.g. to 1 + 2 epsilon."""
    wiring.check_clip_bounds(ppo)


@pytest.mark.grades("train")
def test_the_env_gets_the_clipped_action(tmp_path):
    """Catches the env stepped with the unclipped Gaussian sample."""
    wiring.check_env_gets_the_clipped_action(ppo, tmp_path, num_envs=4, num_steps=16, total_timesteps=64)


@pytest.mark.grades("train")
def test_target_kl_ends_the_update_after_the_epoch_that_exceeds_it(tmp_path):
    """Catches the early stop inverted, ignored or taken inside the epoch."""
    assert wiring.steps_per_update(ppo, tmp_path, **dict(wiring.CLOCK, update_epochs=3, target_kl=1e-12)) == [2] * 3


@pytest.mark.grades("Agent.__init__", "Agent.value", "Agent.log_prob_entropy")
def test_policy_and_value_use_their_own_networks():
    """Catches V computed by the actor, or log pi by the critic."""
    torch.manual_seed(0)
    for discrete in (True, False):
        agent = ppo.Agent(3, 2, discrete, 8)
        obs = torch.randn(5, 3)
        wiring.check_policy_and_value_use_their_own_networks(agent, obs, agent.sample(obs).detach())


@pytest.mark.parametrize("env_id", ["Bandit-v0", "BanditBox-v0"])
@pytest.mark.grades("train")
def test_a_few_updates_move_the_policy_toward_the_best_action(env_id, tmp_path):
    """Catches a sign error anywhere between the reward and the step: the policy would move away."""
    for seed in (1, 2, 3):
        before, after = wiring.best_action_before_after(ppo, tmp_path, env_id=f"tests.fake_envs:{env_id}", seed=seed,
                                                        **UPHILL)  # fmt: skip
        assert after > before + 0.1, f"seed {seed}: {before} -> {after}"
