"""actor_critic.py's math, each piece against a second computation of the same thing; the actor's
update direction against the exact policy gradient of a tiny tabular MDP."""

from dataclasses import replace

import pytest
import torch

from tests.helpers import load_script, train_in
from tests.tabular_mdp import TabularMDP, exact_gradient, exact_Q, exact_V, mean_and_stderr, sample_episodes

ac = load_script("actor_critic.py")


def test_td_target_and_error_by_hand():
    # Three transitions: running on, terminated, truncated (time limit: s_{t+1} is the true last state).
    gamma = 0.9
    rewards, next_values = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([5.0, 7.0, 4.0])
    terminated = torch.tensor([0.0, 1.0, 0.0])
    targets = ac.td_target(rewards, next_values, terminated, gamma)
    assert targets.tolist() == pytest.approx([1 + 0.9 * 5, 2.0, 3 + 0.9 * 4])
    values = torch.tensor([4.0, 1.0, 6.0])
    assert (targets - values).tolist() == pytest.approx([1.5, 1.0, 0.6])


def test_critic_step_is_omega_plus_alpha_delta_grad_q():
    """The gradient of the critic loss is $-\\delta \\nabla_\\omega Q_\\omega(s_t,a_t)$, averaged over the batch;
    nothing flows into the bootstrap target."""
    torch.manual_seed(0)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)  # linear critic $Q_\omega(x) = \omega^T x$
    x, x_next = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    rewards, terminated = torch.randn(4, dtype=torch.float64), torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    targets = ac.td_target(rewards, x_next @ w, terminated, 0.95)
    values = x @ w
    ac.critic_loss(values, targets).backward()
    delta = (targets - values).detach()
    torch.testing.assert_close(w.grad, -(delta[:, None] * x).mean(0))


def test_actor_step_is_score_times_weight():
    """Gradient of the actor loss: $-\\Psi_t \\nabla_\\theta \\log\\pi(a_t|s_t)$ with the softmax score
    $e_{a} - \\pi(\\cdot|s)$ in closed form, and the weight $\\Psi$ held constant."""
    logits = torch.tensor([[0.3, -1.0, 2.0], [1.0, 0.0, 0.5]], dtype=torch.float64, requires_grad=True)
    actions = torch.tensor([2, 0])
    weights = torch.tensor([1.5, -2.0], dtype=torch.float64, requires_grad=True)
    log_prob, entropy = ac.categorical_log_prob_entropy(logits, actions)
    ac.actor_loss(log_prob, weights, entropy, ent_coef=0.0).backward()
    score = torch.nn.functional.one_hot(actions, 3).double() - torch.softmax(logits.detach(), -1)
    torch.testing.assert_close(logits.grad, -weights.detach()[:, None] * score / 2)
    assert weights.grad is None


def actor_gradient_estimates(mdp, logits, episodes, weights, n_batches=40):
    """The script's actor update direction $-\\nabla_\\theta$ `actor_loss`, rescaled to a sum over the H steps
    of an episode, on each of `n_batches` batches of episodes; returns the mean and standard error."""
    states, actions = episodes["states"], episodes["actions"]
    n, H = states.shape
    estimates = []
    for idx in torch.arange(n).chunk(n_batches):
        theta = logits.clone().requires_grad_(True)
        log_prob, entropy = ac.categorical_log_prob_entropy(theta[states[idx]], actions[idx])
        (grad,) = torch.autograd.grad(-ac.actor_loss(log_prob, weights[idx], entropy, 0.0), theta)
        estimates.append(grad * H)  # the mean over (episode, t) pairs, times H: sum over t, mean over episodes
    return mean_and_stderr(torch.stack(estimates))


R = torch.tensor([[2.0, -1.0], [-1.0, 1.0], [0.5, -2.0]], dtype=torch.float64)


@pytest.fixture(scope="module")
def tabular():
    # Rewards of both signs and far apart, so that the gradient stands well out of the sampling noise.
    mdp = replace(TabularMDP.random(n_states=3, n_actions=2, horizon=4, seed=1), R=R)
    logits = torch.tensor([[0.5, -0.5], [-1.0, 0.3], [0.2, 0.8]], dtype=torch.float64)
    episodes = sample_episodes(mdp, logits, 20_000, torch.Generator().manual_seed(0))
    return mdp, logits, episodes


def assert_unbiased(mean, stderr, exact):
    assert exact.abs().max() > 10 * stderr.max(), "the test has no power: the gradient is lost in the noise"
    assert ((mean - exact).abs() <= 4 * stderr + 1e-9).all(), (mean, exact, stderr)


def test_q_critic_actor_direction_is_the_policy_gradient(tabular):
    """Policy gradient theorem: with the exact $Q^\\pi_t$ as critic, $\\mathbb{E}[\\sum_t \\nabla\\log\\pi(a_t|s_t) Q_t(s_t,a_t)] = \\nabla J$."""
    mdp, logits, ep = tabular
    H = mdp.horizon
    q = exact_Q(mdp, logits)  # (H, S, A)
    weights = q[torch.arange(H), ep["states"], ep["actions"]]  # (n, H): Q_t(s_t, a_t)
    mean, stderr = actor_gradient_estimates(mdp, logits, ep, weights)
    assert_unbiased(mean, stderr, exact_gradient(mdp, logits))
    # A wrong critic (the immediate reward instead of Q) is caught: it points elsewhere.
    wrong, _ = actor_gradient_estimates(mdp, logits, ep, ep["rewards"])
    assert ((wrong - exact_gradient(mdp, logits)).abs() > 4 * stderr).any()


def test_v_critic_td_error_direction_is_the_policy_gradient(tabular):
    """With the exact $V^\\pi_t$, the TD error $\\delta_t = r_t + \\gamma V_{t+1}(s_{t+1}) - V_t(s_t)$ (0 after the
    terminal step H) has $\\mathbb{E}[\\delta_t|s_t,a_t] = A^\\pi_t(s_t,a_t)$, so its actor direction is $\\nabla J$ too."""
    mdp, logits, ep = tabular
    n, H = ep["states"].shape
    v = exact_V(mdp, logits)  # (H, S)
    values = v[torch.arange(H), ep["states"]]  # V_t(s_t)
    # V_{t+1}(s_{t+1}); after the last step any number (here 1e6), which termination must zero.
    next_values = torch.cat([values[:, 1:], torch.full((n, 1), 1e6, dtype=values.dtype)], dim=1)
    terminated = torch.zeros(n, H, dtype=values.dtype)
    terminated[:, -1] = 1.0
    delta = ac.td_target(ep["rewards"], next_values, terminated, mdp.gamma) - values
    mean, stderr = actor_gradient_estimates(mdp, logits, ep, delta)
    assert_unbiased(mean, stderr, exact_gradient(mdp, logits))


@pytest.mark.parametrize("discrete", [True, False])
def test_critic_shapes_and_the_pair_forward(discrete):
    torch.manual_seed(2)
    agent = ac.Agent(4, 3, discrete, 16, critic="q")
    obs, next_obs = torch.randn(5, 4), torch.randn(5, 4)
    with torch.no_grad():
        actions, next_actions = agent.sample_from(agent.actor(obs)), agent.sample_from(agent.actor(next_obs))
    if discrete:  # one output per action, Q(s, a) picked out of it
        q_all = agent.critic(obs)
        assert q_all.shape == (5, 3)
        torch.testing.assert_close(agent.critic_value(obs, actions), q_all[torch.arange(5), actions])
    else:  # Q takes the pair [s, a]
        assert agent.critic[0].in_features == 4 + 3
        torch.testing.assert_close(agent.critic_value(obs, actions), agent.critic(torch.cat([obs, actions], 1))[:, 0])
    values, next_values = agent.critic_pair(obs, actions, next_obs, next_actions)
    torch.testing.assert_close(values, agent.critic_value(obs, actions))
    torch.testing.assert_close(next_values, agent.critic_value(next_obs, next_actions))
    assert values.requires_grad and not next_values.requires_grad


@pytest.mark.parametrize("critic", ["v", "q"])
def test_truncation_is_not_termination(critic, tmp_path):
    """Reward 1 forever, cut at 5 steps by a time limit: the critic must approach 1/(1-gamma) = 10,
    not the about 2.6 that treating the time limit as termination would teach."""
    gamma = 0.9
    _, run_dir = train_in(
        tmp_path, ac, env_id="tests.fake_envs:ConstantReward-v0", critic=critic, total_timesteps=4_000, num_envs=8,
        gamma=gamma, critic_learning_rate=1e-2, anneal_lr=False, save_model=True, eval_episodes=1,
    )  # fmt: skip
    agent = ac.Agent(2, 2, True, 64, critic)
    agent.load_state_dict(torch.load(next(run_dir.glob("*.pt")))["agent"])
    obs = torch.tensor([[0.5, -0.5], [0.5, -0.5]])
    values = agent.critic_value(obs, torch.tensor([0, 1]))
    torch.testing.assert_close(values, torch.full((2,), 1 / (1 - gamma)), rtol=0.1, atol=0)


def test_nan_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="global_step="):
        train_in(tmp_path, ac, env_id="tests.fake_envs:NaNReward-v0", total_timesteps=200, eval_episodes=1)
