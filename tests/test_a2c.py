"""a2c.py's math, each piece against a second computation of the same thing."""

import numpy as np
import pytest
import torch

from tests.helpers import load_script, train_in
from tests.test_ppo import naive_gae, random_batch

a2c = load_script("a2c.py")


def naive_nstep_returns(rewards, next_values, terminated, dones, gamma):
    """$G_t = \\sum_{k=t}^{e} \\gamma^{k-t} r_k + \\gamma^{e+1-t} V(s_{e+1})$, e the end of the episode or the rollout,
    the bootstrap dropped where the episode terminated."""
    T, N = rewards.shape
    G = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            for k in range(t, T):
                G[t, n] += gamma ** (k - t) * rewards[k, n]
                if dones[k, n] or k == T - 1:
                    if not terminated[k, n]:
                        G[t, n] += gamma ** (k + 1 - t) * next_values[k, n]
                    break
    return G


def run_nstep(rewards, next_values, terminated, dones, gamma):
    return a2c.nstep_returns(rewards, next_values, terminated, dones, gamma)


@pytest.mark.parametrize("gamma", [0.99, 0.5, 1.0])
def test_nstep_returns_match_naive_loop(gamma):
    rewards, values, next_values, terminated, dones = random_batch(seed=3)
    expected = naive_nstep_returns(rewards, next_values, terminated, dones, gamma)
    np.testing.assert_allclose(run_nstep(rewards, next_values, terminated, dones, gamma), expected, atol=1e-10)


def test_nstep_returns_closed_form_without_episode_ends():
    """One episode running through the rollout: $G_t = \\sum_k \\gamma^{k-t} r_k + \\gamma^{T-t} V(s_T)$."""
    gamma, T = 0.9, 5
    rewards = np.arange(1.0, T + 1).reshape(T, 1)
    next_values = np.full((T, 1), 100.0)  # only the last one, V(s_T), may be used
    next_values[-1] = 7.0
    zeros = np.zeros((T, 1))
    expected = [sum(gamma ** (k - t) * rewards[k, 0] for k in range(t, T)) + gamma ** (T - t) * 7.0 for t in range(T)]
    np.testing.assert_allclose(run_nstep(rewards, next_values, zeros, zeros, gamma)[:, 0], expected, atol=1e-10)


def test_nstep_truncation_bootstraps_and_termination_does_not():
    # One env, two steps: step 0 truncated with V(final)=5, step 1 terminated with V(final)=7.
    r, next_v = np.array([[1.0], [1.0]]), np.array([[5.0], [7.0]])
    term, done = np.array([[0.0], [1.0]]), np.array([[1.0], [1.0]])
    assert a2c.nstep_returns(r, next_v, term, done, 0.5).flatten().tolist() == [1.0 + 0.5 * 5.0, 1.0]


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.5)])
def test_gae_matches_naive_double_loop(gamma, lam):
    batch = random_batch(seed=4)
    np.testing.assert_allclose(a2c.gae(*batch, gamma, lam), naive_gae(*batch, gamma, lam), atol=1e-10)


def test_gae_with_lambda_1_is_the_nstep_advantage():
    """The two paths of `train` agree: GAE(1) = $G_t - V(s_t)$ with the n-step $G_t$."""
    rewards, values, next_values, terminated, dones = batch = random_batch(seed=5)
    advantages = a2c.gae(*batch, 0.97, 1.0)
    np.testing.assert_allclose(
        advantages, run_nstep(rewards, next_values, terminated, dones, 0.97) - values, atol=1e-10
    )


def test_loss_against_closed_form_and_its_gradients():
    torch.manual_seed(0)
    log_prob = torch.randn(6, dtype=torch.float64, requires_grad=True)
    values = torch.randn(6, dtype=torch.float64, requires_grad=True)
    entropy = torch.rand(6, dtype=torch.float64, requires_grad=True)
    returns = torch.randn(6, dtype=torch.float64)
    advantages = (returns - values).detach()
    loss, pg, vl, ent = a2c.a2c_loss(log_prob, entropy, values, advantages, returns, vf_coef=0.3, ent_coef=0.02)
    assert pg.item() == pytest.approx(-(log_prob * advantages).mean().item())
    assert vl.item() == pytest.approx(0.5 * ((returns - values) ** 2).mean().item())
    assert loss.item() == pytest.approx(pg.item() + 0.3 * vl.item() - 0.02 * entropy.mean().item())
    loss.backward()
    # d/dlogp = -A/n, d/dV = -c1 (G - V)/n: the target G is a constant, d/dS = -c2/n.
    torch.testing.assert_close(log_prob.grad, -advantages / 6)
    torch.testing.assert_close(values.grad, -0.3 * (returns - values.detach()) / 6)
    torch.testing.assert_close(entropy.grad, torch.full((6,), -0.02 / 6, dtype=torch.float64))


@pytest.mark.parametrize("discrete", [True, False])
def test_both_losses_reach_the_shared_trunk(discrete):
    torch.manual_seed(1)
    agent = a2c.Agent(4, 2, discrete, 16)
    obs = torch.randn(10, 4)
    with torch.no_grad():
        actions = agent.sample(obs)
    returns = torch.randn(10)

    def grads(which: str) -> dict:
        agent.zero_grad()
        log_prob, entropy, values = agent.evaluate(obs, actions)
        _, pg, vl, _ = a2c.a2c_loss(log_prob, entropy, values, returns - values, returns, 0.5, 0.0)
        (pg if which == "policy" else vl).backward()
        return {name: p.grad for name, p in agent.named_parameters()}

    policy, value = grads("policy"), grads("value")
    assert any(name.startswith("trunk.") for name in policy)
    for name in policy:
        if name.startswith("trunk."):  # both losses shape the shared first layers
            assert policy[name].abs().sum() > 0 and value[name].abs().sum() > 0, name
    # and each head only gets the gradient of its own loss
    assert all(value[n] is None or value[n].abs().sum() == 0 for n in value if n.startswith("actor."))
    assert all(policy[n] is None or policy[n].abs().sum() == 0 for n in policy if n.startswith("critic."))
    # `value` and `evaluate` compute the same V through the same trunk
    torch.testing.assert_close(agent.value(obs), agent.evaluate(obs, actions)[2])


def test_sampling_follows_the_policy():
    torch.manual_seed(0)
    agent = a2c.Agent(3, 3, True, 8)
    with torch.no_grad():
        agent.actor.bias.copy_(torch.tensor([2.0, 0.0, -1.0]))
        obs = torch.randn(1, 3)
        probs = torch.softmax(agent.actor(agent.trunk(obs)), -1)[0]
        draws = agent.sample(obs.expand(40_000, 3))
    freq = torch.bincount(draws, minlength=3).double() / 40_000
    torch.testing.assert_close(freq, probs.double(), atol=0.01, rtol=0)


def test_truncation_is_not_termination(tmp_path):
    """Reward 1 forever, cut at 5 steps by a time limit: V(s) must approach 1/(1-gamma) = 10,
    not the about 2.6 that treating the time limit as termination would teach."""
    gamma = 0.9
    _, run_dir = train_in(
        tmp_path, a2c, env_id="tests.fake_envs:ConstantReward-v0", total_timesteps=8_000, num_envs=4,
        num_steps=5, gamma=gamma, learning_rate=3e-3, optimizer="adam", anneal_lr=False, vf_coef=1.0,
        save_model=True, eval_episodes=1,
    )  # fmt: skip
    agent = a2c.Agent(2, 2, True, 64)
    agent.load_state_dict(torch.load(next(run_dir.glob("*.pt")))["agent"])
    assert agent.value(torch.tensor([[0.5, -0.5]])).item() == pytest.approx(1 / (1 - gamma), rel=0.1)


def test_nan_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="global_step="):
        train_in(tmp_path, a2c, env_id="tests.fake_envs:NaNReward-v0", total_timesteps=400, num_envs=2, eval_episodes=1)
