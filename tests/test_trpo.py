"""trpo.py's math, each piece against a second computation of the same thing."""

import functools

import numpy as np
import pytest
import torch

from tests.helpers import load_script, train_in
from tests.test_ppo import naive_gae, random_batch

trpo = load_script("trpo.py")


def random_spd(n: int, eigenvalues: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q @ torch.diag(eigenvalues) @ q.T


@pytest.mark.parametrize("n", [3, 10, 30])
def test_conjugate_gradient_solves_spd_systems_in_n_iterations(n):
    # Condition number 10: with a wider spectrum, rounding costs CG its finite termination.
    eig = torch.logspace(-0.5, 0.5, n, dtype=torch.float64)
    A = random_spd(n, eig, seed=n)
    b = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = trpo.conjugate_gradient(lambda v: A @ v, b, iters=n, residual_tol=0.0)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-8)


def test_conjugate_gradient_needs_one_iteration_per_distinct_eigenvalue():
    # A Krylov method: with 3 distinct eigenvalues the exact solution is reached after 3 steps,
    # and not after 2.
    eig = torch.tensor([1.0, 1.0, 1.0, 4.0, 4.0, 9.0, 9.0, 9.0], dtype=torch.float64)
    A = random_spd(8, eig, seed=0)
    b = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    exact = torch.linalg.solve(A, b)
    torch.testing.assert_close(trpo.conjugate_gradient(lambda v: A @ v, b, iters=3, residual_tol=0.0), exact)
    assert (trpo.conjugate_gradient(lambda v: A @ v, b, iters=2, residual_tol=0.0) - exact).norm() > 1e-3


def tiny_policy(discrete: bool, seed: int = 0, n_states: int = 6):
    """A float64 policy with 3 observations, 2 actions, 4 hidden units, and a batch from it."""
    torch.manual_seed(seed)
    agent = trpo.Agent(3, 2, discrete, 4).double()
    with torch.no_grad():
        for p in agent.policy_params():  # away from the near-zero output layer init
            p.add_(0.3 * torch.randn_like(p))
        obs = torch.randn(n_states, 3, dtype=torch.float64)
        actions = agent.sample(obs)
        out, log_std = agent.dist(obs)
        old_log_std = None if log_std is None else log_std.clone()
        old_log_prob = trpo.log_prob(out, old_log_std, actions)
    advantages = torch.randn(n_states, dtype=torch.float64)
    surrogate_kl = functools.partial(
        trpo.surrogate_and_kl, agent, obs, actions, advantages, out, old_log_std, old_log_prob
    )
    return agent, obs, actions, advantages, surrogate_kl


def output_jacobian(agent, params, obs_row: torch.Tensor) -> torch.Tensor:
    """d(outputs)/d(theta) for one state, one row per output: the logits, or the mean then log sigma."""
    out, log_std = agent.dist(obs_row.unsqueeze(0))
    outputs = out[0] if log_std is None else torch.cat([out[0], log_std])
    rows = []
    for y in outputs:
        grads = torch.autograd.grad(y, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)]))
    return torch.stack(rows)


def explicit_fisher(agent, obs: torch.Tensor) -> torch.Tensor:
    """$F = \\hat{\\mathbb{E}}_s[J_s^T M_s J_s]$, $M_s$ the Fisher matrix of the output distribution in its
    own parameters: $\\text{diag}(p) - pp^T$ for the softmax's logits; for the Gaussian,
    $\\text{diag}(1/\\sigma^2)$ for the mean and $2$ for each $\\log\\sigma$."""
    params = agent.policy_params()
    F = 0.0
    for s in obs:
        J = output_jacobian(agent, params, s)
        with torch.no_grad():
            out, log_std = agent.dist(s.unsqueeze(0))
            if log_std is None:
                p = torch.softmax(out[0], -1)
                M = torch.diag(p) - torch.outer(p, p)
            else:
                M = torch.diag(torch.cat([torch.exp(-2 * log_std), 2 * torch.ones_like(log_std)]))
        F = F + J.T @ M @ J
    return F / len(obs)


@pytest.mark.parametrize("discrete", [True, False], ids=["softmax", "gaussian"])
def test_fisher_vector_product_equals_explicit_fisher_times_v(discrete):
    agent, obs, _, _, surrogate_kl = tiny_policy(discrete)
    params = agent.policy_params()
    _, kl = surrogate_kl()
    assert abs(kl.item()) < 1e-12  # theta = theta_old
    damping = 0.1
    fvp = trpo.fisher_vector_product_fn(kl, params, damping)
    F = explicit_fisher(agent, obs)
    n = F.shape[0]
    assert n == sum(p.numel() for p in params) and (discrete or n == 46 + 2)  # log sigma is in theta
    for seed in range(3):
        v = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(fvp(v), F @ v + damping * v, rtol=1e-9, atol=1e-12)


def test_softmax_fisher_is_the_expected_outer_product_of_scores():
    # The definition $F = \hat{\mathbb{E}}_s \sum_a \pi(a|s) \nabla\log\pi(a|s) \nabla\log\pi(a|s)^T$,
    # summed exactly over the actions.
    agent, obs, _, _, _ = tiny_policy(True)
    params = agent.policy_params()
    F = 0.0
    for s in obs:
        logp = torch.log_softmax(agent.actor(s), -1)
        for a in range(2):
            score = trpo.flat_grad(logp[a], params, retain_graph=True)
            F = F + logp[a].exp().detach() * torch.outer(score, score)
    torch.testing.assert_close(F / len(obs), explicit_fisher(agent, obs), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("discrete", [True, False], ids=["softmax", "gaussian"])
def test_natural_gradient_direction_is_inverse_fisher_times_gradient(discrete):
    agent, obs, actions, advantages, surrogate_kl = tiny_policy(discrete)
    params = agent.policy_params()
    surrogate, kl = surrogate_kl()
    g = trpo.flat_grad(surrogate, params, retain_graph=True)
    # At theta_old, $\nabla \mathcal{L} = \hat{\mathbb{E}}_t[\hat{A}_t \nabla\log\pi(a_t|s_t)]$, per sample:
    g_loop = sum(
        A * trpo.flat_grad(trpo.log_prob(*agent.dist(s.unsqueeze(0)), a.unsqueeze(0))[0], params)
        for s, a, A in zip(obs, actions, advantages)
    ) / len(obs)
    torch.testing.assert_close(g, g_loop, rtol=1e-9, atol=1e-12)
    damping = 0.05
    fvp = trpo.fisher_vector_product_fn(kl, params, damping)
    n = g.numel()
    s = trpo.conjugate_gradient(fvp, g, iters=4 * n, residual_tol=1e-28)
    F = explicit_fisher(agent, obs) + damping * torch.eye(n, dtype=torch.float64)
    torch.testing.assert_close(s, torch.linalg.solve(F, g), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("discrete", [True, False], ids=["softmax", "gaussian"])
def test_max_step_fills_the_quadratic_trust_region_and_kl_follows_it(discrete):
    agent, obs, _, _, surrogate_kl = tiny_policy(discrete)
    params = agent.policy_params()
    surrogate, kl = surrogate_kl()
    g = trpo.flat_grad(surrogate, params, retain_graph=True)
    F = explicit_fisher(agent, obs)
    F_damped = F + 1e-3 * torch.eye(g.numel(), dtype=torch.float64)
    s = torch.linalg.solve(F_damped, g)
    for delta in (1e-2, 1e-6):
        step = trpo.max_step(s, F_damped @ s, delta)
        assert 0.5 * (step @ F_damped @ step).item() == pytest.approx(delta, rel=1e-9)
    # The measured KL is the quadratic model $\frac{1}{2}x^T F x$ up to a third-order remainder:
    # its relative error shrinks like $|x| \propto \sqrt{\delta}$, 10 times per factor 100 in $\delta$.
    old = torch.cat([p.detach().reshape(-1) for p in params]).clone()
    errors = []
    for delta in (1e-6, 1e-8):
        step = trpo.max_step(s, F_damped @ s, delta)
        trpo.set_flat_params(params, old + step)
        with torch.no_grad():
            errors.append(abs(surrogate_kl()[1].item() / (0.5 * (step @ F @ step).item()) - 1))
    assert errors[0] < 0.05 and 0.05 * errors[0] < errors[1] < 0.2 * errors[0]


def params_bytes(params) -> list[bytes]:
    return [p.detach().numpy().tobytes() for p in params]


@pytest.mark.parametrize("discrete", [True, False], ids=["softmax", "gaussian"])
def test_line_search_accepts_first_feasible_step_and_restores_exactly_on_failure(discrete):
    agent, obs, _, _, surrogate_kl = tiny_policy(discrete, seed=1)
    params = agent.policy_params()
    surrogate, kl = surrogate_kl()
    g = trpo.flat_grad(surrogate, params, retain_graph=True)
    fvp = trpo.fisher_vector_product_fn(kl, params, 0.1)
    s = trpo.conjugate_gradient(fvp, g, 10)
    delta, coef = 0.01, 0.5
    step = 20 * trpo.max_step(s, fvp(s), delta)  # too far: needs some backtracking
    before = params_bytes(params)
    old = torch.cat([p.detach().reshape(-1) for p in params]).clone()
    with torch.no_grad():
        old_surrogate = surrogate_kl()[0].item()

    # Brute force: the first k whose step keeps KL <= delta and improves the surrogate.
    expected_k = None
    for k in range(10):
        trpo.set_flat_params(params, old + coef**k * step)
        with torch.no_grad():
            sur_k, kl_k = (x.item() for x in surrogate_kl())
        if kl_k <= delta and sur_k > old_surrogate:
            expected_k = k
            break
    trpo.set_flat_params(params, old)
    assert expected_k is not None and expected_k >= 2
    accepted, k, step_kl, new_surrogate = trpo.line_search(params, step, surrogate_kl, delta, coef, 10)
    assert accepted and k == expected_k and step_kl <= delta and new_surrogate > old_surrogate
    with torch.no_grad():
        measured_sur, measured_kl = (x.item() for x in surrogate_kl())
    assert measured_kl == step_kl <= delta and measured_sur == new_surrogate
    after = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(after, old + coef**k * step)

    # Too few trials to get back inside the trust region: rejected, theta_old restored bit for bit.
    trpo.set_flat_params(params, old)
    accepted, k, _, _ = trpo.line_search(params, step, surrogate_kl, delta, coef, expected_k)
    assert not accepted and k == expected_k
    assert params_bytes(params) == before
    # A step that makes everything NaN is rejected the same way.
    accepted, _, _, _ = trpo.line_search(params, step * float("nan"), surrogate_kl, delta, coef, 3)
    assert not accepted and params_bytes(params) == before


def test_line_search_rejects_a_step_that_lowers_the_surrogate():
    agent, _, _, _, surrogate_kl = tiny_policy(True, seed=2)
    params = agent.policy_params()
    surrogate, _ = surrogate_kl()
    g = trpo.flat_grad(surrogate, params)
    before = params_bytes(params)
    # A tiny step against the gradient: inside the trust region, but the surrogate goes down.
    accepted, _, _, _ = trpo.line_search(params, -1e-4 * g / g.norm(), surrogate_kl, 0.01, 0.8, 5)
    assert not accepted and params_bytes(params) == before


def test_kl_and_log_prob_match_torch_distributions():
    from torch.distributions import Categorical, Normal, kl_divergence

    torch.manual_seed(0)
    old_logits, logits = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    expected = kl_divergence(Categorical(logits=old_logits), Categorical(logits=logits))
    torch.testing.assert_close(trpo.kl_divergence(old_logits, None, logits, None), expected)
    actions = torch.tensor([0, 2, 1, 1, 0])
    torch.testing.assert_close(trpo.log_prob(logits, None, actions), Categorical(logits=logits).log_prob(actions))

    old_mean, mean = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    old_ls, ls = torch.tensor([0.2, -0.5], dtype=torch.float64), torch.tensor([-0.1, 0.4], dtype=torch.float64)
    expected = kl_divergence(Normal(old_mean, old_ls.exp()), Normal(mean, ls.exp())).sum(-1)
    torch.testing.assert_close(trpo.kl_divergence(old_mean, old_ls, mean, ls), expected)
    a = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(trpo.log_prob(mean, ls, a), Normal(mean, ls.exp()).log_prob(a).sum(-1))


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.5)])
def test_gae_matches_naive_double_loop(gamma, lam):
    batch = random_batch()
    got = trpo.gae(*batch, gamma, lam)
    np.testing.assert_allclose(got, naive_gae(*batch, gamma, lam), atol=1e-10)


def test_truncation_is_not_termination_and_log_std_is_trained(tmp_path):
    """Reward 1 forever, cut at 5 steps by a time limit: V(s) must approach 1/(1-gamma) = 10
    (treating the time limit as termination would teach V about 2.6). The Box variant also
    checks that the trust-region step moves log sigma."""
    gamma = 0.9
    _, run_dir = train_in(
        tmp_path, trpo, env_id="tests.fake_envs:ConstantRewardBox-v0", total_timesteps=4_000, num_envs=2,
        num_steps=100, gamma=gamma, gae_lambda=0.95, scale_rewards=False, learning_rate=3e-3, critic_epochs=20,
        save_model=True, eval_episodes=1,
    )  # fmt: skip
    agent = trpo.Agent(2, 1, False, 64)
    agent.load_state_dict(torch.load(next(run_dir.glob("*.pt")))["agent"])
    assert agent.value(torch.tensor([[0.5, -0.5]])).item() == pytest.approx(1 / (1 - gamma), rel=0.1)
    assert agent.log_std.item() != 0.0


def test_nan_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="global_step="):
        train_in(tmp_path, trpo, env_id="tests.fake_envs:NaNReward-v0", total_timesteps=512, num_envs=2,
                 num_steps=64, eval_episodes=1)  # fmt: skip


@pytest.mark.parametrize("anneal", [False, True])
def test_anneal_kl_shrinks_delta_linearly(anneal, tmp_path, monkeypatch):
    """With --anneal-kl, update k of K gets delta (1 - (k - 1) / K); without it, delta every time."""
    deltas, real = [], trpo.line_search

    def spy(params, step, surrogate_kl, delta, *rest):
        deltas.append(delta)
        return real(params, step, surrogate_kl, delta, *rest)

    monkeypatch.setattr(trpo, "line_search", spy)
    train_in(tmp_path, trpo, env_id="CartPole-v1", total_timesteps=4 * 64, num_envs=1, num_steps=64,
             num_minibatches=1, critic_epochs=1, target_kl=0.02, anneal_kl=anneal, eval_episodes=1)  # fmt: skip
    assert deltas == pytest.approx([0.02, 0.015, 0.01, 0.005] if anneal else [0.02] * 4)
