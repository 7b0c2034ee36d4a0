"""trpo.py's math, each piece against a second computation of the same thing."""

import copy
import csv
import functools
import inspect

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Independent, Normal, kl_divergence
from torch.optim.optimizer import register_optimizer_step_pre_hook

from tests.fake_envs import BanditEnv, ClockEnv
from tests.helpers import load_script, spy, train_in
from tests.test_ppo import naive_gae, random_batch

trpo = load_script("trpo.py")


def random_spd(n: int, eigenvalues: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q @ torch.diag(eigenvalues) @ q.T


@pytest.mark.parametrize("n", [3, 10, 30])
@pytest.mark.grades("conjugate_gradient")
def test_conjugate_gradient_solves_spd_systems_in_n_iterations(n):
    # Condition number 10: with a wider spectrum, rounding costs CG its finite termination.
    eig = torch.logspace(-0.5, 0.5, n, dtype=torch.float64)
    A = random_spd(n, eig, seed=n)
    b = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = trpo.conjugate_gradient(lambda v: A @ v, b, iters=n, residual_tol=0.0)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-8)


@pytest.mark.grades("conjugate_gradient")
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
@pytest.mark.grades("fisher_vector_product_fn", "surrogate_and_kl", "flat_grad")
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


@pytest.mark.grades("fisher_vector_product_fn", "flat_grad")
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
@pytest.mark.grades("conjugate_gradient", "fisher_vector_product_fn", "surrogate_and_kl")
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
@pytest.mark.grades("max_step", "set_flat_params", "surrogate_and_kl")
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


@pytest.mark.parametrize("accept_ratio", [0.0, 0.1])
@pytest.mark.parametrize("discrete", [True, False], ids=["softmax", "gaussian"])
@pytest.mark.grades("line_search", "set_flat_params")
def test_line_search_accepts_first_feasible_step_and_restores_exactly_on_failure(discrete, accept_ratio):
    agent, obs, _, _, surrogate_kl = tiny_policy(discrete, seed=1)
    params = agent.policy_params()
    surrogate, kl = surrogate_kl()
    g = trpo.flat_grad(surrogate, params, retain_graph=True)
    fvp = trpo.fisher_vector_product_fn(kl, params, 0.1)
    s = trpo.conjugate_gradient(fvp, g, 10)
    delta, coef = 0.01, 0.5
    step = 20 * trpo.max_step(s, fvp(s), delta)  # too far: needs some backtracking
    expected = (g @ step).item()
    assert expected > 0
    before = params_bytes(params)
    old = torch.cat([p.detach().reshape(-1) for p in params]).clone()
    with torch.no_grad():
        old_surrogate = surrogate_kl()[0].item()

    # Brute force: the first k whose step keeps KL <= delta and gains at least `accept_ratio` of
    # the linear model's coef^k g^T step.
    expected_k = None
    for k in range(10):
        trpo.set_flat_params(params, old + coef**k * step)
        with torch.no_grad():
            sur_k, kl_k = (x.item() for x in surrogate_kl())
        gain = sur_k - old_surrogate
        if kl_k <= delta and gain > 0 and gain / (coef**k * expected) > accept_ratio:
            expected_k = k
            break
    trpo.set_flat_params(params, old)
    assert expected_k is not None and expected_k >= 2
    search = functools.partial(trpo.line_search, params, step, expected, surrogate_kl, delta, coef)
    accepted, k, step_kl, new_surrogate = search(10, accept_ratio)
    assert accepted and k == expected_k and step_kl <= delta and new_surrogate > old_surrogate
    with torch.no_grad():
        measured_sur, measured_kl = (x.item() for x in surrogate_kl())
    assert measured_kl == step_kl <= delta and measured_sur == new_surrogate
    after = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(after, old + coef**k * step)

    # Too few trials to get back inside the trust region: rejected, theta_old restored bit for bit.
    trpo.set_flat_params(params, old)
    accepted, k, _, _ = search(expected_k, accept_ratio)
    assert not accepted and k == expected_k
    assert params_bytes(params) == before
    # A step that makes everything NaN is rejected the same way.
    accepted, _, _, _ = trpo.line_search(
        params, step * float("nan"), expected, surrogate_kl, delta, coef, 3, accept_ratio
    )
    assert not accepted and params_bytes(params) == before


@pytest.mark.grades("line_search")
def test_line_search_rejects_a_step_that_lowers_the_surrogate():
    agent, _, _, _, surrogate_kl = tiny_policy(True, seed=2)
    params = agent.policy_params()
    surrogate, _ = surrogate_kl()
    g = trpo.flat_grad(surrogate, params)
    before = params_bytes(params)
    # A tiny step against the gradient: inside the trust region, but the surrogate goes down.
    step = -1e-4 * g / g.norm()
    for accept_ratio in (0.0, 0.1):
        accepted, _, _, _ = trpo.line_search(params, step, (g @ step).item(), surrogate_kl, 0.01, 0.8, 5, accept_ratio)
        assert not accepted and params_bytes(params) == before


@pytest.mark.grades("line_search")
def test_line_search_backtracks_a_step_that_gains_far_less_than_the_linear_model():
    r"""$\mathcal{L}(x) = x - 0.95 x^2$ from $x = 0$, $g = 1$, KL negligible: the full step $x = 1$ gains
    0.05, a twentieth of the model's $g^T x = 1$. Any-gain acceptance takes it; the paper's rule (gain
    over prediction above 0.1) backtracks once, to $x = 0.8$: gain 0.192 of 0.8 predicted."""
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)

    def surrogate_kl():
        return x[0] - 0.95 * x[0] ** 2, 1e-6 * x[0] ** 2

    step = torch.ones(1, dtype=torch.float64)
    accepted, k, _, surrogate = trpo.line_search([x], step, 1.0, surrogate_kl, 0.01, 0.8, 10, 0.0)
    assert accepted and k == 0 and surrogate == pytest.approx(0.05)
    trpo.set_flat_params([x], torch.zeros(1, dtype=torch.float64))
    accepted, k, _, surrogate = trpo.line_search([x], step, 1.0, surrogate_kl, 0.01, 0.8, 10, 0.1)
    assert accepted and k == 1 and surrogate == pytest.approx(0.8 - 0.95 * 0.64)
    assert x.item() == pytest.approx(0.8)
    # Gains below a tenth of the prediction at every trial: rejected, x back at 0 exactly.
    trpo.set_flat_params([x], torch.zeros(1, dtype=torch.float64))
    accepted, _, _, _ = trpo.line_search([x], step, 20.0, surrogate_kl, 0.01, 0.8, 10, 0.1)
    assert not accepted and x.item() == 0.0


@pytest.mark.grades("trpo_step")
@pytest.mark.parametrize("discrete", [True, False], ids=["softmax", "gaussian"])
def test_trpo_step_moves_theta_along_the_natural_gradient_by_the_line_search(discrete):
    r"""The step a second way: $s = (F + cI)^{-1} g$ with the explicit Fisher matrix, $x = \beta s$ with
    $\frac{1}{2}x^T (F + cI) x = \delta$, then the first $\alpha^k x$ the paper's rule accepts."""
    agent, obs, _, _, surrogate_kl = tiny_policy(discrete, seed=3)
    params = agent.policy_params()
    old = flat_params(params)
    surrogate, _ = surrogate_kl()
    g = trpo.flat_grad(surrogate, params)
    damping, delta, coef, ratio = 0.05, 0.02, 0.7, 0.1
    F = explicit_fisher(agent, obs) + damping * torch.eye(g.numel(), dtype=torch.float64)
    s = torch.linalg.solve(F, g)
    x = torch.sqrt(2 * delta / (s @ F @ s)) * s
    expected_k = None
    for k in range(10):
        copy_into(params, old + coef**k * x)
        with torch.no_grad():
            sur_k, kl_k = (t.item() for t in surrogate_kl())
        gain = sur_k - surrogate.item()
        if kl_k <= delta and gain > ratio * coef**k * (g @ x).item():
            expected_k = k
            break
    copy_into(params, old)
    assert expected_k is not None
    n = g.numel()
    result = trpo.trpo_step(params, surrogate_kl, delta, 4 * n, damping, coef, 10, ratio)
    accepted, backtracks, kl, new_surrogate, step_norm = result
    assert accepted and backtracks == expected_k
    assert step_norm == pytest.approx(x.norm().item(), rel=1e-5)
    assert_near(flat_params(params), old + coef**expected_k * x, rel=1e-5)
    with torch.no_grad():
        measured_sur, measured_kl = (t.item() for t in surrogate_kl())
    assert (kl, new_surrogate) == (measured_kl, measured_sur)


@pytest.mark.grades("kl_divergence", "log_prob")
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
@pytest.mark.grades("gae")
def test_gae_matches_naive_double_loop(gamma, lam):
    batch = random_batch()
    got = trpo.gae(*batch, gamma, lam)
    np.testing.assert_allclose(got, naive_gae(*batch, gamma, lam), atol=1e-10)


@pytest.mark.grades("train")
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


@pytest.mark.grades("train")
def test_nan_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="global_step="):
        train_in(tmp_path, trpo, env_id="tests.fake_envs:NaNReward-v0", total_timesteps=512, num_envs=2,
                 num_steps=64, eval_episodes=1)  # fmt: skip


@pytest.mark.parametrize("anneal", [False, True])
@pytest.mark.grades("train")
def test_anneal_kl_shrinks_delta_linearly(anneal, tmp_path, monkeypatch):
    """With --anneal-kl, update k of K gets delta (1 - (k - 1) / K); without it, delta every time."""
    deltas, real = [], trpo.line_search

    def spy(params, step, expected, surrogate_kl, delta, *rest):
        deltas.append(delta)
        return real(params, step, expected, surrogate_kl, delta, *rest)

    monkeypatch.setattr(trpo, "line_search", spy)
    train_in(tmp_path, trpo, env_id="CartPole-v1", total_timesteps=4 * 64, num_envs=1, num_steps=64,
             num_minibatches=1, critic_epochs=1, target_kl=0.02, anneal_kl=anneal, eval_episodes=1)  # fmt: skip
    assert deltas == pytest.approx([0.02, 0.015, 0.01, 0.005] if anneal else [0.02] * 4)


# ## The wiring of `train`: what the loop feeds the math, on envs that make mistakes visible
# One run on Clock (ClockBox) records every call of the loop's pieces; the tests below check each against
# values recomputed here from what Clock is known to produce. V is replaced by a known function of s that tells
# every observation apart, so a value taken of the wrong observation shows.
CLOCK_ARGS = dict(
    num_envs=2, num_steps=6, total_timesteps=3 * 12, hidden_size=8, critic_epochs=1, num_minibatches=1, gamma=0.9,
    gae_lambda=0.7, target_kl=0.02, anneal_kl=True, cg_iters=7, cg_damping=0.05, backtrack_coef=0.6, max_backtracks=7,
    accept_ratio=0.15, eval_episodes=1,
)  # fmt: skip
CLOCK_IDS = ["tests.fake_envs:Clock-v0", "tests.fake_envs:ClockBox-v0"]
SIGNATURES = {name: inspect.signature(getattr(trpo, name)) for name in ("conjugate_gradient", "line_search")}


def record(monkeypatch, owner, name: str) -> list[tuple[dict, object]]:
    """Like `spy`, but each call's arguments by name, arrays and tensors copied: the loop reuses its buffers."""
    calls, original = [], getattr(owner, name)
    signature = inspect.signature(original)

    def copied(x):
        return x.copy() if isinstance(x, np.ndarray) else x.detach().clone() if isinstance(x, torch.Tensor) else x

    def wrapper(*args, **kwargs):
        arguments = {k: copied(v) for k, v in signature.bind(*args, **kwargs).arguments.items()}
        result = original(*args, **kwargs)
        calls.append((arguments, copied(result)))
        return result

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def clock_value(self, obs: torch.Tensor) -> torch.Tensor:
    """A stand-in for V: $V(t, k) = 10 t + 100 (k \\bmod 2) + 1$ (the critic's graph kept, with weight 0)."""
    return 0.0 * self.critic(obs).squeeze(-1) + obs @ torch.tensor([10.0, 100.0]) + 1.0


def clock_transitions(steps: int) -> tuple[np.ndarray, ...]:
    """$s_t$, $r_t$, the true $s_{t+1}$, terminated, done of one Clock env for `steps` steps, by hand."""
    env, rows = ClockEnv(), []
    obs, _ = env.reset(seed=0)
    for _ in range(steps):
        next_obs, reward, terminated, truncated, _ = env.step(0)
        rows.append((obs, reward, next_obs, terminated, terminated or truncated))
        obs = env.reset()[0] if terminated or truncated else next_obs
    return tuple(np.array(column) for column in zip(*rows))


def per_update(x: np.ndarray, num_envs: int, num_steps: int) -> np.ndarray:
    """(updates * T, ...) of one env -> (updates, T, N, ...): every env of the vector runs the same clock."""
    x = x.reshape(-1, num_steps, 1, *x.shape[1:])
    return np.repeat(x, num_envs, axis=2)


def flat_params(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


def policy(agent, obs: torch.Tensor):
    """$\\pi(\\cdot|s)$ as a torch distribution, to recompute what the loop measures in a second way."""
    out, log_std = agent.dist(obs)
    return Categorical(logits=out) if log_std is None else Independent(Normal(out, log_std.exp()), 1)


def copy_into(params, theta: torch.Tensor) -> None:
    with torch.no_grad():
        for p, x in zip(params, theta.split([p.numel() for p in params])):
            p.copy_(x.view_as(p))


def with_params(agent, theta: torch.Tensor):
    """A copy of `agent` with policy parameters `theta`."""
    agent = copy.deepcopy(agent)
    copy_into(agent.policy_params(), theta)
    return agent


def assert_near(x: torch.Tensor, y: torch.Tensor, rel: float = 1e-4) -> None:
    assert (x - y).norm() <= rel * y.norm() + 1e-6, f"|x - y| = {(x - y).norm():.3g}, |y| = {y.norm():.3g}"


class UpdateRecorder:
    """Records each TRPO update of a run: pi_old and every (surrogate, KL) measured against it, the CG call
    (with $Fv$ for a fixed $v$, while $\\theta = \\theta_{old}$), and the line search's input and outcome."""

    def __init__(self, monkeypatch):
        self.updates = []
        for name in ("surrogate_and_kl", "conjugate_gradient", "line_search"):
            monkeypatch.setattr(trpo, name, functools.partial(getattr(self, name), getattr(trpo, name)))

    def surrogate_and_kl(self, original, agent, obs, actions, advantages, *old):
        if not self.updates or self.updates[-1]["batch"] is not obs:  # a new update: theta = theta_old
            self.updates.append(self.new_update(agent, obs, actions, advantages, old))
        result = original(agent, obs, actions, advantages, *old)
        theta = flat_params(agent.policy_params())
        self.updates[-1]["calls"].append((theta, result[0].item(), result[1].item()))
        return result

    def new_update(self, agent, obs, actions, advantages, old):
        copies = [t if t is None else t.clone() for t in old]
        # Move theta in place, as the line search does, and back: pi_old must not follow.
        params = agent.policy_params()
        theta_old = flat_params(params)
        with torch.no_grad():
            for p in params:
                p.add_(0.1)
            after_move = [t if t is None else t.clone() for t in old]
            copy_into(params, theta_old)
        return dict(
            agent_old=copy.deepcopy(agent), theta_old=theta_old, batch=obs, obs=obs.clone(), actions=actions.clone(),
            adv=advantages.clone(), old=copies, old_after_move=after_move, calls=[],
            old_requires_grad=[t is not None and t.requires_grad for t in old],
        )  # fmt: skip

    def conjugate_gradient(self, original, *args, **kwargs):
        bound = SIGNATURES["conjugate_gradient"].bind(*args, **kwargs).arguments
        b = bound["b"]
        v = torch.randn(b.shape, generator=torch.Generator().manual_seed(0))
        s = original(*args, **kwargs)
        self.updates[-1]["cg"] = dict(b=b.clone(), iters=bound["iters"], v=v, Fv=bound["Av"](v).detach(), s=s.clone())
        return s

    def line_search(self, original, *args, **kwargs):
        bound = SIGNATURES["line_search"].bind(*args, **kwargs).arguments
        before = flat_params(bound["params"])
        result = original(*args, **kwargs)
        self.updates[-1]["line_search"] = dict(bound, step=bound["step"].clone(), before=before,
                                               after=flat_params(bound["params"]), accepted=result[0])  # fmt: skip
        return result


@pytest.fixture(scope="module", params=CLOCK_IDS, ids=["softmax", "gaussian"])
def clock_run(request, tmp_path_factory):
    """One run on Clock with V replaced by `clock_value`: the calls of gae, sample and the TRPO update."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(trpo.Agent, "value", clock_value)
        gae_calls, sample_calls = record(monkeypatch, trpo, "gae"), record(monkeypatch, trpo.Agent, "sample")
        recorder = UpdateRecorder(monkeypatch)
        train_in(tmp_path_factory.mktemp("clock"), trpo, env_id=request.param, **CLOCK_ARGS)
    T, N = CLOCK_ARGS["num_steps"], CLOCK_ARGS["num_envs"]
    expected = [per_update(x, N, T) for x in clock_transitions(CLOCK_ARGS["total_timesteps"] // N)]
    return dict(gae=gae_calls, sample=sample_calls, updates=recorder.updates, expected=expected, T=T, N=N)


@pytest.mark.grades("train")
def test_values_are_of_s_t_and_of_the_true_next_obs_at_episode_ends(clock_run):
    """Catches a bootstrap from the reset observation (final_obs not copied) and V taken of the wrong observation."""
    obs, _, next_obs, _, _ = clock_run["expected"]
    assert len(clock_run["gae"]) == len(obs) == 3
    for (args, _), s, s_next in zip(clock_run["gae"], obs, next_obs):
        np.testing.assert_allclose(args["values"], s @ [10.0, 100.0] + 1.0)
        # Truncated at (5, 1): V(5, 1) = 151 is bootstrapped, not V of the reset observation (0, 0).
        np.testing.assert_allclose(args["next_values"], s_next @ [10.0, 100.0] + 1.0)
    assert (next_obs == [5, 1]).all(-1).any() and (next_obs == [3, 0]).all(-1).any()


@pytest.mark.grades("train")
def test_gae_gets_terminations_dones_gamma_and_lambda_in_their_places(clock_run):
    """Catches terminated and dones swapped or lost, and gamma and lambda swapped."""
    _, _, _, terminated, done = clock_run["expected"]
    for (args, _), term, dn in zip(clock_run["gae"], terminated, done):
        np.testing.assert_array_equal(args["terminated"], term)
        np.testing.assert_array_equal(args["dones"], dn)
        assert (args["gamma"], args["gae_lambda"]) == (CLOCK_ARGS["gamma"], CLOCK_ARGS["gae_lambda"])
    assert not np.array_equal(terminated, done)


@pytest.mark.grades("train", "RewardScaler.__init__", "RewardScaler.__call__")
def test_rewards_are_divided_by_the_running_std_of_the_discounted_return(clock_run):
    """Catches scaling by the variance or multiplying by the std, stats of the wrong sequence, or updated too late."""
    _, rewards, _, _, done = clock_run["expected"]
    discounted, G = [], 0.0
    for r, d in zip(rewards.reshape(-1, clock_run["N"])[:, 0], done.reshape(-1, clock_run["N"])[:, 0]):
        G = CLOCK_ARGS["gamma"] * G + r
        discounted.append(G)
        G = 0.0 if d else G
    T = clock_run["T"]
    for k, ((args, _), r) in enumerate(zip(clock_run["gae"], rewards)):
        std = np.std(discounted[: (k + 1) * T])  # of everything seen so far, this rollout included
        np.testing.assert_allclose(args["rewards"], r / std, rtol=1e-3)


@pytest.mark.grades("train")
def test_actions_are_sampled_from_s_t(clock_run):
    """Catches the policy sampling from a stale or wrong observation."""
    obs = clock_run["expected"][0].reshape(-1, clock_run["N"], 2)
    sampled_from = np.stack([args["obs"].numpy() for args, _ in clock_run["sample"]])
    np.testing.assert_array_equal(sampled_from, obs)


@pytest.mark.grades("train")
def test_surrogate_gets_s_t_the_sampled_actions_and_the_normalized_advantages(clock_run):
    """Catches the advantage's sign flipped or normalization lost, and stored actions clipped or misaligned."""
    obs = clock_run["expected"][0]
    sampled = torch.stack([result for _, result in clock_run["sample"]])
    for k, (update, (_, advantages)) in enumerate(zip(clock_run["updates"], clock_run["gae"])):
        np.testing.assert_array_equal(update["obs"].numpy(), obs[k].reshape(-1, 2))
        torch.testing.assert_close(
            update["actions"], sampled[k * clock_run["T"] : (k + 1) * clock_run["T"]].flatten(0, 1)
        )
        A = torch.from_numpy(advantages).flatten()
        torch.testing.assert_close(update["adv"], (A - A.mean()) / A.std(), rtol=1e-4, atol=1e-5)


@pytest.mark.grades("train")
def test_pi_old_is_a_detached_copy_of_the_rollout_policy(clock_run):
    """Catches pi_old (its log sigma included) moving when theta moves, or a graph left through it."""
    for update in clock_run["updates"]:
        assert not any(update["old_requires_grad"])
        for before, after in zip(update["old"], update["old_after_move"]):
            assert before is None or torch.equal(before, after)
        old_out, old_log_std, old_log_prob = update["old"]
        out, log_std = update["agent_old"].dist(update["obs"])
        torch.testing.assert_close(old_out, out.detach())
        assert (old_log_std is None) == (log_std is None)
        if log_std is not None:
            torch.testing.assert_close(old_log_std, log_std.detach())
        expected = policy(update["agent_old"], update["obs"]).log_prob(update["actions"])
        torch.testing.assert_close(old_log_prob, expected.detach())


@pytest.mark.grades("train")
def test_every_surrogate_and_kl_is_measured_against_pi_old(clock_run):
    """Catches a KL or ratio taken against the moving policy instead of pi_old, e.g. during the line search."""
    for update in clock_run["updates"]:
        old = policy(update["agent_old"], update["obs"])
        old_log_prob = old.log_prob(update["actions"])
        assert len(update["calls"]) >= 2
        for theta, surrogate, kl in update["calls"]:
            with torch.no_grad():
                new = policy(with_params(update["agent_old"], theta), update["obs"])
                ratio = torch.exp(new.log_prob(update["actions"]) - old_log_prob)
                assert surrogate == pytest.approx((ratio * update["adv"]).mean().item(), rel=1e-4, abs=1e-6)
                assert kl == pytest.approx(kl_divergence(old, new).mean().item(), rel=1e-3, abs=1e-7)


@pytest.mark.grades("train")
def test_conjugate_gradient_gets_the_surrogate_gradient_and_the_fisher_at_theta_old(clock_run):
    """Catches g negated or of the wrong objective or parameters, and F v at the wrong policy or damping."""
    for update in clock_run["updates"]:
        agent, cg = update["agent_old"], update["cg"]
        assert cg["iters"] == CLOCK_ARGS["cg_iters"]
        # $g = \hat{\mathbb{E}}_t[\hat{A}_t \nabla_\theta \log\pi_\theta(a_t|s_t)]$ at theta_old
        log_prob = policy(agent, update["obs"]).log_prob(update["actions"])
        g = trpo.flat_grad((update["adv"] * log_prob).mean(), agent.policy_params())
        assert_near(cg["b"], g)
        F = explicit_fisher(agent, update["obs"])
        assert_near(cg["Fv"], F @ cg["v"] + CLOCK_ARGS["cg_damping"] * cg["v"])


@pytest.mark.grades("train")
def test_line_search_gets_the_full_natural_step_and_keeps_the_constraint(clock_run):
    """Catches a step not scaled to 1/2 x^T F x = delta, not along s, the linear model's gain g^T x or the
    acceptance ratio not passed on, and a result that breaks KL <= delta or gains less than the ratio asks."""
    accepted, updates = 0, clock_run["updates"]
    for k, (update, next_update) in enumerate(zip(updates, updates[1:] + [None])):
        agent, cg, search = update["agent_old"], update["cg"], update["line_search"]
        delta = CLOCK_ARGS["target_kl"] * (1 - k / len(updates))  # --anneal-kl
        assert search["delta"] == pytest.approx(delta, rel=1e-12)
        assert (
            search["coef"] == CLOCK_ARGS["backtrack_coef"] and search["max_backtracks"] == CLOCK_ARGS["max_backtracks"]
        )
        assert search["accept_ratio"] == CLOCK_ARGS["accept_ratio"]
        torch.testing.assert_close(search["before"], update["theta_old"])
        step, s = search["step"], cg["s"]
        assert search["expected"] == pytest.approx(torch.dot(cg["b"], step).item(), rel=1e-6)
        assert torch.dot(step, s) > 0 and abs(torch.dot(step, s)) >= (1 - 1e-5) * step.norm() * s.norm()
        Fx = explicit_fisher(agent, update["obs"]) @ step + CLOCK_ARGS["cg_damping"] * step
        assert 0.5 * torch.dot(step, Fx).item() == pytest.approx(delta, rel=1e-3)
        if search["accepted"]:
            accepted += 1
            with torch.no_grad():
                old, new = policy(agent, update["obs"]), policy(with_params(agent, search["after"]), update["obs"])
                assert kl_divergence(old, new).mean() <= delta * (1 + 1e-4)
                ratio = torch.exp(new.log_prob(update["actions"]) - old.log_prob(update["actions"]))
                gain = (ratio * update["adv"]).mean() - update["adv"].mean()
                fraction = torch.dot(search["after"] - search["before"], step) / torch.dot(step, step)
                assert gain > 0 and gain >= CLOCK_ARGS["accept_ratio"] * fraction * search["expected"]
        else:
            torch.testing.assert_close(search["after"], search["before"], rtol=0, atol=0)
        if next_update is not None:  # nothing else moves theta between two updates
            torch.testing.assert_close(next_update["theta_old"], search["after"], rtol=0, atol=0)
    assert accepted >= 1


def test_running_mean_std_of_batches_is_that_of_their_concatenation():
    """Chan et al.'s update against numpy over all rows at once (the prior count 1e-4 weighs nothing)."""
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (1, 7, 50, 3)]
    rms = trpo.RunningMeanStd((4,))
    for batch in batches:
        rms.update(batch)
    everything = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(rms.var, everything.var(0), rtol=1e-5)
    assert rms.count == pytest.approx(len(everything) + 1e-4)


def clock_normalized(steps: int):
    """What --norm-obs gives the networks on Clock, by hand: $s_t$ normalized with the mean and variance
    of every observation up to $s_t$, the true $s_{t+1}$ with those up to the observation that step
    returned (the next row's $s$, a reset one at an episode's end), and the statistics at the end."""
    obs, _, true_next, _, _ = clock_transitions(steps + 1)

    def stats(j):
        return obs[: j + 1].mean(0), obs[: j + 1].var(0)

    def normalize(x, j):
        mean, var = stats(j)
        return np.clip((x - mean) / np.sqrt(var + 1e-8), -10.0, 10.0)

    s = np.stack([normalize(obs[t], t) for t in range(steps)])
    s_next = np.stack([normalize(true_next[t], t + 1) for t in range(steps)])
    return s, s_next, stats(steps)


@pytest.mark.grades("train")
def test_norm_obs_feeds_policy_and_v_normalized_s_and_true_next_s_and_freezes_at_evaluation(tmp_path, monkeypatch):
    """Catches the policy or V fed raw observations, the true last observation of an episode (final_obs)
    left raw or normalized with other statistics than the next row's $s$, statistics that move during
    the evaluation, and statistics not saved or not loaded."""
    monkeypatch.setattr(trpo.Agent, "value", clock_value)
    gae_calls, sample_calls = record(monkeypatch, trpo, "gae"), record(monkeypatch, trpo.Agent, "sample")
    mode_calls = record(monkeypatch, trpo.Agent, "mode")
    N, T, updates = 2, 6, 3
    flags = dict(num_envs=N, num_steps=T, hidden_size=8, critic_epochs=1, num_minibatches=1, norm_obs=True)
    (tmp_path / "train").mkdir()
    _, run_dir = train_in(tmp_path / "train", trpo, env_id=CLOCK_IDS[0], total_timesteps=updates * N * T,
                          save_model=True, eval_episodes=1, **flags)  # fmt: skip
    s, s_next, (mean, var) = clock_normalized(updates * T)
    sampled_from = np.stack([args["obs"].numpy() for args, _ in sample_calls])
    np.testing.assert_allclose(sampled_from, np.repeat(s[:, None], N, 1), rtol=1e-3, atol=1e-4)
    values = np.concatenate([args["values"] for args, _ in gae_calls])
    next_values = np.concatenate([args["next_values"] for args, _ in gae_calls])
    np.testing.assert_allclose(values, np.repeat((s @ [10.0, 100.0] + 1)[:, None], N, 1), rtol=1e-3, atol=1e-3)
    expected_next = np.repeat((s_next @ [10.0, 100.0] + 1)[:, None], N, 1)
    np.testing.assert_allclose(next_values, expected_next, rtol=1e-3, atol=1e-3)

    # The evaluation (one episode: (0, 0), (1, 0), (2, 0)) with the statistics as training left them.
    eval_obs = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    expected_eval = (eval_obs - mean) / np.sqrt(var + 1e-8)
    got = np.concatenate([args["obs"].numpy() for args, _ in mode_calls])
    np.testing.assert_allclose(got, expected_eval, rtol=1e-3, atol=1e-4)
    saved = torch.load(next(run_dir.glob("*.pt")))["obs_rms"]
    np.testing.assert_allclose(saved["mean"].numpy(), mean, rtol=1e-4)
    np.testing.assert_allclose(saved["var"].numpy(), var, rtol=1e-4)

    # Evaluation only, from the checkpoint: its statistics, unchanged by the reset or the episodes.
    mode_calls.clear()
    (tmp_path / "eval").mkdir()
    _, eval_dir = train_in(tmp_path / "eval", trpo, env_id=CLOCK_IDS[0], total_timesteps=0, save_model=True,
                           model_path=str(next(run_dir.glob("*.pt"))), eval_episodes=1, **flags)  # fmt: skip
    got = np.concatenate([args["obs"].numpy() for args, _ in mode_calls])
    np.testing.assert_allclose(got, expected_eval, rtol=1e-3, atol=1e-4)
    resaved = torch.load(next(eval_dir.glob("*.pt")))["obs_rms"]
    assert all(torch.equal(saved[key], resaved[key]) for key in ("mean", "var", "count"))


BANDIT_IDS = ["tests.fake_envs:Bandit-v0", "tests.fake_envs:BanditBox-v0"]
TINY_ARGS = dict(hidden_size=8, critic_epochs=1, num_minibatches=1, eval_episodes=1)


def bandit_reward(actions: np.ndarray, discrete: bool) -> np.ndarray:
    """What Bandit pays for `actions` (Box: after clipping into [-1, 1])."""
    if discrete:
        return np.array(BanditEnv.ARM_REWARDS)[actions]
    return -((np.clip(actions, -1.0, 1.0)[..., 0] - BanditEnv.BEST_ACTION) ** 2)


@pytest.mark.parametrize("env_id", BANDIT_IDS, ids=["softmax", "gaussian"])
@pytest.mark.grades("train")
def test_env_gets_the_clipped_sample_and_without_norm_adv_gae_reaches_the_surrogate_as_is(
    env_id, tmp_path, monkeypatch
):
    """Catches the env stepped with unclipped or other actions, rewards misaligned, and --no-norm-adv ignored."""
    gae_calls, sample_calls = record(monkeypatch, trpo, "gae"), record(monkeypatch, trpo.Agent, "sample")
    recorder = UpdateRecorder(monkeypatch)
    N, T = 4, 4
    train_in(tmp_path, trpo, env_id=env_id, num_envs=N, num_steps=T, total_timesteps=2 * N * T, scale_rewards=False,
             norm_adv=False, **TINY_ARGS)  # fmt: skip
    sampled = np.stack([result.numpy() for _, result in sample_calls])
    discrete = "Box" not in env_id
    assert discrete or (np.abs(sampled) > 1).any()  # some samples left the box and had to be clipped
    for k, ((args, advantages), update) in enumerate(zip(gae_calls, recorder.updates)):
        np.testing.assert_allclose(args["rewards"], bandit_reward(sampled[k * T : (k + 1) * T], discrete), rtol=1e-6)
        torch.testing.assert_close(update["adv"], torch.from_numpy(advantages).flatten())


@pytest.mark.parametrize("epochs,minibatch_size", [(1, 12), (3, 4)])
@pytest.mark.grades("fit_critic")
def test_fit_critic_steps_on_each_minibatch_of_each_epoch_with_its_own_half_squared_error(epochs, minibatch_size):
    """Each step's gradient, solved for as a mix of the 12 per-sample gradients of $\\frac{1}{2}(V(s_i) - y_i)^2$
    at that step's parameters, is their mean over one minibatch; each epoch's minibatches cover the batch once.
    Catches a sum for the mean, a dropped 1/2, stale gradients, ascent, the actor stepped, epochs skipped."""
    torch.manual_seed(0)
    agent = trpo.Agent(3, 2, True, 4).double()  # 33 critic parameters: the 12 gradients are independent
    obs, targets = torch.randn(12, 3, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    critic, actor = list(agent.critic.parameters()), copy.deepcopy(agent.actor.state_dict())
    optimizer = torch.optim.SGD(critic, lr=0.05)
    steps = []

    def record_step(optimizer, *_):
        per_sample = torch.stack([trpo.flat_grad(0.5 * (agent.value(obs[i]) - targets[i]) ** 2, critic)
                                  for i in range(12)])  # fmt: skip
        step = torch.cat([p.grad.reshape(-1) for p in critic])
        weights = torch.linalg.lstsq(per_sample.T, step).solution
        losses = 0.5 * (agent.value(obs).detach() - targets) ** 2
        steps.append((weights, losses))

    handle = register_optimizer_step_pre_hook(record_step)
    try:
        loss = trpo.fit_critic(agent, optimizer, obs, targets, epochs, minibatch_size)
    finally:
        handle.remove()
    assert len(steps) == epochs * 12 // minibatch_size
    for epoch in range(epochs):
        covered = torch.zeros(12, dtype=torch.float64)
        for weights, _ in steps[epoch * len(steps) // epochs : (epoch + 1) * len(steps) // epochs]:
            in_minibatch = weights > 0.5 / minibatch_size
            assert in_minibatch.sum() == minibatch_size
            torch.testing.assert_close(weights, in_minibatch.double() / minibatch_size, atol=1e-8, rtol=0)
            covered += in_minibatch
        assert covered.tolist() == [1.0] * 12, f"epoch {epoch}"
    # The loss returned: the last minibatch's, before its step; the fit brings the whole batch's down.
    weights, losses = steps[-1]
    torch.testing.assert_close(float(loss.detach()), float(losses[weights > 0.5 / minibatch_size].mean()))
    assert (0.5 * (agent.value(obs).detach() - targets) ** 2).mean() < steps[0][1].mean()
    assert all(torch.equal(v, agent.actor.state_dict()[k]) for k, v in actor.items())


@pytest.mark.grades("train")
def test_the_logged_explained_variance_is_of_the_targets_by_the_rollouts_values(tmp_path, monkeypatch):
    """$1 - \\text{Var}[V^{targ} - V] / \\text{Var}[V^{targ}]$ per update, from the $V(s_t)$ and $\\hat{A}_t$ that GAE
    saw, in float64 with the unbiased variance. Catches V(s_{t+1}) or the normalized advantages in its place, the ratio
    inverted, and the metric taken after the critic's fit."""
    gae_calls = record(monkeypatch, trpo, "gae")
    N, T = 2, 8
    _, run_dir = train_in(tmp_path, trpo, env_id=CLOCK_IDS[0], num_envs=N, num_steps=T, total_timesteps=3 * N * T,
                          **TINY_ARGS)  # fmt: skip
    with open(run_dir / "metrics.csv") as f:
        logged = [float(row["losses/explained_variance"]) for row in csv.DictReader(f)]
    assert len(logged) == len(gae_calls) == 3
    for k, (args, advantages) in enumerate(gae_calls):
        targets = (advantages + args["values"]).astype(np.float64).ravel()
        residual = targets - args["values"].astype(np.float64).ravel()
        expected = 1 - residual.var(ddof=1) / targets.var(ddof=1)
        assert logged[k] == pytest.approx(expected, rel=1e-4, abs=1e-5), f"update {k}"


@pytest.mark.grades("train", "fit_critic")
def test_critic_regresses_v_of_s_t_on_advantages_plus_values(tmp_path, monkeypatch):
    """Catches the critic fitted to targets other than A + V(s_t), on s_{t+1}, by ascent, with stale gradients
    (no zero_grad), or not stepped at all."""
    gae_calls, fits, value = record(monkeypatch, trpo, "gae"), [], trpo.Agent.value

    def recorded_value(self, obs):
        v = value(self, obs)
        if v.requires_grad:  # a critic regression step: keep s, V(s) and d loss / d V(s)
            fit = dict(update=len(gae_calls), agent=self, obs=obs.detach().clone(), v=v.detach().clone())
            v.register_hook(lambda grad: fit.update(grad=grad.clone()))
            fits.append(fit)
        return v

    def check_gradient(optimizer, *_):
        """Before each step: the optimizer holds the critic, its gradient is this minibatch's loss's alone."""
        fit = fits[-1]
        critic = list(fit["agent"].critic.parameters())
        with torch.enable_grad():
            expected = torch.autograd.grad(value(fit["agent"], fit["obs"]), critic, grad_outputs=fit["grad"])
        fit["holds_critic"] = [p for group in optimizer.param_groups for p in group["params"]] == critic
        fit["gradient"] = (
            torch.cat([p.grad.reshape(-1) for p in critic]),
            torch.cat([g.reshape(-1) for g in expected]),
        )

    monkeypatch.setattr(trpo.Agent, "value", recorded_value)
    N, T, epochs, minibatches = 2, 6, 3, 2
    handle = register_optimizer_step_pre_hook(check_gradient)
    try:
        train_in(tmp_path, trpo, env_id=CLOCK_IDS[0], num_envs=N, num_steps=T, total_timesteps=2 * N * T,
                 hidden_size=8, critic_epochs=epochs, num_minibatches=minibatches, learning_rate=1e-2,
                 eval_episodes=1)  # fmt: skip
    finally:
        handle.remove()
    obs = per_update(clock_transitions(2 * T)[0], N, T)
    for k, (args, advantages) in enumerate(gae_calls):
        steps = [fit for fit in fits if fit["update"] == k + 1]
        assert len(steps) == epochs * minibatches
        for fit in steps:
            assert fit["holds_critic"]
            assert_near(*fit["gradient"], rel=1e-5)
        # $\frac{1}{2}\text{mean}_M (V - y)^2$ has gradient $(V - y) / M$ in V: the targets y it was fitted to
        targets = [fit["v"] - len(fit["v"]) * fit["grad"] for fit in steps]
        got = np.column_stack([torch.cat([fit["obs"] for fit in steps]).numpy(), torch.cat(targets).numpy()])
        returns = (advantages + args["values"]).reshape(-1)
        expected = np.column_stack([np.tile(obs[k].reshape(-1, 2), (epochs, 1)), np.tile(returns, epochs)])
        np.testing.assert_allclose(got[np.lexsort(got.T[::-1])], expected[np.lexsort(expected.T[::-1])], atol=1e-4)
        losses = [0.5 * (fit["v"] - y).pow(2).mean().item() for fit, y in zip(steps, targets)]
        assert np.mean(losses[-minibatches:]) < np.mean(losses[:minibatches])  # the last epoch fits better


@pytest.mark.parametrize("env_id", BANDIT_IDS, ids=["softmax", "gaussian"])
@pytest.mark.grades("train")
def test_a_few_updates_move_the_policy_uphill_on_the_bandit(env_id, tmp_path, monkeypatch):
    """Catches a sign error anywhere in the loop: P(best arm) must rise from 1/3, the Gaussian's mean from 0 to 0.5."""
    samples = spy(monkeypatch, trpo.Agent, "sample")
    for seed in (1, 2, 3):
        (tmp_path / str(seed)).mkdir()
        train_in(tmp_path / str(seed), trpo, env_id=env_id, seed=seed, num_envs=8, num_steps=8, total_timesteps=4 * 64,
                 hidden_size=16, critic_epochs=2, eval_episodes=1)  # fmt: skip
        agent = samples[-1][0][0]
        with torch.no_grad():
            out, _ = agent.dist(torch.tensor([[1.0, -1.0]]))
        if agent.discrete:  # 4 steps of KL 0.01 reach about 0.57
            assert torch.softmax(out, -1)[0, BanditEnv.BEST_ARM] > 0.45
        else:  # about 0.37
            assert out.item() > 0.2
