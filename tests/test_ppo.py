"""ppo.py's math, each piece against a second computation of the same thing."""

import numpy as np
import pytest
import torch

from tests.helpers import load_script, train_in

ppo = load_script("ppo.py")


def naive_gae(rewards, values, next_values, terminated, dones, gamma, lam):
    """$\\hat{A}_t = \\sum_{l \\ge 0} (\\gamma\\lambda)^l \\delta_{t+l}$, summed until the episode ends."""
    T, N = rewards.shape
    delta = rewards + gamma * next_values * (1 - terminated) - values
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            for k in range(t, T):
                adv[t, n] += (gamma * lam) ** (k - t) * delta[k, n]
                if dones[k, n]:
                    break
    return adv


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
def test_gae_matches_naive_double_loop(gamma, lam):
    batch = random_batch()
    np.testing.assert_allclose(run_gae(batch, gamma, lam), naive_gae(*batch, gamma, lam), atol=1e-10)


def test_gae_lambda_0_is_the_td_error():
    rewards, values, next_values, terminated, dones = batch = random_batch(seed=1)
    delta = rewards + 0.97 * next_values * (1 - terminated) - values
    np.testing.assert_allclose(run_gae(batch, 0.97, 0.0), delta, atol=1e-12)


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


def test_gae_truncation_bootstraps_and_termination_does_not():
    # One env, two steps: step 0 truncated with V(final)=5, step 1 terminated with V(final)=7.
    r, v = np.array([[1.0], [1.0]]), np.array([[0.0], [0.0]])
    next_v, term, done = np.array([[5.0], [7.0]]), np.array([[0.0], [1.0]]), np.array([[1.0], [1.0]])
    adv = ppo.gae(r, v, next_v, term, done, 0.5, 0.9)
    assert adv.flatten().tolist() == [1.0 + 0.5 * 5.0, 1.0]


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


def test_value_loss_clipping_against_hand_values():
    new, old, ret = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([3.0, 1.0])
    assert ppo.value_loss(new, old, ret, None).item() == pytest.approx(0.5 * (1 + 1) / 2)
    # clipped prediction of the first sample is 0.2: max((2-3)^2, (0.2-3)^2) = 7.84
    assert ppo.value_loss(new, old, ret, 0.2).item() == pytest.approx(0.5 * (7.84 + 1) / 2)


def test_categorical_log_prob_and_entropy_closed_form():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], dtype=torch.float64)
    actions = torch.tensor([2, 0])
    log_prob, entropy = ppo.categorical_log_prob_entropy(logits, actions)
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    np.testing.assert_allclose(log_prob.numpy(), np.log([p[0, 2], p[1, 0]]))
    np.testing.assert_allclose(entropy.numpy(), -(p * np.log(p)).sum(1))


def test_gaussian_log_prob_and_entropy_closed_form():
    mean = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=torch.float64)
    log_std = torch.tensor([0.3, -0.7], dtype=torch.float64)
    actions = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    log_prob, entropy = ppo.gaussian_log_prob_entropy(mean, log_std, actions)
    s = np.exp(log_std.numpy())
    density = np.exp(-((actions.numpy() - mean.numpy()) ** 2) / (2 * s**2)) / np.sqrt(2 * np.pi * s**2)
    np.testing.assert_allclose(log_prob.numpy(), np.log(density).sum(1))
    np.testing.assert_allclose(entropy.numpy(), [np.sum(0.5 * np.log(2 * np.pi * np.e * s**2))] * 2)


def test_sampling_follows_the_policy():
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

    gauss = ppo.Agent(3, 2, False, 8)
    with torch.no_grad():
        gauss.log_std.copy_(torch.tensor([0.5, -1.0]))
        draws = gauss.sample(obs.expand(40_000, 3))
        mean = gauss.actor(obs)[0]
    torch.testing.assert_close(draws.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.tensor([0.5, -1.0]).exp(), atol=0.03, rtol=0)


def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    stream = [rng.normal(3.0, 2.0, size=(n, 2)) for n in (1, 7, 50, 3)]
    rms = ppo.RunningMeanStd(shape=(2,))
    for batch in stream:
        rms.update(batch)
    everything = np.concatenate(stream)
    np.testing.assert_allclose(rms.mean, everything.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.var, everything.var(0), rtol=1e-4)


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


def test_nan_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="global_step="):
        train_in(tmp_path, ppo, env_id="tests.fake_envs:NaNReward-v0", total_timesteps=512, num_envs=2,
                 num_steps=64, eval_episodes=1)  # fmt: skip
