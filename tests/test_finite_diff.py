"""finite_diff.py: finite differences of the exact J of a tiny MDP match its exact gradient."""

import pytest
import torch

from tests.helpers import load_script, read_progress, train_in
from tests.tabular_mdp import TabularMDP, exact_gradient, exact_J

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
def test_matches_the_exact_gradient(mdp_and_theta, central):
    mdp, theta = mdp_and_theta
    exact = exact_gradient(mdp, theta.view(3, 2)).flatten()
    assert torch.allclose(fd_of_exact_J(mdp, theta, 1e-6, central), exact, atol=1e-6)


def test_error_is_first_order_forward_second_order_central(mdp_and_theta):
    mdp, theta = mdp_and_theta
    exact = exact_gradient(mdp, theta.view(3, 2)).flatten()

    def err(eps, central):
        return float((fd_of_exact_J(mdp, theta, eps, central) - exact).abs().max())

    assert err(1e-2, False) / err(1e-3, False) == pytest.approx(10, rel=0.2)
    assert err(1e-2, True) / err(1e-3, True) == pytest.approx(100, rel=0.2)


def test_perturbed_parameters_layout():
    theta = torch.tensor([1.0, 2.0])
    assert torch.equal(fd.perturbed_parameters(theta, 0.5, False), torch.tensor([[1.0, 2.0], [1.5, 2.0], [1.0, 2.5]]))
    central = fd.perturbed_parameters(theta, 0.5, True)
    assert torch.equal(central, torch.tensor([[1.5, 2.0], [1.0, 2.5], [0.5, 2.0], [1.0, 1.5], [1.0, 2.0]]))


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
