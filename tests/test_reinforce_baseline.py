"""reinforce_baseline.py: every baseline keeps the exact gradient of a tiny MDP and lowers the variance;
the wiring of `train`."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.helpers import load_script, make_args, spy, train_in
from tests.tabular_mdp import (
    TabularMDP,
    exact_gradient,
    exact_gradient_terms,
    exact_V,
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
    discounted_sums,
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

rb = load_script("reinforce_baseline.py")

N = 8  # episodes per batch
BATCHES = 5_000


def make_batches(gamma: float, seed: int):
    """BATCHES batches of N episodes, each as the script sees it: (T, N) columns, plus closed-form scores."""
    mdp = TabularMDP.random(n_states=3, n_actions=2, horizon=4, seed=seed, gamma=gamma)
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    ep = sample_episodes(mdp, logits, N * BATCHES, torch.Generator().manual_seed(seed + 2))
    H = mdp.horizon
    rewards = ep["rewards"].view(BATCHES, N, H).transpose(1, 2)  # (B, T, N)
    states = ep["states"].view(BATCHES, N, H).transpose(1, 2)
    scores = score(logits, ep["states"], ep["actions"]).flatten(2).view(BATCHES, N, H, -1)  # (B, N, T, P)
    returns = torch.stack([rb.rewards_to_go(r, gamma) for r in rewards])  # (B, T, N)
    return mdp, logits, states, scores, returns


@pytest.fixture(scope="module")
def batches():
    return make_batches(gamma=1.0, seed=0)


@pytest.fixture(scope="module")
def discounted_batches():
    """gamma = 0.5: the gradient of the discounted J and the sum without gamma^t differ by many standard errors."""
    return make_batches(gamma=0.5, seed=5)


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
    V = exact_V(mdp, logits)[torch.arange(mdp.horizon)[:, None], states]  # $V_t(s_t)$, the learned V at best
    if kind == "reward-to-go+value":
        return batch_estimates(scores, returns - V)
    if kind == "value":
        return batch_estimates(scores, G - V)
    if kind == "optimal":
        traj_scores = scores.sum(2)  # (B, N, P)
        out = []
        for g, ret in zip(traj_scores, returns):
            out.append((g * (ret[0][:, None] - rb.optimal_baseline(g, ret[0]))).mean(0))
        return torch.stack(out)
    raise ValueError(kind)


KINDS = ["none", "reward-to-go", "mean", "reward-to-go+mean", "value", "reward-to-go+value", "optimal"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.grades("rewards_to_go", "mean_baseline", "optimal_baseline")
def test_every_estimator_is_unbiased(batches, kind):
    mdp, logits = batches[0], batches[1]
    mean, se = mean_and_stderr(estimates(batches, kind))
    exact = exact_gradient(mdp, logits).flatten()
    assert ((mean - exact).abs() < 4 * se).all(), (kind, mean, exact, se)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.grades("rewards_to_go", "mean_baseline", "optimal_baseline")
def test_discounted_estimator_is_the_one_its_comment_names(discounted_batches, kind):
    """With gamma < 1, weights $G(\\tau) - b$ estimate $\\nabla J$; $G_t - b_t$ drop its $\\gamma^t$, as the comment says."""
    mdp, logits = discounted_batches[0], discounted_batches[1]
    mean, se = mean_and_stderr(estimates(discounted_batches, kind))
    with_gamma_t = exact_gradient(mdp, logits).flatten()
    without_gamma_t = exact_gradient_terms(mdp, logits).sum(0).flatten()
    named, other = (without_gamma_t, with_gamma_t) if "reward-to-go" in kind else (with_gamma_t, without_gamma_t)
    assert ((mean - named).abs() < 4 * se).all(), (kind, mean, named, se)
    assert ((mean - other).abs() > 5 * se).any(), (kind, mean, other, se)


@pytest.mark.grades("rewards_to_go", "mean_baseline")
def test_the_plain_batch_mean_would_be_biased(batches):
    """Why leave-one-out: $b$ = the mean including episode i shrinks the estimate by (N-1)/N."""
    mdp, logits, states, scores, returns = batches
    G = returns[:, :1].expand_as(returns)
    mean, se = mean_and_stderr(batch_estimates(scores, G - G.mean(2, keepdim=True)))
    exact = exact_gradient(mdp, logits).flatten()
    assert torch.allclose(mean, exact * (N - 1) / N, atol=4 * float(se.max()))
    assert ((mean - exact).abs() > 4 * se).any()


@pytest.mark.grades("rewards_to_go", "mean_baseline", "optimal_baseline")
def test_baselines_lower_the_variance(batches):
    var = {kind: float(estimates(batches, kind).var(0).sum()) for kind in KINDS}
    assert var["reward-to-go"] < var["none"]
    assert var["mean"] < 0.5 * var["none"]
    assert var["reward-to-go+mean"] < 0.5 * var["reward-to-go"]
    assert var["reward-to-go+value"] < var["reward-to-go+mean"]
    assert var["optimal"] < 0.5 * var["none"], var


@pytest.mark.grades("mean_baseline", "optimal_baseline")
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


@pytest.mark.grades("mean_baseline")
def test_mean_baseline_is_the_mean_of_the_other_running_episodes():
    returns = torch.tensor([[3.0, 5.0, 4.0], [2.0, 4.0, 0.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    b = rb.mean_baseline(returns, mask)
    for t in range(3):
        for i in range(3):
            others = [returns[t, j] for j in range(3) if j != i and mask[t, j]]
            want = sum(others) / len(others) if others else 0.0
            assert float(b[t, i]) == pytest.approx(float(want))


@pytest.mark.grades("optimal_baseline")
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
@pytest.mark.grades("per_episode_gradients", "gradient_variance")
def test_per_episode_gradients_match_autograd_one_episode_at_a_time(discrete):
    torch.manual_seed(0)
    policy = rb.Agent(3, 2, discrete, 8)
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


@pytest.mark.grades("value_loss")
def test_value_loss_ignores_padding():
    values, returns = torch.tensor([[1.0, 2.0], [3.0, 9.0]]), torch.tensor([[2.0, 2.0], [1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert float(rb.value_loss(values, returns, mask)) == pytest.approx(0.5 * (1.0 + 0.0 + 4.0) / 3)


# ## The wiring of `train`: what its loop fed the math, against what the envs did
BASE = {"num_envs": 4, "gamma": 0.9, "hidden_size": 8, "learning_rate": 0.01, "vf_epochs": 3, "eval_episodes": 0}
# episodes of different lengths: the mask matters (the budget: at least one update, N episodes of up to 500 steps)
CARTPOLE = {"env_id": "CartPole-v1", "total_timesteps": 2000}
CLOCK = {"env_id": "tests.fake_envs:Clock-v0", "total_timesteps": 40}  # $s_t = (t, 0)$, $r_t = t + 1$
RUNS = {
    "mean": {**CARTPOLE, "baseline": "mean"},
    "mean-whole-return": {**CARTPOLE, "baseline": "mean", "reward_to_go": False},
    "value": {**CARTPOLE, "baseline": "value"},
    "value-whole-return": {**CARTPOLE, "baseline": "value", "reward_to_go": False},
    "optimal": {**CARTPOLE, "baseline": "optimal"},
    "value-clock": {**CLOCK, "baseline": "value"},
    "value-clock-fixed-step-size": {**CLOCK, "baseline": "value", "anneal_lr": False},
    # Box actions: $\log\pi$ of the unclipped sample, the env gets it clipped to [-1, 1]
    "value-clock-box": {**CLOCK, "env_id": "tests.fake_envs:ClockBox-v0", "baseline": "value"},
    "mean-pendulum": {"env_id": "Pendulum-v1", "total_timesteps": 2000, "baseline": "mean"},
    "optimal-pendulum": {"env_id": "Pendulum-v1", "total_timesteps": 2000, "baseline": "optimal"},
    # only the time limit ends an episode (truncation)
    "value-time-limit": {"env_id": "tests.fake_envs:ConstantReward-v0", "total_timesteps": 50, "baseline": "value"},
}


@pytest.fixture(scope="module", params=list(RUNS))
def run(request, tmp_path_factory):
    """One `train` per configuration, with the envs, the samples, the math, V and both optimizers recorded."""
    overrides = {**BASE, **RUNS[request.param]}
    batch_networks = []  # every nn.Sequential applied to a whole (T, N, obs_dim) batch: V is one of them
    forward = torch.nn.Sequential.forward

    def recording_forward(module, x):
        if x.dim() == 3:
            batch_networks.append(module)
        return forward(module, x)

    with pytest.MonkeyPatch.context() as mp, optimizer_steps() as steps:
        mp.setattr(torch.nn.Sequential, "forward", recording_forward)
        batches = record_batches(mp)
        samples = spy(mp, rb.Agent, "sample")
        gradients = spy(mp, rb, "per_episode_gradients")
        optimal = spy(mp, rb, "optimal_baseline")
        value_losses = spy(mp, rb, "value_loss")
        summary, _ = train_in(tmp_path_factory.mktemp(request.param), rb, **overrides)
    policy = samples[0][0][0]
    critics = {id(m): m for m in batch_networks if all(p is not q for p in m.parameters() for q in policy.parameters())}
    critic = next(iter(critics.values()), None)
    return SimpleNamespace(
        args=make_args(rb, **overrides), summary=summary, batches=batches, samples=samples, gradients=gradients,
        optimal=optimal, value_losses=value_losses, policy=policy, critic=critic, n_critics=len(critics),
        policy_steps=steps_of(steps, policy), critic_steps=[] if critic is None else steps_of(steps, critic),
        complete=[b for b in batches if b.complete],
    )  # fmt: skip


def value_before_fit(run, k: int, batch) -> torch.Tensor:
    """$V(s_t)$, (T, N), of the critic as it was before the fit on batch k (the start of its first step there)."""
    critic = module_at(run.critic, run.critic_steps[k * run.args.vf_epochs])
    with torch.no_grad():
        return critic(torch.as_tensor(batch.s, dtype=torch.float32)).squeeze(-1)


def others_mean(psi: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """$b_t^{(i)}$ = the mean of $\\Psi_t^{(j)}$ over the other episodes j still running at t (0 if none), by loops."""
    out = np.zeros_like(psi)
    for t in range(psi.shape[0]):
        for i in range(psi.shape[1]):
            others = [psi[t, j] for j in range(psi.shape[1]) if j != i and mask[t, j]]
            out[t, i] = np.mean(others) if others else 0.0
    return out


def expected_weights(run, k: int, batch) -> np.ndarray:
    """$(\\Psi_t - b_t)$ masked, for the mean and value baselines."""
    psi = weights_psi(batch, run.args.gamma, run.args.reward_to_go)
    if run.args.baseline == "mean":
        b = others_mean(psi, batch.mask)
    else:
        b = value_before_fit(run, k, batch).double().numpy()
    return (psi - b) * batch.mask


def expected_ascent(run, k: int, batch, policy) -> torch.Tensor:
    """$\\hat{\\nabla}_\\theta J$ recomputed from the envs' records, (P,)."""
    actions = sampled(run.samples, batch)
    if run.args.baseline != "optimal":
        return episode_gradients(policy, batch.s, actions, expected_weights(run, k, batch)).mean(0)
    # $g_i = \nabla_\theta \log p_\theta(\tau_i)$, $b_k^{(i)} = \sum_{j \ne i} g_{jk}^2 G(\tau_j) / \sum_{j \ne i} g_{jk}^2$
    g = episode_gradients(policy, batch.s, actions, batch.mask).double()
    G = torch.as_tensor(weights_psi(batch, run.args.gamma, reward_to_go=False)[0])
    n = len(G)
    b = torch.stack([(g[others] ** 2 * G[others, None]).sum(0) / (g[others] ** 2).sum(0) for others in
                     [[j for j in range(n) if j != i] for i in range(n)]])  # fmt: skip
    return (g * (G[:, None] - b)).mean(0).float()


@pytest.mark.grades("train")
def test_one_update_per_batch_of_whole_fresh_episodes(run):
    """Catches a loop that learns from a batch the budget cut short, skips the reset, or reseeds every batch."""
    assert_whole_batches(
        run.batches,
        len(run.policy_steps),
        run.summary["global_step"],
        run.args.total_timesteps,
        first_seed=run.args.seed,
    )
    assert len(run.gradients) == len(run.policy_steps)
    # only `--baseline optimal` computes the optimal baseline, only `--baseline value` fits V
    assert len(run.optimal) == (len(run.policy_steps) if run.args.baseline == "optimal" else 0)
    assert bool(run.value_losses or run.critic_steps) == (run.args.baseline == "value")


@pytest.mark.grades("train")
def test_the_policy_samples_at_s_t_and_the_env_gets_that_sample(run):
    """Catches sampling from a stale observation, or an env action other than the sample (clipped for Box)."""
    assert_env_got_the_samples(run.batches, run.samples, run.args.env_id)


@pytest.mark.grades("train")
def test_the_per_episode_gradients_get_psi_minus_the_baseline(run):
    """Catches a baseline added instead of subtracted, taken from the wrong episodes or steps, or a wrong mask, psi or gamma."""
    for k, (b, call) in enumerate(zip(run.complete, run.gradients)):
        given = bound(rb.per_episode_gradients, call)
        assert given["policy"] is run.policy
        np.testing.assert_array_equal(given["obs"].numpy(), b.s)
        torch.testing.assert_close(given["actions"], sampled(run.samples, b))
        if run.args.baseline == "optimal":
            # the scores $\nabla_\theta \log p_\theta(\tau_i)$ first: weights 1 while the episode runs
            np.testing.assert_array_equal(given["weights"].numpy(), b.mask)
        else:
            want = expected_weights(run, k, b)  # float32 in the script: a tolerance on the scale of the returns
            np.testing.assert_allclose(given["weights"].numpy(), want, atol=1e-6 * (1 + np.abs(want).max()))


@pytest.mark.parametrize("run", ["optimal", "optimal-pendulum"], indirect=True)
@pytest.mark.grades("train")
def test_the_optimal_baseline_gets_the_scores_and_the_discounted_returns(run):
    """Catches the optimal baseline fed the rewards-to-go, undiscounted returns, or the negated scores."""
    for b, call, scores_call in zip(run.complete, run.optimal, run.gradients):
        given = bound(rb.optimal_baseline, call)
        G = weights_psi(b, run.args.gamma, reward_to_go=False)[0]
        np.testing.assert_allclose(given["G"].numpy(), G, rtol=1e-5)
        torch.testing.assert_close(given["scores"], -scores_call[2])  # $\nabla \log p$, not $\nabla$ of the loss


@pytest.mark.grades("train")
def test_adam_ascends_the_estimate_with_step_size_alpha_k(run):
    """Catches a step along the wrong sign, the optimal baseline's weighting wrong, or a step size other than $\\alpha_k$."""
    for k, (b, step, lr) in enumerate(
        zip(run.complete, run.policy_steps, step_sizes(run.args, run.batches), strict=True)
    ):
        assert step.lr == pytest.approx(lr)
        ascent = expected_ascent(run, k, b, module_at(run.policy, step))
        # float32 in the script: the optimal baseline's $\sum_{j \ne i}$ (all j, less i's own term) loses digits
        # where one episode dominates a parameter's scores, so the tolerance follows the gradient's scale
        scale = 1 + float(ascent.abs().max())
        torch.testing.assert_close(flat_grad(step, run.policy), -ascent, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("run", [name for name in RUNS if RUNS[name]["baseline"] == "value"], indirect=True)
@pytest.mark.grades("train")
def test_V_regresses_on_the_rewards_to_go_at_s_t(run):
    """Catches V fit on the wrong targets, observations or mask, an ascent on its loss, or a critic that is never fit."""
    assert run.n_critics == 1
    E = run.args.vf_epochs
    assert len(run.value_losses) == len(run.critic_steps) == E * len(run.complete)
    for j, (call, step) in enumerate(zip(run.value_losses, run.critic_steps)):
        b = run.complete[j // E]
        given = bound(rb.value_loss, call)
        G = discounted_sums(b.masked_rewards, run.args.gamma)  # $G_t$ whatever `reward_to_go` says
        np.testing.assert_allclose(given["returns"].numpy() * b.mask, G * b.mask, rtol=1e-5)
        np.testing.assert_array_equal(given["mask"].numpy(), b.mask)
        assert step.lr == run.args.vf_learning_rate
        # $\nabla \frac{1}{2} \text{mean}_{\text{valid}} (V(s_t) - G_t)^2$ at the critic this step started from
        critic = module_at(run.critic, step)
        values = critic(torch.as_tensor(b.s, dtype=torch.float32)).squeeze(-1)
        torch.testing.assert_close(given["values"].detach(), values.detach())
        mask, target = torch.as_tensor(b.mask, dtype=torch.float32), torch.as_tensor(G, dtype=torch.float32)
        loss = 0.5 * ((values - target) ** 2 * mask).sum() / mask.sum()
        grads = torch.autograd.grad(loss, list(critic.parameters()))
        torch.testing.assert_close(flat_grad(step, run.critic), torch.cat([g.flatten() for g in grads]))


@pytest.mark.parametrize("baseline", ["mean", "value", "optimal"])
@pytest.mark.parametrize("env_id", BANDITS)
@pytest.mark.grades("train")
def test_a_few_updates_climb_the_bandit(tmp_path, env_id, baseline):
    """Catches a sign error anywhere from the rewards to the parameter step: the policy would walk away from the best action."""
    lr = 0.01 if env_id.endswith("Box-v0") else 0.05
    summaries = [
        train_in(tmp_path, rb, env_id=env_id, seed=seed, baseline=baseline, num_envs=64, total_timesteps=640,
                 learning_rate=lr, hidden_size=8, vf_epochs=5, eval_episodes=1)[0]
        for seed in range(3)
    ]  # fmt: skip
    assert_climbs(env_id, summaries)
