"""reinforce_baseline.py: every baseline keeps the exact gradient of a tiny MDP and lowers the variance."""

import pytest
import torch

from tests.helpers import load_script
from tests.tabular_mdp import TabularMDP, exact_gradient, exact_V, mean_and_stderr, sample_episodes, score

rb = load_script("reinforce_baseline.py")

N = 8  # episodes per batch
BATCHES = 5_000


@pytest.fixture(scope="module")
def batches():
    """BATCHES batches of N episodes, each as the script sees it: (T, N) columns, plus closed-form scores."""
    mdp = TabularMDP.random(n_states=3, n_actions=2, horizon=4, seed=0)
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ep = sample_episodes(mdp, logits, N * BATCHES, torch.Generator().manual_seed(2))
    H = mdp.horizon
    rewards = ep["rewards"].view(BATCHES, N, H).transpose(1, 2)  # (B, T, N)
    states = ep["states"].view(BATCHES, N, H).transpose(1, 2)
    scores = score(logits, ep["states"], ep["actions"]).flatten(2).view(BATCHES, N, H, -1)  # (B, N, T, P)
    returns = torch.stack([rb.rewards_to_go(r, 1.0) for r in rewards])  # (B, T, N)
    return mdp, logits, states, scores, returns


def batch_estimates(scores, weights):
    """Per batch: $\\frac{1}{N}\\sum_i \\sum_t \\nabla \\log \\pi(a_t|s_t) \\Psi_t$; scores (B, N, T, P), weights (B, T, N)."""
    return (scores * weights.transpose(1, 2)[..., None]).sum(2).mean(1)


def estimates(batches, kind: str):
    mdp, logits, states, scores, returns = batches
    mask = torch.ones_like(returns[0])
    G = returns[:, :1].expand_as(returns)
    if kind == "none":
        return batch_estimates(scores, G)
    if kind == "reward-to-go":
        return batch_estimates(scores, returns)
    if kind == "mean":
        return batch_estimates(scores, torch.stack([g - rb.mean_baseline(g, mask) for g in G]))
    if kind == "reward-to-go+mean":
        return batch_estimates(scores, torch.stack([r - rb.mean_baseline(r, mask) for r in returns]))
    if kind == "reward-to-go+value":  # the exact, time-indexed $V_t(s_t)$ as the learned V would be at best
        V = exact_V(mdp, logits)
        return batch_estimates(scores, returns - V[torch.arange(mdp.horizon)[:, None], states])
    if kind == "optimal":
        traj_scores = scores.sum(2)  # (B, N, P)
        out = []
        for g, ret in zip(traj_scores, returns):
            out.append((g * (ret[0][:, None] - rb.optimal_baseline(g, ret[0]))).mean(0))
        return torch.stack(out)
    raise ValueError(kind)


KINDS = ["none", "reward-to-go", "mean", "reward-to-go+mean", "reward-to-go+value", "optimal"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_estimator_is_unbiased(batches, kind):
    mdp, logits = batches[0], batches[1]
    mean, se = mean_and_stderr(estimates(batches, kind))
    exact = exact_gradient(mdp, logits).flatten()
    assert ((mean - exact).abs() < 4 * se).all(), (kind, mean, exact, se)


def test_the_plain_batch_mean_would_be_biased(batches):
    """Why leave-one-out: $b$ = the mean including episode i shrinks the estimate by (N-1)/N."""
    mdp, logits, states, scores, returns = batches
    G = returns[:, :1].expand_as(returns)
    mean, se = mean_and_stderr(batch_estimates(scores, G - G.mean(2, keepdim=True)))
    exact = exact_gradient(mdp, logits).flatten()
    assert torch.allclose(mean, exact * (N - 1) / N, atol=4 * float(se.max()))
    assert ((mean - exact).abs() > 4 * se).any()


def test_baselines_lower_the_variance(batches):
    var = {kind: float(estimates(batches, kind).var(0).sum()) for kind in KINDS}
    assert var["reward-to-go"] < var["none"]
    assert var["mean"] < 0.5 * var["none"]
    assert var["reward-to-go+mean"] < 0.5 * var["reward-to-go"]
    assert var["reward-to-go+value"] < var["reward-to-go+mean"]
    assert var["optimal"] < 0.5 * var["none"], var


def test_optimal_baseline_has_the_lowest_variance():
    """Of the whole-return estimators, in batches big enough (64) for its ratio of moments to settle."""
    mdp = TabularMDP.random(n_states=3, n_actions=2, horizon=4, seed=0)
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    n, B = 64, 1000
    ep = sample_episodes(mdp, logits, n * B, torch.Generator().manual_seed(3))
    g = score(logits, ep["states"], ep["actions"]).sum(1).flatten(1).view(B, n, -1)  # $\nabla \log p_\theta(\tau)$
    G = ep["rewards"].sum(1).view(B, n)
    ones = torch.ones(1, n, dtype=torch.float64)
    var = {
        "none": (g * G[..., None]).mean(1),
        "mean": torch.stack(
            [(gi * (Gi - rb.mean_baseline(Gi[None], ones)[0])[:, None]).mean(0) for gi, Gi in zip(g, G)]
        ),
        "optimal": torch.stack([(gi * (Gi[:, None] - rb.optimal_baseline(gi, Gi))).mean(0) for gi, Gi in zip(g, G)]),
    }
    var = {k: float(v.var(0).sum()) for k, v in var.items()}
    assert var["optimal"] < 0.9 * var["mean"] and var["mean"] < 0.5 * var["none"], var


def test_mean_baseline_is_the_mean_of_the_other_running_episodes():
    returns = torch.tensor([[3.0, 5.0, 4.0], [2.0, 4.0, 0.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    b = rb.mean_baseline(returns, mask)
    for t in range(3):
        for i in range(3):
            others = [returns[t, j] for j in range(3) if j != i and mask[t, j]]
            want = sum(others) / len(others) if others else 0.0
            assert float(b[t, i]) == pytest.approx(float(want))


def test_optimal_baseline_matches_a_naive_loop():
    torch.manual_seed(0)
    scores, G = torch.randn(5, 4, dtype=torch.float64), torch.rand(5, dtype=torch.float64) * 10
    b = rb.optimal_baseline(scores, G)
    for i in range(5):
        for k in range(4):
            num = sum(scores[j, k] ** 2 * G[j] for j in range(5) if j != i)
            den = sum(scores[j, k] ** 2 for j in range(5) if j != i)
            assert float(b[i, k]) == pytest.approx(float(num / den))


@pytest.mark.parametrize("discrete", [True, False], ids=["discrete", "gaussian"])
def test_per_episode_gradients_match_autograd_one_episode_at_a_time(discrete):
    torch.manual_seed(0)
    policy = rb.Policy(3, 2, discrete, 8)
    T, n = 6, 4
    obs = torch.randn(T, n, 3)
    with torch.no_grad():
        actions = policy.sample(obs)
    weights = torch.randn(T, n) * (torch.arange(T)[:, None] < torch.tensor([6, 3, 1, 5])).float()
    got = rb.per_episode_gradients(policy, obs, actions, weights)
    for i in range(n):
        policy.zero_grad()
        (-(policy.log_prob(obs[:, i], actions[:, i]) * weights[:, i]).sum()).backward()
        want = torch.cat([p.grad.flatten() for p in policy.parameters()])
        assert torch.allclose(got[i], want, atol=1e-6)
    assert rb.gradient_variance(got) == pytest.approx(float(sum(got[:, k].var() for k in range(got.shape[1])) / n))


def test_value_loss_ignores_padding():
    values, returns = torch.tensor([[1.0, 2.0], [3.0, 9.0]]), torch.tensor([[2.0, 2.0], [1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert float(rb.value_loss(values, returns, mask)) == pytest.approx(0.5 * (1.0 + 0.0 + 4.0) / 3)
