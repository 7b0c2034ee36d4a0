"""reinforce.py: its estimator against the exact gradient of a tiny tabular MDP."""

import pytest
import torch

from tests.helpers import load_script, read_progress, train_in
from tests.tabular_mdp import TabularMDP, exact_gradient, log_probs, mean_and_stderr, sample_episodes, score

rf = load_script("reinforce.py")

N_EPISODES = 40_000


@pytest.fixture(scope="module")
def setup():
    mdp = TabularMDP.random(n_states=3, n_actions=2, horizon=4, seed=0)
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ep = sample_episodes(mdp, logits, N_EPISODES, torch.Generator().manual_seed(2))
    # The scripts' (T, N) layout: one episode per column, every step valid.
    rewards, mask = ep["rewards"].T, torch.ones(mdp.horizon, N_EPISODES, dtype=torch.float64)
    scores = score(logits, ep["states"], ep["actions"])  # (n, H, S, A)
    return mdp, logits, ep, rewards, mask, scores


def per_episode_gradients(scores, weights):
    """$g_i = \\sum_t \\nabla_\\theta \\log \\pi(a_t|s_t) \\Psi_t$ for each episode i, shape (n, S*A)."""
    return (scores * weights.T[..., None, None]).sum(1).flatten(1)


def test_rewards_to_go_matches_a_naive_loop():
    rewards = torch.rand(7, 3)
    gamma = 0.9
    got = rf.rewards_to_go(rewards, gamma)
    for i in range(3):
        for t in range(7):
            want = sum(gamma ** (k - t) * rewards[k, i] for k in range(t, 7))
            assert got[t, i] == pytest.approx(float(want), rel=1e-5)


def test_weights_zero_after_the_episode_ends():
    rewards = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])  # episode 0 has 2 steps, episode 1 has 3
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    full = rf.reinforce_weights(rewards, mask, 1.0, reward_to_go=False)
    assert torch.equal(full, torch.tensor([[2.0, 3.0], [2.0, 3.0], [0.0, 3.0]]))
    to_go = rf.reinforce_weights(rewards, mask, 1.0, reward_to_go=True)
    assert torch.equal(to_go, torch.tensor([[2.0, 3.0], [1.0, 2.0], [0.0, 1.0]]))
    normalized = rf.reinforce_weights(rewards, mask, 1.0, reward_to_go=True, normalize=True)
    valid = normalized[mask.bool()]
    assert float(valid.mean()) == pytest.approx(0.0, abs=1e-6) and float(valid.std()) == pytest.approx(1.0, rel=1e-5)
    assert normalized[2, 0] == 0.0


def test_surrogate_loss_gradient_is_the_estimate(setup):
    """$-\\nabla_\\theta \\mathcal{L}$ by autograd == the mean of the per-episode closed-form estimates."""
    mdp, logits, ep, rewards, mask, scores = setup
    n = 500
    theta = logits.clone().requires_grad_(True)
    weights = rf.reinforce_weights(rewards[:, :n], mask[:, :n], 1.0, reward_to_go=True)
    loss = rf.surrogate_loss(log_probs(theta, ep["states"][:n].T, ep["actions"][:n].T), weights, mask[:, :n])
    (grad,) = torch.autograd.grad(loss, theta)
    want = per_episode_gradients(scores[:n], weights).mean(0)
    assert torch.allclose(-grad.flatten(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reward_to_go", [False, True], ids=["whole-return", "reward-to-go"])
def test_estimate_is_unbiased(setup, reward_to_go):
    mdp, logits, ep, rewards, mask, scores = setup
    g = per_episode_gradients(scores, rf.reinforce_weights(rewards, mask, 1.0, reward_to_go))
    mean, se = mean_and_stderr(g)
    exact = exact_gradient(mdp, logits).flatten()
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)
    # Not trivially so: the estimate is far from zero and the standard errors are small.
    assert exact.abs().max() > 5 * se.max()


def test_whole_return_is_unbiased_for_discounted_J():
    mdp = TabularMDP.random(n_states=3, n_actions=2, horizon=4, seed=5, gamma=0.8)
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ep = sample_episodes(mdp, logits, N_EPISODES, torch.Generator().manual_seed(7))
    w = rf.reinforce_weights(ep["rewards"].T, torch.ones_like(ep["rewards"].T), mdp.gamma, reward_to_go=False)
    mean, se = mean_and_stderr(per_episode_gradients(score(logits, ep["states"], ep["actions"]), w))
    assert ((mean - exact_gradient(mdp, logits).flatten()).abs() < 4 * se).all()


def test_reward_to_go_lowers_the_variance(setup):
    mdp, logits, ep, rewards, mask, scores = setup
    var = {
        rtg: per_episode_gradients(scores, rf.reinforce_weights(rewards, mask, 1.0, rtg)).var(0).sum()
        for rtg in (False, True)
    }
    assert var[True] < 0.8 * var[False], var


def test_policy_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    obs = torch.randn(5, 3)
    for discrete in (True, False):
        policy = rf.Policy(3, 2, discrete, 8)
        with torch.no_grad():
            policy.net[-1].weight.normal_()
        out = policy.net(obs)
        actions = policy.sample(obs)
        if discrete:
            dist = torch.distributions.Categorical(logits=out)
        else:
            dist = torch.distributions.Independent(torch.distributions.Normal(out, policy.log_std.exp()), 1)
        assert torch.allclose(policy.log_prob(obs, actions), dist.log_prob(actions), atol=1e-5)


def test_sampled_actions_follow_the_softmax():
    torch.manual_seed(0)
    policy = rf.Policy(2, 3, True, 8)
    with torch.no_grad():
        policy.net[-1].weight.normal_()
    obs = torch.tensor([[0.3, -0.2]]).expand(20_000, 2)
    freq = torch.bincount(policy.sample(obs), minlength=3).float() / 20_000
    assert torch.allclose(freq, torch.softmax(policy.net(obs[:1]), -1)[0], atol=0.015)


def test_batches_are_whole_episodes(tmp_path):
    """ConstantReward-v0 ends every episode at step 5: the budget buys whole batches of N episodes."""
    summary, run_dir = train_in(
        tmp_path, rf, env_id="tests.fake_envs:ConstantReward-v0", num_envs=3, total_timesteps=40, eval_episodes=1
    )
    rows = read_progress(run_dir)
    assert [int(r["episodic_length"]) for r in rows] == [5] * 6  # 2 batches of 3 episodes; a third would be 45 steps
    assert [int(r["global_step"]) for r in rows] == [15] * 3 + [30] * 3
    # the third batch ran 3 steps in each env before the budget ran out: those steps count, unused
    assert summary["global_step"] == 39
