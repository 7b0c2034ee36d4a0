"""actor_critic.py's math, each piece against a second computation of the same thing; the actor's
update direction against the exact policy gradient of a tiny tabular MDP; the wiring of `train`, what
it feeds that math at every step, against what the fake envs are known to produce."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests import fake_envs
from tests.helpers import load_script, train_in
from tests.tabular_mdp import TabularMDP, exact_gradient, exact_Q, exact_V, mean_and_stderr, sample_episodes
from tests.test_a2c import (
    agent_at,
    assert_replayed_step,
    assert_same_grads,
    assert_samples_follow_the_policy,
    assert_uphill,
    bandit_policy,
    by_agent,
    clock_progress,
    clock_rollout,
    read_episodes,
    traced_train,
)

ac = load_script("actor_critic.py")


@pytest.mark.grades("td_target")
def test_td_target_and_error_by_hand():
    # Three transitions: running on, terminated, truncated (time limit: s_{t+1} is the true last state).
    gamma = 0.9
    rewards, next_values = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([5.0, 7.0, 4.0])
    terminated = torch.tensor([0.0, 1.0, 0.0])
    targets = ac.td_target(rewards, next_values, terminated, gamma)
    assert targets.tolist() == pytest.approx([1 + 0.9 * 5, 2.0, 3 + 0.9 * 4])
    values = torch.tensor([4.0, 1.0, 6.0])
    assert (targets - values).tolist() == pytest.approx([1.5, 1.0, 0.6])


@pytest.mark.grades("critic_loss")
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


@pytest.mark.grades("actor_loss")
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


@pytest.mark.grades("actor_loss", "categorical_log_prob_entropy")
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


@pytest.mark.grades("actor_loss", "td_target")
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
@pytest.mark.grades("Agent.__init__", "Agent.critic_value", "Agent.critic_pair")
def test_critic_shapes_and_the_pair_forward(discrete):
    torch.manual_seed(2)
    agent = ac.Agent(4, 3, discrete, 16, critic="q")
    obs, next_obs = torch.randn(5, 4), torch.randn(5, 4)
    with torch.no_grad():
        actions, next_actions = agent.sample(obs), agent.sample(next_obs)
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


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.grades("Agent.sample")
def test_sampling_follows_the_policy(discrete):
    """Catches a sampler that draws from another distribution than the one whose log-probability is trained."""
    torch.manual_seed(0)
    agent = ac.Agent(3, 3 if discrete else 1, discrete, 8, critic="v")
    with torch.no_grad():
        agent.actor[-1].bias.copy_(torch.tensor([2.0, 0.0, -1.0]) if discrete else torch.tensor([0.3]))
        if not discrete:
            agent.log_std.fill_(np.log(0.5))
    assert_samples_follow_the_policy(agent, torch.randn(1, 3), num_actions=3)


@pytest.mark.parametrize("critic", ["v", "q"])
@pytest.mark.grades("train")
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


@pytest.mark.grades("train")
def test_nan_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="global_step="):
        train_in(tmp_path, ac, env_id="tests.fake_envs:NaNReward-v0", total_timesteps=200, eval_episodes=1)


@pytest.mark.grades("true_next_obs")
def test_true_next_obs_takes_final_obs_where_an_episode_ended():
    """Catches a reset observation passed on as $s_{t+1}$ where an episode ended, or the caller's array overwritten."""
    obs = np.array([[0.0, 0.0], [4.0, 1.0]], dtype=np.float32)
    info = {"final_obs": np.array([np.array([5.0, 1.0]), None], dtype=object), "_final_obs": np.array([1, 0])}
    np.testing.assert_array_equal(ac.true_next_obs(obs, info), [[5, 1], [4, 1]])
    np.testing.assert_array_equal(obs[0], [0, 0])  # the reset observation, to act on next
    np.testing.assert_array_equal(ac.true_next_obs(obs, {}), obs)


# ## The wiring of `train`, on StaggeredClock-v0 (test_a2c.py)
# 2 envs for 10 steps, so 10 updates. Env 0: an episode truncated at steps 0-4, one terminated at 5-7, a third
# one at 8-9; env 1: terminated at 0-2, truncated at 3-7. gamma = 0.5 makes a stray gamma^t factor plain to see.
STEPS, ENVS = 10, 2


def clock_run(tmp_path, monkeypatch, spied=(), **overrides) -> SimpleNamespace:
    """`traced_train` on StaggeredClock-v0, 10 steps."""
    run = traced_train(
        tmp_path, monkeypatch, ac, spied, **{
            "env_id": "StaggeredClock-v0", "num_envs": ENVS, "total_timesteps": STEPS * ENVS, "gamma": 0.5,
            "eval_episodes": 0, **overrides,
        },
    )  # fmt: skip
    assert len(run.steps) == STEPS and len(run.samples) == STEPS * (2 if run.args.critic == "q" else 1)
    return run


def expected_step(run: SimpleNamespace, t: int) -> dict:
    """Update t recomputed: the nets before it, $s_t$ and $a_t$ (and $a_{t+1}$) as sampled, $r_t$, the true $s_{t+1}$
    and terminated from Clock's rules, the critic's value, the TD target $y_t$ and error $\\delta_t$."""
    clock = {key: v[t] for key, v in clock_rollout(STEPS, ENVS).items()}
    net = agent_at(run.agent, run.steps[t]["before"])
    q = run.args.critic == "q"
    act = run.samples[2 * t] if q else run.samples[t]
    obs, action = act["obs"].clone(), act["result"].clone()
    next_action = run.samples[2 * t + 1]["result"].clone() if q else action
    next_obs = torch.from_numpy(clock["next_obs"])
    with torch.no_grad():
        next_value = net.critic_value(next_obs, next_action)  # V(s_{t+1}) or Q(s_{t+1}, a_{t+1})
    rewards, terminated = torch.from_numpy(clock["rewards"]), torch.from_numpy(clock["terminated"])
    target = rewards + run.args.gamma * (1 - terminated) * next_value
    value = net.critic_value(obs, action)
    return {**clock, "net": net, "obs": obs, "action": action, "next_value": next_value, "value": value,
            "target": target, "delta": (target - value).detach()}  # fmt: skip


@pytest.mark.parametrize("critic", ["v", "q"])
@pytest.mark.grades("train")
def test_acts_in_s_t_and_draws_the_next_action_in_the_true_s_t1_before_the_update(critic, tmp_path, monkeypatch):
    """Catches a stale or reset observation, a_{t+1} drawn in s_t or in the reset state instead of the
    true s_{t+1}, or drawn with the parameters after the update instead of before it."""
    run = clock_run(tmp_path, monkeypatch, critic=critic)
    clock = clock_rollout(STEPS, ENVS)
    for t in range(STEPS):
        before = by_agent(run.agent, run.steps[t]["before"])
        calls = run.samples[2 * t : 2 * t + 2] if critic == "q" else [run.samples[t]]
        for call, key in zip(calls, ("obs", "next_obs")):
            np.testing.assert_array_equal(call["obs"].numpy(), clock[key][t], err_msg=f"step {t}")
            assert all(torch.equal(p, b) for p, b in zip(call["params"], before)), f"step {t}: drawn after the update"


@pytest.mark.parametrize("env", ["StaggeredClock-v0", "StaggeredClockBox-v0"])
@pytest.mark.parametrize("critic", ["v", "q"])
@pytest.mark.grades("train")
def test_td_target_gets_r_and_the_critic_at_the_true_next_state_and_action(critic, env, tmp_path, monkeypatch):
    """Catches bootstrapping from the reset observation at a truncation, termination not stopping the
    bootstrap, a value of s_t or of a_t in place of s_{t+1}, a_{t+1}, and gamma not passed through."""
    run = clock_run(tmp_path, monkeypatch, spied=("td_target",), critic=critic, env_id=env)
    assert len(run.calls["td_target"]) == STEPS
    for t, call in enumerate(run.calls["td_target"]):
        expected = expected_step(run, t)
        for key in ("rewards", "terminated"):
            np.testing.assert_array_equal(call[key].numpy(), expected[key], err_msg=f"step {t}: {key}")
        torch.testing.assert_close(call["next_values"], expected["next_value"], msg=lambda m, t=t: f"step {t}: {m}")
        assert not call["next_values"].requires_grad and call["gamma"] == 0.5


@pytest.mark.parametrize("env", ["StaggeredClock-v0", "StaggeredClockBox-v0"])
@pytest.mark.parametrize("critic", ["v", "q"])
@pytest.mark.grades("train")
def test_actor_weight_is_q_or_delta_without_gamma_t_and_critic_regresses_on_y(critic, env, tmp_path, monkeypatch):
    """Catches a wrong or negated actor weight (Q(s_t,a_t), or delta for the V critic, as is: no gamma^t),
    log pi of the wrong state or action, and a critic loss with the wrong prediction or target."""
    run = clock_run(
        tmp_path, monkeypatch, spied=("actor_loss", "critic_loss"), critic=critic, env_id=env,
        ent_coef=0.05,
    )  # fmt: skip
    for t, (actor, critic_call) in enumerate(zip(run.calls["actor_loss"], run.calls["critic_loss"], strict=True)):
        e = expected_step(run, t)
        log_prob, entropy = e["net"].log_prob_entropy(e["obs"], e["action"])
        weight = e["value"] if critic == "q" else e["delta"]
        msg = lambda m, t=t: f"step {t}: {m}"  # noqa: E731
        torch.testing.assert_close(actor["weights"].detach(), weight.detach(), msg=msg)
        torch.testing.assert_close(actor["log_prob"], log_prob, msg=msg)
        torch.testing.assert_close(actor["entropy"], entropy, msg=msg)
        torch.testing.assert_close(critic_call["values"], e["value"], msg=msg)
        torch.testing.assert_close(critic_call["targets"].detach(), e["target"], msg=msg)
        assert actor["ent_coef"] == 0.05 and actor["log_prob"].requires_grad and critic_call["values"].requires_grad


@pytest.mark.parametrize("env", ["StaggeredClock-v0", "StaggeredClockBox-v0"])
@pytest.mark.parametrize("critic", ["v", "q"])
@pytest.mark.grades("train")
def test_each_step_is_one_descent_step_of_algorithm_2(critic, env, tmp_path, monkeypatch):
    """Catches any wrong input, sign or factor of either update, the actor's gradient reaching the critic
    (a weight not detached), a gradient through the TD target, the step sizes of actor and critic swapped
    or not annealed, and a missing zero_grad or step. The weight of step t has no gamma^t, as commented."""
    anneal = env == "StaggeredClock-v0"
    run = clock_run(
        tmp_path, monkeypatch, critic=critic, env_id=env, ent_coef=0.05, learning_rate=0.01,
        critic_learning_rate=0.03, anneal_lr=anneal,
    )  # fmt: skip
    names = [name for name, _ in run.agent.named_parameters()]
    expected_grads = []
    for t in range(STEPS):
        e = expected_step(run, t)
        log_prob, entropy = e["net"].log_prob_entropy(e["obs"], e["action"])
        weight = (e["value"] if critic == "q" else e["delta"]).detach()
        actor = -(log_prob * weight).mean() - 0.05 * entropy.mean()
        critic_loss = 0.5 * (e["target"] - e["value"]).pow(2).mean()
        grads = torch.autograd.grad(actor + critic_loss, list(e["net"].parameters()))
        recorded = by_agent(run.agent, run.steps[t]["grad"])
        assert_same_grads(recorded, grads, names)
        # The replay below feeds Adam the recorded gradients, just checked equal to these: Adam's first step,
        # lr g / (|g| + eps), would magnify a last-bit difference in a tiny component past its tolerance.
        expected_grads.append({id(p): g for p, g in zip(run.agent.parameters(), recorded)})
    # Two step sizes, alpha_theta for the actor (and log sigma), alpha_omega for the critic, both to 0 linearly.
    critic_ids = {id(p) for p in run.agent.critic.parameters()}
    actor_ids = {id(p) for p in run.agent.parameters()} - critic_ids
    assert [set(group) for group in run.steps[0]["groups"]] == [actor_ids, critic_ids]
    fractions = [1 - t / STEPS if anneal else 1.0 for t in range(STEPS)]
    lrs = [[0.01 * fraction, 0.03 * fraction] for fraction in fractions]
    assert_replayed_step(run.steps, expected_grads, torch.optim.Adam, lrs)


@pytest.mark.grades("train")
def test_progress_logs_the_clock_episodes(tmp_path, monkeypatch):
    """Catches the step count, or an episode's return or length, not summed or not reset per episode and env."""
    run = clock_run(tmp_path, monkeypatch)
    assert read_episodes(run.run_dir) == clock_progress(STEPS, ENVS)


@pytest.mark.grades("train")
def test_box_env_gets_the_clipped_action(tmp_path, monkeypatch):
    """Catches the env stepped with the unclipped action (the updates get the sampled one: tested above)."""
    run = traced_train(
        tmp_path, monkeypatch, ac, ("td_target",), env_id="tests.fake_envs:BanditBox-v0", num_envs=8,
        total_timesteps=40, eval_episodes=0,
    )  # fmt: skip
    actions = torch.stack([c["result"] for c in run.samples])[..., 0].numpy()
    rewards = np.stack([c["rewards"].numpy() for c in run.calls["td_target"]])
    assert (np.abs(actions) > 1).any(), "no sample fell outside the box: the test cannot see the clipping"
    np.testing.assert_allclose(rewards, -((np.clip(actions, -1, 1) - fake_envs.BanditEnv.BEST_ACTION) ** 2))


@pytest.mark.parametrize("env", ["Bandit-v0", "BanditBox-v0"])
@pytest.mark.parametrize("critic", ["v", "q"])
@pytest.mark.grades("train")
def test_a_few_updates_move_the_policy_toward_the_best_action(critic, env, tmp_path, monkeypatch):
    """Catches a sign error anywhere between the reward and the step: it moves the policy away instead."""
    # Seeds 1-15 all take P(best arm) from 1/3 to 0.39 or more and the mean from about 0 to 0.19 or more
    # toward 0.5. The Q critic weighs the actor by Q(s, a), with no baseline, and must learn Q first:
    # more updates, a faster critic and no annealing (Bandit: 40 updates, P(best arm) 0.42 or more; BanditBox:
    # 30, as 40 take the mean past 0.5, to 0.77-1.34).
    if critic == "v":
        settings = {"total_timesteps": 160, "learning_rate": 1e-3, "critic_learning_rate": 1e-2}
    else:
        steps = 320 if env == "Bandit-v0" else 240
        settings = {"total_timesteps": steps, "learning_rate": 1e-3, "critic_learning_rate": 5e-2, "anneal_lr": False}
    for seed in (1, 2, 3):
        before, after = bandit_policy(
            tmp_path, monkeypatch, ac, f"tests.fake_envs:{env}", seed, critic=critic, num_envs=8, **settings
        )
        assert_uphill(before, after, discrete=env == "Bandit-v0", seed=seed)
