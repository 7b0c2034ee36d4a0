"""The exact-gradient harness checked against brute-force enumeration of every trajectory."""

import itertools

import pytest
import torch

from tests.tabular_mdp import (
    TabularMDP,
    exact_gradient,
    exact_gradient_terms,
    exact_J,
    exact_Q,
    exact_state_distribution,
    exact_V,
    log_probs,
    mean_and_stderr,
    policy_probs,
    sample_episodes,
    score,
)


def trajectories(mdp: TabularMDP, logits: torch.Tensor):
    """Every (states, actions) of length H with its probability $p_\\theta(\\tau)$ and discounted return."""
    pi = policy_probs(logits)
    for sa in itertools.product(range(mdp.n_states * mdp.n_actions), repeat=mdp.horizon):
        states = torch.tensor([x // mdp.n_actions for x in sa])
        actions = torch.tensor([x % mdp.n_actions for x in sa])
        p = mdp.p0[states[0]]
        for t in range(mdp.horizon):
            p = p * pi[states[t], actions[t]]
            if t + 1 < mdp.horizon:
                p = p * mdp.P[states[t], actions[t], states[t + 1]]
        discounts = mdp.gamma ** torch.arange(mdp.horizon, dtype=torch.float64)
        yield states, actions, p, (discounts * mdp.R[states, actions]).sum()


@pytest.fixture(params=[1.0, 0.9], ids=["undiscounted", "discounted"])
def mdp_and_logits(request):
    mdp = TabularMDP.random(n_states=3, n_actions=2, horizon=3, seed=1, gamma=request.param)
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return mdp, logits


def test_random_mdp_is_a_distribution():
    mdp = TabularMDP.random(n_states=4, n_actions=3, horizon=5, seed=7)
    assert mdp.p0.shape == (4,) and mdp.P.shape == (4, 3, 4) and mdp.R.shape == (4, 3)
    assert torch.allclose(mdp.p0.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(mdp.P.sum(-1), torch.ones(4, 3, dtype=torch.float64))
    assert mdp.horizon == 5 and mdp.gamma == 1.0


def test_exact_J_and_Q_match_enumeration(mdp_and_logits):
    mdp, logits = mdp_and_logits
    J, q0 = 0.0, torch.zeros(mdp.n_states, mdp.n_actions, dtype=torch.float64)
    mass = torch.zeros_like(q0)
    total = 0.0
    for states, actions, p, G in trajectories(mdp, logits):
        total += p
        J += p * G
        q0[states[0], actions[0]] += p * G
        mass[states[0], actions[0]] += p
    assert float(total) == pytest.approx(1.0, abs=1e-12)
    assert float(exact_J(mdp, logits)) == pytest.approx(float(J), rel=1e-10)
    # $Q_0(s,a) = \mathbb{E}[G | s_1=s, a_1=a]$
    assert torch.allclose(exact_Q(mdp, logits)[0], q0 / mass, rtol=1e-10)
    V = exact_V(mdp, logits)
    assert V.shape == (mdp.horizon, mdp.n_states)
    assert torch.allclose(V[-1], (policy_probs(logits) * mdp.R).sum(-1))


def test_exact_gradient_is_the_policy_gradient_theorem(mdp_and_logits):
    """autograd through DP == $\\sum_\\tau p_\\theta(\\tau) \\nabla_\\theta \\log p_\\theta(\\tau) G(\\tau)$."""
    mdp, logits = mdp_and_logits
    grad = torch.zeros_like(logits)
    for states, actions, p, G in trajectories(mdp, logits):
        grad += p * score(logits, states, actions).sum(0) * G
    assert torch.allclose(exact_gradient(mdp, logits), grad, rtol=1e-9, atol=1e-12)


def test_state_distribution_matches_enumeration(mdp_and_logits):
    mdp, logits = mdp_and_logits
    d = torch.zeros(mdp.horizon, mdp.n_states, dtype=torch.float64)
    for states, _, p, _ in trajectories(mdp, logits):
        d[torch.arange(mdp.horizon), states] += p
    assert torch.allclose(exact_state_distribution(mdp, logits), d, rtol=1e-10)


def test_gradient_terms_with_and_without_gamma_t(mdp_and_logits):
    """$\\sum_t \\gamma^t$ term$_t$ is the gradient; $\\sum_t$ term$_t$ is the mean of $\\sum_t \\nabla \\log \\pi(a_t|s_t) G_t$."""
    mdp, logits = mdp_and_logits
    terms = exact_gradient_terms(mdp, logits)
    discounts = mdp.gamma ** torch.arange(mdp.horizon, dtype=torch.float64)
    assert torch.allclose((discounts[:, None, None] * terms).sum(0), exact_gradient(mdp, logits), rtol=1e-9)
    rewards_to_go = torch.zeros_like(logits)
    for states, actions, p, _ in trajectories(mdp, logits):
        r = mdp.R[states, actions]
        G = torch.stack([(discounts[: mdp.horizon - t] * r[t:]).sum() for t in range(mdp.horizon)])
        rewards_to_go += p * (score(logits, states, actions) * G[:, None, None]).sum(0)
    assert torch.allclose(terms.sum(0), rewards_to_go, rtol=1e-9, atol=1e-12)
    # with $\gamma < 1$ the two differ: a test can tell which one an estimator estimates
    assert torch.allclose(terms.sum(0), exact_gradient(mdp, logits)) == (mdp.gamma == 1.0)


def test_score_is_the_gradient_of_log_pi():
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    states, actions = torch.tensor([0, 2, 2, 1]), torch.tensor([3, 0, 1, 1])
    for i in range(4):
        (g,) = torch.autograd.grad(log_probs(logits, states[i], actions[i]), logits)
        assert torch.allclose(score(logits, states, actions)[i], g)


def test_sampled_returns_average_to_J():
    mdp = TabularMDP.random(seed=3)
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ep = sample_episodes(mdp, logits, 20_000, torch.Generator().manual_seed(5))
    assert ep["states"].shape == ep["actions"].shape == ep["rewards"].shape == (20_000, mdp.horizon)
    mean, se = mean_and_stderr(ep["rewards"].sum(1))
    assert abs(float(mean - exact_J(mdp, logits))) < 4 * float(se)
    # and the first state follows $p(s_1)$
    freq = torch.bincount(ep["states"][:, 0], minlength=3).double() / 20_000
    assert torch.allclose(freq, mdp.p0, atol=0.015)
