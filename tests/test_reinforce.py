"""reinforce.py: its estimator against the exact gradient of a tiny tabular MDP, and the wiring of `train`."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.helpers import load_script, make_args, read_progress, spy, train_in
from tests.tabular_mdp import (
    TabularMDP,
    exact_gradient,
    exact_gradient_terms,
    log_probs,
    mean_and_stderr,
    sample_episodes,
    score,
)
from tests.wiring_monte_carlo import (
    BANDITS,
    assert_climbs,
    assert_env_got_the_samples,
    assert_whole_batches,
    bound,
    episode_gradients,
    flat_grad,
    module_at,
    optimizer_steps,
    record_batches,
    sampled,
    step_sizes,
    steps_of,
    weights_psi,
)

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


@pytest.mark.grades("rewards_to_go")
def test_rewards_to_go_matches_a_naive_loop():
    rewards = torch.rand(7, 3)
    gamma = 0.9
    got = rf.rewards_to_go(rewards, gamma)
    for i in range(3):
        for t in range(7):
            want = sum(gamma ** (k - t) * rewards[k, i] for k in range(t, 7))
            assert got[t, i] == pytest.approx(float(want), rel=1e-5)


@pytest.mark.grades("reinforce_weights")
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


@pytest.mark.grades("surrogate_loss")
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
@pytest.mark.grades("reinforce_weights")
def test_estimate_is_unbiased(setup, reward_to_go):
    mdp, logits, ep, rewards, mask, scores = setup
    g = per_episode_gradients(scores, rf.reinforce_weights(rewards, mask, 1.0, reward_to_go))
    mean, se = mean_and_stderr(g)
    exact = exact_gradient(mdp, logits).flatten()
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)
    # Not trivially so: the estimate is far from zero and the standard errors are small.
    assert exact.abs().max() > 5 * se.max()


@pytest.fixture(scope="module")
def discounted():
    """gamma = 0.5: the gradient of the discounted J and the sum without gamma^t differ by many standard errors."""
    mdp = TabularMDP.random(n_states=3, n_actions=2, horizon=4, seed=5, gamma=0.5)
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ep = sample_episodes(mdp, logits, N_EPISODES, torch.Generator().manual_seed(7))
    return mdp, logits, ep, score(logits, ep["states"], ep["actions"])


@pytest.mark.parametrize("reward_to_go", [False, True], ids=["whole-return", "reward-to-go"])
@pytest.mark.grades("reinforce_weights")
def test_discounted_estimate_is_the_one_its_comment_names(discounted, reward_to_go):
    """$G(\\tau)$ at every step estimates $\\nabla J$ (with $\\gamma^t$); $G_t$ drops the $\\gamma^t$, as the comment says."""
    mdp, logits, ep, scores = discounted
    rewards = ep["rewards"].T
    w = rf.reinforce_weights(rewards, torch.ones_like(rewards), mdp.gamma, reward_to_go)
    mean, se = mean_and_stderr(per_episode_gradients(scores, w))
    with_gamma_t = exact_gradient(mdp, logits).flatten()
    without_gamma_t = exact_gradient_terms(mdp, logits).sum(0).flatten()
    named, other = (without_gamma_t, with_gamma_t) if reward_to_go else (with_gamma_t, without_gamma_t)
    assert ((mean - named).abs() < 4 * se).all(), (mean, named, se)
    assert ((mean - other).abs() > 5 * se).any(), (mean, other, se)


@pytest.mark.grades("reinforce_weights")
def test_reward_to_go_lowers_the_variance(setup):
    mdp, logits, ep, rewards, mask, scores = setup
    var = {
        rtg: per_episode_gradients(scores, rf.reinforce_weights(rewards, mask, 1.0, rtg)).var(0).sum()
        for rtg in (False, True)
    }
    assert var[True] < 0.8 * var[False], var


@pytest.mark.grades("Agent.log_prob", "categorical_log_prob", "gaussian_log_prob")
def test_policy_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    obs = torch.randn(5, 3)
    for discrete in (True, False):
        policy = rf.Agent(3, 2, discrete, 8)
        with torch.no_grad():
            policy.actor[-1].weight.normal_()
            if not discrete:
                policy.log_std.copy_(torch.tensor([0.3, -0.5]))
        out = policy.actor(obs)
        actions = policy.sample(obs)
        if discrete:
            dist = torch.distributions.Categorical(logits=out)
        else:
            dist = torch.distributions.Independent(torch.distributions.Normal(out, policy.log_std.exp()), 1)
        assert torch.allclose(policy.log_prob(obs, actions), dist.log_prob(actions), atol=1e-5)


def sampling_policy(discrete: bool, n_out: int):
    """A policy whose last layer has random weights, and 20,000 copies of one observation to sample it at."""
    torch.manual_seed(0)
    policy = rf.Agent(2, n_out, discrete, 8)
    with torch.no_grad():
        policy.actor[-1].weight.normal_()
    return policy, torch.tensor([[0.3, -0.2]]).expand(20_000, 2)


@pytest.mark.grades("Agent.sample")
def test_sampled_actions_follow_the_softmax():
    policy, obs = sampling_policy(True, 3)
    freq = torch.bincount(policy.sample(obs), minlength=3).float() / 20_000
    assert torch.allclose(freq, torch.softmax(policy.actor(obs[:1]), -1)[0], atol=0.015)


@pytest.mark.grades("Agent.sample")
def test_sampled_actions_follow_the_gaussian():
    """Catches a sampler with another mean than $f(s)$ or another spread than $\\sigma = e^{\\log\\sigma}$, per coordinate."""
    policy, obs = sampling_policy(False, 2)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([0.4, -0.7]))
        actions, mean = policy.sample(obs), policy.actor(obs[:1])[0]
    torch.testing.assert_close(actions.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(actions.std(0), policy.log_std.exp().detach(), atol=0, rtol=0.03)


@pytest.mark.grades("train")
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


# ## The wiring of `train`: what its loop fed the math, against what the envs did
BASE = {"num_envs": 4, "gamma": 0.9, "hidden_size": 8, "learning_rate": 0.01, "eval_episodes": 0}
RUNS = {
    # $s_t = (t, 0)$ and $r_t = t + 1$, every episode terminates after 3 steps: the time order shows
    "clock": {"env_id": "tests.fake_envs:Clock-v0", "total_timesteps": 40},
    # Box actions: $\log\pi$ of the unclipped sample, the env gets it clipped to [-1, 1]
    "clock-box": {"env_id": "tests.fake_envs:ClockBox-v0", "total_timesteps": 40},
    "clock-fixed-step-size": {"env_id": "tests.fake_envs:Clock-v0", "total_timesteps": 40, "anneal_lr": False},
    # episodes of different lengths in one batch: what the mask must cut off (the budget: at least one
    # update, N episodes of up to 500 steps)
    "cartpole": {"env_id": "CartPole-v1", "total_timesteps": 2000},
    "cartpole-whole-return": {"env_id": "CartPole-v1", "total_timesteps": 2000, "reward_to_go": False},
    "cartpole-normalized": {"env_id": "CartPole-v1", "total_timesteps": 2000, "normalize_returns": True},
    # only the time limit ends an episode (truncation)
    "time-limit": {"env_id": "tests.fake_envs:ConstantReward-v0", "total_timesteps": 50},
}


@pytest.fixture(scope="module", params=list(RUNS))
def run(request, tmp_path_factory):
    """One `train` per configuration, with the envs, the policy's samples, the math and Adam recorded."""
    overrides = {**BASE, **RUNS[request.param]}
    with pytest.MonkeyPatch.context() as mp, optimizer_steps() as steps:
        batches = record_batches(mp)
        samples = spy(mp, rf.Agent, "sample")
        weights = spy(mp, rf, "reinforce_weights")
        losses = spy(mp, rf, "surrogate_loss")
        summary, _ = train_in(tmp_path_factory.mktemp(request.param), rf, **overrides)
    policy = samples[0][0][0]
    return SimpleNamespace(
        args=make_args(rf, **overrides), summary=summary, batches=batches, samples=samples, weights=weights,
        losses=losses, steps=steps_of(steps, policy), policy=policy,
        complete=[b for b in batches if b.complete],
    )  # fmt: skip


def expected_weights(batch, args) -> np.ndarray:
    """$\\Psi_t$ as the flags ask, standardized over the batch's steps with `normalize_returns`, 0 after the end."""
    w = weights_psi(batch, args.gamma, args.reward_to_go)
    if args.normalize_returns:
        valid = w[batch.mask == 1]
        w = (w - valid.mean()) / (valid.std(ddof=1) + 1e-8) * batch.mask
    return w


@pytest.mark.grades("train")
def test_one_update_per_batch_of_whole_fresh_episodes(run):
    """Catches a loop that learns from a batch the budget cut short, skips the reset, or reseeds every batch."""
    assert_whole_batches(
        run.batches, len(run.steps), run.summary["global_step"], run.args.total_timesteps, first_seed=run.args.seed
    )
    assert len(run.losses) == len(run.steps)


@pytest.mark.grades("train")
def test_the_policy_samples_at_s_t_and_the_env_gets_that_sample(run):
    """Catches sampling from a stale observation, or an env action other than the sample (clipped for Box)."""
    assert_env_got_the_samples(run.batches, run.samples, run.args.env_id)


@pytest.mark.grades("train")
def test_weights_are_the_returns_the_flags_ask_for(run):
    """Catches a wrong gamma, rewards leaking past an episode's end, a shifted mask, or a flag not passed on."""
    for b, weights_call, loss_call in zip(run.complete, run.weights, run.losses):
        given = bound(rf.reinforce_weights, weights_call)
        np.testing.assert_array_equal(given["rewards"].numpy(), b.masked_rewards)
        np.testing.assert_array_equal(given["mask"].numpy(), b.mask)
        assert given["gamma"] == run.args.gamma and given["reward_to_go"] == run.args.reward_to_go
        assert bool(given["normalize"]) == run.args.normalize_returns
        loss_args = bound(rf.surrogate_loss, loss_call)
        np.testing.assert_allclose(loss_args["weights"].numpy(), expected_weights(b, run.args), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(loss_args["mask"].numpy(), b.mask)


@pytest.mark.grades("train")
def test_log_probs_are_those_of_the_sampled_actions_at_s_t(run):
    """Catches $\\log\\pi$ taken at $s_{t+1}$, of the clipped action, of other actions, or under another policy."""
    for b, step, loss_call in zip(run.complete, run.steps, run.losses):
        with torch.no_grad():
            policy = module_at(run.policy, step)
            want = policy.log_prob(torch.as_tensor(b.s, dtype=torch.float32), sampled(run.samples, b))
        torch.testing.assert_close(bound(rf.surrogate_loss, loss_call)["log_probs"].detach(), want)


@pytest.mark.grades("train")
def test_adam_descends_the_surrogate_with_step_size_alpha_k(run):
    """Catches an ascent on the loss (a sign), gradients piling up over batches, or a step size other than $\\alpha_k$."""
    for b, step, lr in zip(run.complete, run.steps, step_sizes(run.args, run.batches), strict=True):
        assert step.lr == pytest.approx(lr)
        # $\hat{\nabla}_\theta J = \frac{1}{N} \sum_i \sum_t \nabla_\theta \log \pi(a_t|s_t) \Psi_t$; Adam is handed $-\hat{\nabla}_\theta J$
        policy = module_at(run.policy, step)
        ascent = episode_gradients(policy, b.s, sampled(run.samples, b), expected_weights(b, run.args)).mean(0)
        torch.testing.assert_close(flat_grad(step, run.policy), -ascent)


@pytest.mark.parametrize("env_id", BANDITS)
@pytest.mark.grades("train")
def test_a_few_updates_climb_the_bandit(tmp_path, env_id):
    """Catches a sign error anywhere from the rewards to the parameter step: the policy would walk away from the best action."""
    lr = 0.01 if env_id.endswith("Box-v0") else 0.05
    summaries = [
        train_in(tmp_path, rf, env_id=env_id, seed=seed, num_envs=64, total_timesteps=640, learning_rate=lr,
                 hidden_size=8, eval_episodes=1)[0]
        for seed in range(3)
    ]  # fmt: skip
    assert_climbs(env_id, summaries)
