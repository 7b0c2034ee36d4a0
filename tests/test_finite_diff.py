"""finite_diff.py: finite differences of the exact J of a tiny MDP match its exact gradient; the wiring of `train`."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.helpers import load_script, make_args, read_progress, spy, train_in
from tests.tabular_mdp import TabularMDP, exact_gradient, exact_J
from tests.wiring_monte_carlo import (
    BANDITS,
    assert_climbs,
    assert_whole_batches,
    bound,
    optimizer_steps,
    record_batches,
)

fd = load_script("finite_diff.py")


@pytest.fixture
def mdp_and_theta():
    mdp = TabularMDP.random(n_states=3, n_actions=2, horizon=4, seed=0)
    theta = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return mdp, theta


def fd_of_exact_J(mdp, theta, epsilon, central):
    thetas = fd.perturbed_parameters(theta, epsilon, central)
    J = torch.stack([exact_J(mdp, t.view(3, 2)) for t in thetas])
    return fd.finite_difference_gradient(J, epsilon, central)


@pytest.mark.parametrize("central", [False, True], ids=["forward", "central"])
@pytest.mark.grades("perturbed_parameters", "finite_difference_gradient")
def test_matches_the_exact_gradient(mdp_and_theta, central):
    mdp, theta = mdp_and_theta
    exact = exact_gradient(mdp, theta.view(3, 2)).flatten()
    assert torch.allclose(fd_of_exact_J(mdp, theta, 1e-6, central), exact, atol=1e-6)


@pytest.mark.grades("perturbed_parameters", "finite_difference_gradient")
def test_error_is_first_order_forward_second_order_central(mdp_and_theta):
    mdp, theta = mdp_and_theta
    exact = exact_gradient(mdp, theta.view(3, 2)).flatten()

    def err(eps, central):
        return float((fd_of_exact_J(mdp, theta, eps, central) - exact).abs().max())

    assert err(1e-2, False) / err(1e-3, False) == pytest.approx(10, rel=0.2)
    assert err(1e-2, True) / err(1e-3, True) == pytest.approx(100, rel=0.2)


@pytest.mark.grades("perturbed_parameters")
def test_perturbed_parameters_layout():
    theta = torch.tensor([1.0, 2.0])
    assert torch.equal(fd.perturbed_parameters(theta, 0.5, False), torch.tensor([[1.0, 2.0], [1.5, 2.0], [1.0, 2.5]]))
    central = fd.perturbed_parameters(theta, 0.5, True)
    assert torch.equal(central, torch.tensor([[1.5, 2.0], [1.0, 2.5], [0.5, 2.0], [1.0, 1.5], [1.0, 2.0]]))


@pytest.mark.grades("linear_policy", "num_params")
def test_linear_policy_is_Ws_plus_c_per_parameter_vector():
    torch.manual_seed(0)
    obs_dim, action_dim, K, M = 3, 2, 4, 5
    n = fd.num_params(obs_dim, action_dim, discrete=False)
    assert n == 2 * 3 + 2 + 2 and fd.num_params(obs_dim, action_dim, discrete=True) == 8
    thetas, obs = torch.randn(K, n), torch.randn(K, M, obs_dim)
    f, log_std = fd.linear_policy(thetas, obs, action_dim)
    for k in range(K):
        W, c, ls = thetas[k, :6].view(2, 3), thetas[k, 6:8], thetas[k, 8:]
        assert torch.allclose(f[k], obs[k] @ W.T + c, atol=1e-6)
        assert torch.equal(log_std[k, 0], ls)


@pytest.mark.grades("train")
def test_common_random_numbers_lower_the_variance_of_the_estimate(tmp_path):
    """The same seeds for every J: two rollouts of one theta agree exactly, the FD differences are small."""
    runs = {}
    for crn in (True, False):
        (tmp_path / str(crn)).mkdir()
        _, run_dir = train_in(
            tmp_path / str(crn), fd, env_id="CartPole-v1", num_envs=2, total_timesteps=3000, eval_episodes=1,
            common_random_numbers=crn, central=True, epsilon=1e-9, seed=0,
        )  # fmt: skip
        rows = read_progress(run_dir)
        # the first batch: 2n+1 = 21 estimates of J of 2 episodes each; with epsilon ~ 0 all 21 thetas are one policy
        first = sorted(rows[:42], key=lambda r: int(r["global_step"]))
        runs[crn] = sorted(float(r["episodic_return"]) for r in first)
    assert len(set(runs[True])) <= 2  # two seeds, every theta the same two episodes
    assert len(set(runs[False])) > 5


# ## The wiring of `train`: what its loop fed the math, against what the envs did
BASE = {"num_envs": 4, "learning_rate": 0.05, "eval_episodes": 0}
BANDIT = {"env_id": "tests.fake_envs:Bandit-v0", "total_timesteps": 130}  # K = 10 groups of 4 one-step episodes
BANDIT_BOX = {"env_id": "tests.fake_envs:BanditBox-v0", "epsilon": 0.5, "total_timesteps": 70}  # K = 5
RUNS = {
    # $\epsilon = 40$: most perturbed groups all but certainly pick one arm (or never pick one)
    "bandit": {**BANDIT, "epsilon": 40.0},
    "bandit-central": {**BANDIT, "epsilon": 40.0, "central": True, "total_timesteps": 250},
    "bandit-box": BANDIT_BOX,
    "bandit-box-independent": {**BANDIT_BOX, "common_random_numbers": False},
    # episodes of different lengths: what the mask must cut off
    "cartpole": {"env_id": "CartPole-v1", "num_envs": 2, "epsilon": 0.1, "total_timesteps": 1500},
    # only the time limit ends an episode (truncation)
    "time-limit": {"env_id": "tests.fake_envs:ConstantReward-v0", "num_envs": 2, "total_timesteps": 150},
}


@pytest.fixture(scope="module", params=list(RUNS))
def run(request, tmp_path_factory):
    """One `train` per configuration, with the envs, the linear policy's outputs, the math and Adam recorded."""
    overrides = {**BASE, **RUNS[request.param]}
    with pytest.MonkeyPatch.context() as mp, optimizer_steps() as steps:
        batches = record_batches(mp)
        policy_calls = spy(mp, fd, "linear_policy")
        gradients = spy(mp, fd, "finite_difference_gradient")
        summary, _ = train_in(tmp_path_factory.mktemp(request.param), fd, **overrides)
    args = make_args(fd, **overrides)
    K = len(batches[0].obs[0]) // args.num_envs
    return SimpleNamespace(
        args=args, summary=summary, batches=batches, policy_calls=policy_calls, gradients=gradients, steps=steps,
        complete=[b for b in batches if b.complete], K=K, M=args.num_envs,
    )  # fmt: skip


def expected_thetas(theta: torch.Tensor, epsilon: float, central: bool) -> torch.Tensor:
    """(K, n): forward $\\theta, \\theta + \\epsilon e_1, \\dots$; central $\\theta + \\epsilon e_k$ (all k), $\\theta - \\epsilon e_k$ (all k), $\\theta$."""
    n = len(theta)
    rows = [theta + epsilon * torch.eye(n, dtype=theta.dtype)[k] for k in range(n)]
    if central:
        return torch.stack(rows + [theta - epsilon * torch.eye(n, dtype=theta.dtype)[k] for k in range(n)] + [theta])
    return torch.stack([theta] + rows)


def linear_outputs(thetas: torch.Tensor, obs: np.ndarray, action_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """$f(s) = W s + c$ and $\\log\\sigma$ of every env j, run by group j // M, from $\\theta = (W \\text{ row by row}, c, \\log\\sigma)$."""
    K, (KM, d) = len(thetas), obs.shape
    theta = thetas.numpy().repeat(KM // K, axis=0)  # row j: the parameters of env j's group
    W = theta[:, : action_dim * d].reshape(KM, action_dim, d)
    c, log_std = theta[:, action_dim * d : action_dim * (d + 1)], theta[:, action_dim * (d + 1) :]
    return np.einsum("jad,jd->ja", W, obs) + c, log_std


def batch_parameters(run):
    """(batch, theta it ran around) for each whole batch: $\\theta$ is where that batch's Adam step started."""
    return [(b, step.values[0]) for b, step in zip(run.complete, run.steps, strict=True)]


@pytest.mark.grades("train")
def test_one_update_per_batch_of_whole_episodes(run):
    """Catches a loop that updates on a batch the budget cut short, or counts steps after an episode's end."""
    assert_whole_batches(run.batches, len(run.steps), run.summary["global_step"], run.args.total_timesteps)
    assert len(run.gradients) == len(run.steps)


@pytest.mark.grades("train")
def test_group_k_runs_theta_plus_its_perturbation(run):
    """Catches a perturbation other than +/- epsilon e_k, or envs fed the outputs of another group or observation."""
    for b, theta in batch_parameters(run):
        thetas = expected_thetas(theta, run.args.epsilon, run.args.central)
        for t in range(len(b.actions)):
            f, log_std = run.policy_calls[b.first_step + t][2]
            want_f, want_log_std = linear_outputs(thetas, b.s[t], f.shape[-1])
            np.testing.assert_allclose(f.reshape(len(want_f), -1).numpy(), want_f, rtol=1e-9, atol=1e-9)
            if log_std.numel():  # one $\log\sigma$ per group
                np.testing.assert_allclose(log_std.reshape(run.K, -1).numpy(), want_log_std[:: run.M], rtol=1e-12)


@pytest.mark.parametrize("run", ["bandit", "bandit-central"], indirect=True)
@pytest.mark.grades("train")
def test_each_env_acts_with_its_own_groups_policy(run):
    """Catches actions handed to the envs in another order than the groups' outputs (on the forced arms of epsilon = 40)."""
    for b, theta in batch_parameters(run):
        f, _ = linear_outputs(expected_thetas(theta, run.args.epsilon, run.args.central), b.s[0], 3)
        p = torch.softmax(torch.as_tensor(f), -1).numpy()
        chosen = p[np.arange(len(p)), b.actions[0]]
        assert (chosen > 1e-6).all()  # no env took an action its group all but never takes
        assert (p.max(1) > 1 - 1e-6).sum() >= run.M * 5  # and the test has teeth: many envs had one sure action


@pytest.mark.grades("train")
def test_J_is_the_mean_return_of_each_groups_episodes(run):
    """Catches J estimates paired with the wrong group, rewards summed past an episode's end, or the wrong epsilon."""
    for b, call in zip(run.complete, run.gradients, strict=True):
        given = bound(fd.finite_difference_gradient, call)
        np.testing.assert_allclose(given["J"].numpy(), b.episode_returns.reshape(run.K, run.M).mean(1), rtol=1e-12)
        assert given["epsilon"] == run.args.epsilon and given["central"] == run.args.central


@pytest.mark.grades("train")
def test_adam_ascends_the_finite_difference_gradient(run):
    """Catches a descent (a sign), J differences in the wrong order or scale, or the wrong step size."""
    eps = run.args.epsilon
    for b, step in zip(run.complete, run.steps, strict=True):
        J = torch.as_tensor(b.episode_returns.reshape(run.K, run.M).mean(1))
        n = len(step.values[0])
        if run.args.central:  # $(J(\theta + \epsilon e_k) - J(\theta - \epsilon e_k)) / 2\epsilon$
            ascent = (J[:n] - J[n : 2 * n]) / (2 * eps)
        else:  # $(J(\theta + \epsilon e_k) - J(\theta)) / \epsilon$
            ascent = (J[1:] - J[0]) / eps
        assert step.lr == run.args.learning_rate
        torch.testing.assert_close(step.grads[0], -ascent)


@pytest.mark.grades("train")
def test_common_random_numbers_share_the_env_seeds(run):
    """Catches perturbed groups that get other env seeds than theta's group, or a seed shared by all episodes."""
    for b in run.complete:
        seeds = np.array(b.seed).reshape(run.K, run.M)
        if run.args.common_random_numbers:
            assert (seeds == seeds[0]).all() and len(set(seeds[0])) == run.M
        else:
            assert len(set(seeds.flatten())) == run.K * run.M


@pytest.mark.parametrize("run", ["bandit-box", "bandit-box-independent"], indirect=True)
@pytest.mark.grades("train")
def test_common_random_numbers_share_the_action_noise(run):
    """Catches perturbed groups that draw other Gaussian noise than theta's group, or independent runs that share it."""
    for b, theta in batch_parameters(run):
        f, log_std = linear_outputs(expected_thetas(theta, run.args.epsilon, run.args.central), b.s[0], 1)
        a = b.actions[0].reshape(-1, 1)
        # $\xi = (a - f(s)) / \sigma$ of each env's action, (K, M); unknown where the action was clipped
        xi = np.where(np.abs(a) < 1, (a - f) / np.exp(log_std), np.nan).reshape(run.K, run.M)
        seen = (~np.isnan(xi)).sum(0) >= 2  # episodes m with an unclipped action in two groups or more
        assert seen.sum() >= 2
        spread = np.nanmax(xi[:, seen], 0) - np.nanmin(xi[:, seen], 0)  # of each such m over the K groups
        if run.args.common_random_numbers:
            np.testing.assert_allclose(spread, 0, atol=1e-4)
        else:
            assert (spread > 0.05).all()


@pytest.mark.parametrize("env_id", BANDITS)
@pytest.mark.grades("train")
def test_sampled_actions_follow_the_linear_policy(tmp_path, monkeypatch, env_id):
    """Catches a Gumbel-max or Gaussian sampler that draws from another distribution than softmax(Ws + c) or N(Ws + c, sigma^2)."""
    box = env_id.endswith("Box-v0")
    # $f(s) = W s + c$ on the bandit's $s = (1, -1)$: logits (0.5, -0.5, 1.0), or mean 0.3 with sigma 0.2
    if box:  # $W = (0.1, -0.1)$, $c = 0.1$, $\log\sigma = \log 0.2$
        theta = torch.tensor([0.1, -0.1, 0.1, np.log(0.2)])
    else:  # $W = ((0.3, -0.2), (-0.2, 0.3), (0.4, -0.1))$, $c = (0, 0, 0.5)$
        theta = torch.tensor([0.3, -0.2, -0.2, 0.3, 0.4, -0.1, 0.0, 0.0, 0.5])
    # a checkpoint as finite_diff.py saves one: its parts, and what they were saved for
    spaces = [2, 1, False] if box else [2, 3, True]  # the bandit's observation size, action size, discrete
    meta = {"algo": "finite_diff", "env_id": env_id, "spaces": spaces}
    torch.save({"theta": theta.double(), "meta": meta}, tmp_path / "theta.pt")
    batches = record_batches(monkeypatch)
    # a step size of 1e-12: theta stays put; no common random numbers: every episode is a new sample
    train_in(tmp_path, fd, env_id=env_id, model_path=str(tmp_path / "theta.pt"), learning_rate=1e-12, epsilon=1e-9,
             common_random_numbers=False, num_envs=50, total_timesteps=2000, eval_episodes=0)  # fmt: skip
    actions = np.concatenate([b.actions[0] for b in batches if b.complete])
    assert len(actions) == 2000
    if box:
        z = (actions[:, 0] - 0.3) / 0.2
        assert abs(z.mean()) < 4 / np.sqrt(len(z)) and abs(z.std() - 1) < 0.06
    else:
        freq = np.bincount(actions, minlength=3) / len(actions)
        np.testing.assert_allclose(freq, torch.softmax(torch.tensor([0.5, -0.5, 1.0]), 0).numpy(), atol=0.035)


@pytest.mark.parametrize("env_id", BANDITS)
@pytest.mark.grades("train")
def test_a_few_updates_climb_the_bandit(tmp_path, env_id):
    """Catches a sign error anywhere from the returns to the parameter step: the policy would walk away from the best action."""
    box = env_id.endswith("Box-v0")
    summaries = [
        train_in(tmp_path, fd, env_id=env_id, seed=seed, num_envs=16, epsilon=0.1, learning_rate=0.015 if box else 0.1,
                 total_timesteps=(4 if box else 10) * 16 * 10, eval_episodes=1)[0]
        for seed in range(3)
    ]  # fmt: skip
    assert_climbs(env_id, summaries)
