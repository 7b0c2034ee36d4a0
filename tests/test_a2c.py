"""a2c.py's math, each piece against a second computation of the same thing; the wiring of `train`,
what it feeds that math, against what the fake envs are known to produce."""

import copy
import inspect
from contextlib import contextmanager
from functools import partial
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from tests import fake_envs
from tests import wiring_ppo_common as wiring
from tests.helpers import load_script, make_args, read_progress, train_in
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
@pytest.mark.grades("nstep_returns")
def test_nstep_returns_match_naive_loop(gamma):
    rewards, values, next_values, terminated, dones = random_batch(seed=3)
    expected = naive_nstep_returns(rewards, next_values, terminated, dones, gamma)
    np.testing.assert_allclose(run_nstep(rewards, next_values, terminated, dones, gamma), expected, atol=1e-10)


@pytest.mark.grades("nstep_returns")
def test_nstep_returns_closed_form_without_episode_ends():
    """One episode running through the rollout: $G_t = \\sum_k \\gamma^{k-t} r_k + \\gamma^{T-t} V(s_T)$."""
    gamma, T = 0.9, 5
    rewards = np.arange(1.0, T + 1).reshape(T, 1)
    next_values = np.full((T, 1), 100.0)  # only the last one, V(s_T), may be used
    next_values[-1] = 7.0
    zeros = np.zeros((T, 1))
    expected = [sum(gamma ** (k - t) * rewards[k, 0] for k in range(t, T)) + gamma ** (T - t) * 7.0 for t in range(T)]
    np.testing.assert_allclose(run_nstep(rewards, next_values, zeros, zeros, gamma)[:, 0], expected, atol=1e-10)


@pytest.mark.grades("nstep_returns")
def test_nstep_truncation_bootstraps_and_termination_does_not():
    # One env, two steps: step 0 truncated with V(final)=5, step 1 terminated with V(final)=7.
    r, next_v = np.array([[1.0], [1.0]]), np.array([[5.0], [7.0]])
    term, done = np.array([[0.0], [1.0]]), np.array([[1.0], [1.0]])
    assert a2c.nstep_returns(r, next_v, term, done, 0.5).flatten().tolist() == [1.0 + 0.5 * 5.0, 1.0]


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.5)])
@pytest.mark.grades("gae")
def test_gae_matches_naive_double_loop(gamma, lam):
    batch = random_batch(seed=4)
    np.testing.assert_allclose(a2c.gae(*batch, gamma, lam), naive_gae(*batch, gamma, lam), atol=1e-10)


@pytest.mark.grades("gae")
def test_gae_with_lambda_1_is_the_nstep_advantage():
    """The two paths of `train` agree: GAE(1) = $G_t - V(s_t)$ with the n-step $G_t$."""
    rewards, values, next_values, terminated, dones = batch = random_batch(seed=5)
    advantages = a2c.gae(*batch, 0.97, 1.0)
    np.testing.assert_allclose(
        advantages, run_nstep(rewards, next_values, terminated, dones, 0.97) - values, atol=1e-10
    )


@pytest.mark.parametrize("gamma,lam", [(0.97, 1.0), (0.99, 0.95), (0.9, 0.5)])
@pytest.mark.grades("advantages_and_returns")
def test_advantages_and_returns_are_the_naive_ones_and_differ_by_v(gamma, lam):
    """$\\lambda = 1$: $G_t$ by the naive n-step sum; $\\lambda < 1$: $\\hat{A}_t$ by the naive GAE double loop.
    Either way the value target is $G_t = \\hat{A}_t + V(s_t)$."""
    rewards, values, next_values, terminated, dones = batch = random_batch(seed=6)
    advantages, returns = a2c.advantages_and_returns(*batch, gamma, lam)
    if lam == 1.0:
        expected = naive_nstep_returns(rewards, next_values, terminated, dones, gamma) - values
    else:
        expected = naive_gae(*batch, gamma, lam)
    np.testing.assert_allclose(advantages, expected, atol=1e-10)
    np.testing.assert_allclose(returns, expected + values, atol=1e-10)


@pytest.mark.grades("a2c_loss")
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
@pytest.mark.grades("Agent.__init__", "Agent.value", "Agent.log_prob_entropy_value")
def test_both_losses_reach_the_shared_trunk(discrete):
    torch.manual_seed(1)
    agent = a2c.Agent(4, 2, discrete, 16)
    obs = torch.randn(10, 4)
    with torch.no_grad():
        actions = agent.sample(obs)
    returns = torch.randn(10)

    def grads(which: str) -> dict:
        agent.zero_grad()
        log_prob, entropy, values = agent.log_prob_entropy_value(obs, actions)
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
    # the one-pass heads are the actor's and the critic's on the same trunk
    phi = agent.trunk(obs)
    log_prob, entropy, values = agent.log_prob_entropy_value(obs, actions)
    torch.testing.assert_close(values, agent.critic(phi).squeeze(-1))
    torch.testing.assert_close(agent.value(obs), values)
    out = agent.actor(phi)
    want = a2c.categorical_log_prob_entropy(out, actions) if discrete else a2c.gaussian_log_prob_entropy(
        out, agent.log_std, actions)  # fmt: skip
    torch.testing.assert_close((log_prob, entropy), want)


def log_pi(agent: torch.nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """$\\log\\pi(a|s)$ of an a2c Agent (one pass with V) or of an actor_critic one: the helpers below serve both."""
    one_pass = getattr(agent, "log_prob_entropy_value", None)
    return (one_pass or agent.log_prob_entropy)(obs, actions)[0]


def assert_samples_follow_the_policy(agent, obs: torch.Tensor, num_actions: int = 1, n: int = 40_000):
    r"""`agent.sample` in state `obs` (1 x obs_dim) against the policy's own probabilities, or its mean and std
    (one action dimension: the density at the mean is $1/(\sigma\sqrt{2\pi})$)."""
    torch.manual_seed(0)
    with torch.no_grad():
        draws = agent.sample(obs.expand(n, -1))
        if agent.discrete:
            probs = log_pi(agent, obs.expand(num_actions, -1), torch.arange(num_actions)).exp()
            freq = torch.bincount(draws, minlength=num_actions).double() / n
            torch.testing.assert_close(freq, probs.double(), atol=0.01, rtol=0)
        else:
            mean = agent.mode(obs)
            std = torch.exp(-log_pi(agent, obs, mean) - 0.5 * np.log(2 * np.pi))
            torch.testing.assert_close(draws.mean(0), mean[0], atol=0.02 * std.item(), rtol=0)
            torch.testing.assert_close(draws.std(0), std, atol=0, rtol=0.02)


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.grades("Agent.sample")
def test_sampling_follows_the_policy(discrete):
    """Catches a sampler that draws from another distribution than the one whose log-probability is trained."""
    torch.manual_seed(0)
    agent = a2c.Agent(3, 3 if discrete else 1, discrete, 8)
    with torch.no_grad():
        agent.actor.bias.copy_(torch.tensor([2.0, 0.0, -1.0]) if discrete else torch.tensor([0.3]))
        if not discrete:
            agent.log_std.fill_(np.log(0.5))
    assert_samples_follow_the_policy(agent, torch.randn(1, 3), num_actions=3)


@pytest.mark.grades("train")
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


@pytest.mark.grades("train")
def test_nan_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="global_step="):
        train_in(tmp_path, a2c, env_id="tests.fake_envs:NaNReward-v0", total_timesteps=400, num_envs=2, eval_episodes=1)


@pytest.mark.grades("a2c_loss")
def test_a2c_loss_keeps_the_actor_gradient_out_of_the_critic():
    """Advantages handed over with their graph ($G_t - V(s_t)$): only the value loss may reach $V$."""
    values = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    log_prob = torch.tensor([-0.3, -1.2, -0.7], requires_grad=True)
    returns = torch.tensor([1.0, 1.0, -1.0])
    a2c.a2c_loss(log_prob, torch.zeros(3), values, returns - values, returns, vf_coef=0.5, ent_coef=0.0)[0].backward()
    torch.testing.assert_close(values.grad, -0.5 * (returns - values.detach()) / 3)


@pytest.mark.grades("true_next_obs")
def test_true_next_obs_takes_final_obs_where_an_episode_ended():
    """$s_{t+1}$ is `final_obs` where `_final_obs` is set, the returned (reset) observation elsewhere."""
    obs = np.array([[0.0, 0.0], [4.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    info = {"final_obs": np.array([None, None, np.array([3.0, 0.0])], dtype=object), "_final_obs": np.array([0, 0, 1])}
    np.testing.assert_array_equal(a2c.true_next_obs(obs, info), [[0, 0], [4, 1], [3, 0]])
    np.testing.assert_array_equal(obs[2], [0, 1])  # the caller's array is left alone
    np.testing.assert_array_equal(a2c.true_next_obs(obs, {}), obs)


# ## The wiring of `train`
# Tools shared with test_actor_critic.py: Clock-v0 with its sub-envs out of step, and what it gives, derived
# from its rules alone; a recorder of what `train` passes a function; a recorder of every optimizer step;
# the network as it was before a step.
class StaggeredClockEnv(fake_envs.ClockEnv):
    """Clock-v0 whose sub-envs are out of step: reset with seed s, it starts at episode s mod 2. In a vector env
    seeded 1 (sub-env i gets seed 1 + i), env 0 starts with a truncated episode and env 1 with a terminated one,
    so a loop that mixes up its sub-envs feeds the math numbers a test can tell apart."""

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.k = seed % 2 - 1
        return super().reset(seed=seed, options=options)


gym.register("StaggeredClock-v0", entry_point=StaggeredClockEnv)
gym.register("StaggeredClockBox-v0", entry_point=StaggeredClockEnv, kwargs={"continuous": True})


def clock_rollout(num_steps: int, num_envs: int, seed: int = 1) -> dict:
    """StaggeredClock-v0 over its first `num_steps` steps, as (step, env) arrays: $s_t$, the true $s_{t+1}$, $r_t$,
    terminated, done."""
    env = fake_envs.ClockEnv
    columns = []
    for i in range(num_envs):
        t, k, rows = 0, (seed + i) % 2, []
        for _ in range(num_steps):
            terminated = k % 2 == 0 and t + 1 == env.TERMINATE_AT
            truncated = k % 2 == 1 and t + 1 == env.TRUNCATE_AT
            rows.append(((t, k % 2), (t + 1, k % 2), t + 1, terminated, terminated or truncated))
            t, k = (0, k + 1) if terminated or truncated else (t + 1, k)
        columns.append([np.array(column, dtype=np.float32) for column in zip(*rows)])
    keys = ("obs", "next_obs", "rewards", "terminated", "dones")
    return {key: np.stack([column[j] for column in columns], axis=1) for j, key in enumerate(keys)}


def record_calls(monkeypatch, owner, name: str) -> list[dict]:
    """Every call of `owner.name` while `train` runs, as {parameter name: value, "result": value}.

    numpy arguments are copied (the loop refills its buffers); a method's call also keeps a copy
    of its module's parameters at that moment under "params".
    """
    original = getattr(owner, name)
    signature = inspect.signature(original)
    calls = []

    def wrapper(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs).arguments
        call = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in arguments.items()}
        if isinstance(call.get("self"), torch.nn.Module):
            call["params"] = [p.detach().clone() for p in call["self"].parameters()]
        call["result"] = original(*args, **kwargs)
        calls.append(call)
        return call["result"]

    monkeypatch.setattr(owner, name, wrapper)
    return calls


@contextmanager
def optimizer_steps():
    """Every optimizer step taken inside the block: its parameter groups (as ids) and their learning rates, and,
    by parameter (keyed by `id`), its value before and after the step and the gradient the step was given."""
    steps = []

    def params(optimizer):
        return [p for group in optimizer.param_groups for p in group["params"]]

    def before(optimizer, args, kwargs):
        steps.append({
            "lr": [group["lr"] for group in optimizer.param_groups],
            "groups": [[id(p) for p in group["params"]] for group in optimizer.param_groups],
            "before": {id(p): p.detach().clone() for p in params(optimizer)},
            "grad": {id(p): p.grad.detach().clone() for p in params(optimizer) if p.grad is not None},
        })  # fmt: skip

    def after(optimizer, args, kwargs):
        steps[-1]["after"] = {id(p): p.detach().clone() for p in params(optimizer)}

    handles = [
        register_optimizer_step_pre_hook(before),
        register_optimizer_step_post_hook(after),
    ]
    try:
        yield steps
    finally:
        for handle in handles:
            handle.remove()


def agent_at(agent: torch.nn.Module, values) -> torch.nn.Module:
    """A copy of `agent` with its parameters set to `values`: a list in `parameters()` order, or {id: value}."""
    net = copy.deepcopy(agent)
    originals = list(agent.parameters())
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.copy_(values[id(originals[i])] if isinstance(values, dict) else values[i])
    return net


def by_agent(agent: torch.nn.Module, per_id: dict) -> list:
    """{id(parameter): value} of an optimizer step as a list in `agent.parameters()` order."""
    return [per_id.get(id(p)) for p in agent.parameters()]


def assert_same_grads(actual: list, expected: list, names: list[str]):
    for name, a, e in zip(names, actual, expected):
        assert a is not None, f"{name} got no gradient"
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"gradient of {name}: {m}")


def assert_replayed_step(steps: list, expected_grads: list[dict], make_optimizer, lrs: list[list[float]]):
    """Each recorded step is what `make_optimizer(param_groups)`, given the expected gradients and learning
    rates, does from the recorded parameters: the right optimizer, stepped once per update, downhill."""
    groups = [[steps[0]["before"][k].clone().requires_grad_(True) for k in keys] for keys in steps[0]["groups"]]
    params = {k: p for keys, group in zip(steps[0]["groups"], groups) for k, p in zip(keys, group)}
    optimizer = make_optimizer([{"params": group} for group in groups])
    for k, (step, grads, lr) in enumerate(zip(steps, expected_grads, lrs)):
        assert step["lr"] == pytest.approx(lr), f"update {k}: step sizes"
        with torch.no_grad():
            for key, p in params.items():
                p.copy_(step["before"][key])
                p.grad = grads[key].clone()
        for group, group_lr in zip(optimizer.param_groups, lr):
            group["lr"] = group_lr
        optimizer.step()
        for key, p in params.items():
            torch.testing.assert_close(
                step["after"][key], p.detach(), rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"update {k}: {m}"
            )


def traced_train(tmp_path, monkeypatch, module, spied=(), **overrides) -> SimpleNamespace:
    """`module.train` with `overrides`, and what it did: its args, its agent, its `Agent.sample` calls, the calls
    of the module's functions named in `spied`, its optimizer steps, its run directory."""
    samples = record_calls(monkeypatch, module.Agent, "sample")
    calls = {name: record_calls(monkeypatch, module, name) for name in spied}
    with optimizer_steps() as steps:
        _, run_dir = train_in(tmp_path, module, **overrides)
    return SimpleNamespace(args=make_args(module, **overrides), agent=samples[0]["self"], samples=samples,
                           calls=calls, steps=steps, run_dir=run_dir)  # fmt: skip


# The A2C runs on StaggeredClock-v0: 2 envs, T = 10 steps per update, so one rollout holds in each env an
# episode that terminates, one cut by its time limit and one cut by the rollout's end. Env 0: truncated at
# steps 0-4, terminated at 5-7, cut at 8-9; env 1: terminated at 0-2, truncated at 3-7, cut at 8-9.
T_CLOCK, N_CLOCK = 10, 2


def clock_run(tmp_path, monkeypatch, spied=(), iterations=1, **overrides) -> SimpleNamespace:
    """`traced_train` on StaggeredClock-v0, `iterations` updates."""
    run = traced_train(
        tmp_path, monkeypatch, a2c, spied, **{
            "env_id": "StaggeredClock-v0", "num_envs": N_CLOCK, "num_steps": T_CLOCK, "gamma": 0.9,
            "total_timesteps": iterations * T_CLOCK * N_CLOCK, "eval_episodes": 0, **overrides,
        },
    )  # fmt: skip
    assert len(run.steps) == iterations and len(run.samples) == iterations * T_CLOCK
    return run


def expected_update(run: SimpleNamespace, k: int) -> dict:
    """Update k recomputed: the net before it, $s_t$ and $a_t$ as sampled, $r_t$ and the masks from Clock's rules,
    $V$ of the true $s_{t+1}$, the n-step returns (or GAE) and the advantages by the naive loops."""
    args = run.args
    net = agent_at(run.agent, run.steps[k]["before"])
    rollout = run.samples[k * T_CLOCK : (k + 1) * T_CLOCK]
    clock = {key: v[k * T_CLOCK :] for key, v in clock_rollout((k + 1) * T_CLOCK, N_CLOCK).items()}
    obs, actions = torch.stack([c["obs"] for c in rollout]), torch.stack([c["result"] for c in rollout])
    with torch.no_grad():
        values = net.value(obs).double().numpy()
        next_values = net.value(torch.from_numpy(clock["next_obs"])).double().numpy()
    r, term, dones = clock["rewards"], clock["terminated"], clock["dones"]
    if args.scale_rewards:  # $r_t$ over the std of the discounted returns $G_t$ of all rollouts so far, this one's too
        seen = clock_rollout((k + 1) * T_CLOCK, N_CLOCK)
        G = [wiring.discounted_returns(seen["rewards"][:, i], seen["dones"][:, i], args.gamma) for i in range(N_CLOCK)]
        r = r / np.sqrt(wiring.running_moments(np.concatenate(G))[1] + 1e-8)
    if args.gae_lambda == 1.0:
        returns = naive_nstep_returns(r, next_values, term, dones, args.gamma)
        advantages = returns - values
    else:
        advantages = naive_gae(r, values, next_values, term, dones, args.gamma, args.gae_lambda)
        returns = advantages + values
    if args.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    return {**clock, "rewards": r, "net": net, "sampled_obs": obs, "actions": actions, "values": values, "next_values": next_values,
            "returns": returns, "advantages": advantages}  # fmt: skip


@pytest.mark.grades("train")
def test_rollout_acts_in_s_t_with_the_policy_of_the_update(tmp_path, monkeypatch):
    """Catches acting on a stale or reset observation, or with a policy updated during the rollout."""
    run = clock_run(tmp_path, monkeypatch, iterations=2)
    expected_obs = clock_rollout(2 * T_CLOCK, N_CLOCK)["obs"]
    for t, call in enumerate(run.samples):
        np.testing.assert_array_equal(call["obs"].numpy(), expected_obs[t], err_msg=f"step {t}")
        for p, before in zip(call["params"], by_agent(run.agent, run.steps[t // T_CLOCK]["before"])):
            assert torch.equal(p, before), f"step {t} acted with parameters other than those of its update"


@pytest.mark.parametrize("gae_lambda,scale_rewards", [(1.0, True), (0.8, False)])
@pytest.mark.grades("train", "RewardScaler.__init__", "RewardScaler.__call__")
def test_returns_get_rewards_masks_and_v_of_the_true_next_state(gae_lambda, scale_rewards, tmp_path, monkeypatch):
    """Catches a reset observation bootstrapped at a truncation, terminated/done masks swapped or
    dropped, V(s_t) in place of V(s_{t+1}), gamma or lambda not passed through, and rewards not divided
    (or divided when told not to) by the running std of the discounted return."""
    run = clock_run(tmp_path, monkeypatch, spied=("nstep_returns", "gae"), iterations=2, gae_lambda=gae_lambda,
                    scale_rewards=scale_rewards)  # fmt: skip
    calls = run.calls["nstep_returns"] + run.calls["gae"]  # GAE(1) is the n-step advantage: either will do
    assert len(calls) == 2 and (gae_lambda == 1.0 or len(run.calls["gae"]) == 2)
    for k, call in enumerate(calls):
        expected = expected_update(run, k)
        for key in ("terminated", "dones"):
            np.testing.assert_array_equal(call[key], expected[key], err_msg=f"update {k}: {key}")
        for key in ("rewards", "next_values", "values") if "values" in call else ("rewards", "next_values"):
            np.testing.assert_allclose(call[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=f"update {k}: {key}")
        assert call["gamma"] == 0.9 and call.get("gae_lambda", 1.0) == gae_lambda


@pytest.mark.parametrize(
    "env,gae_lambda,norm_adv", [("StaggeredClock-v0", 1.0, False), ("StaggeredClockBox-v0", 0.8, True)]
)
@pytest.mark.grades("train")
def test_loss_gets_log_pi_of_the_taken_action_and_the_advantages(env, gae_lambda, norm_adv, tmp_path, monkeypatch):
    """Catches a negated or unnormalized advantage, returns or values of the wrong states, log-probabilities
    of the wrong (or clipped) actions, and c1 and c2 swapped."""
    run = clock_run(
        tmp_path, monkeypatch, spied=("a2c_loss",), env_id=env, gae_lambda=gae_lambda,
        norm_adv=norm_adv, vf_coef=0.3, ent_coef=0.07,
    )  # fmt: skip
    (call,) = run.calls["a2c_loss"]
    expected = expected_update(run, 0)
    log_prob, entropy, _ = expected["net"].log_prob_entropy_value(expected["sampled_obs"], expected["actions"])
    close = {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(call["log_prob"].detach(), log_prob.detach(), **close)
    torch.testing.assert_close(call["entropy"].detach(), entropy.detach(), **close)
    for key in ("values", "returns", "advantages"):
        np.testing.assert_allclose(call[key].detach().numpy(), expected[key], **close, err_msg=key)
    assert call["log_prob"].requires_grad and call["values"].requires_grad
    assert (call["vf_coef"], call["ent_coef"]) == (0.3, 0.07)


@pytest.mark.parametrize(
    "overrides",
    [
        {"env_id": "StaggeredClock-v0"},
        {
            "env_id": "StaggeredClockBox-v0",
            "optimizer": "adam",
            "gae_lambda": 0.8,
            "norm_adv": True,
            "anneal_lr": False,
        },
    ],
    ids=["rmsprop-nstep", "adam-gae-box"],
)
@pytest.mark.grades("train")
def test_each_update_is_one_clipped_descent_step_on_the_a2c_loss(overrides, tmp_path, monkeypatch):
    """Catches any wrong input, sign or factor of the loss, an actor gradient reaching the critic, the critic
    cut off the shared trunk, a missing zero_grad, clip or step, and a wrong step size or schedule.
    Each t of the rollout weighs the same: the gamma^t of the discounted policy gradient is dropped."""
    run = clock_run(tmp_path, monkeypatch, iterations=2, vf_coef=0.3, ent_coef=0.07, learning_rate=0.01, **overrides)
    args = run.args
    names = [name for name, _ in run.agent.named_parameters()]
    expected_grads, clipped = [], []
    for k in range(2):
        e = expected_update(run, k)
        log_prob, entropy, _ = e["net"].log_prob_entropy_value(e["sampled_obs"], e["actions"])
        values = e["net"].value(e["sampled_obs"])
        advantages, returns = torch.from_numpy(e["advantages"]).float(), torch.from_numpy(e["returns"]).float()
        loss = (
            -(log_prob * advantages).mean()
            + args.vf_coef * 0.5 * (returns - values).pow(2).mean()
            - args.ent_coef * entropy.mean()
        )
        grads = torch.autograd.grad(loss, list(e["net"].parameters()))
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads)).item()
        clipped.append(norm > args.max_grad_norm)
        grads = [g * min(1.0, args.max_grad_norm / (norm + 1e-6)) for g in grads]
        assert_same_grads(by_agent(run.agent, run.steps[k]["grad"]), grads, names)
        expected_grads.append({id(p): g for p, g in zip(run.agent.parameters(), grads)})
    assert any(clipped), "the test cannot see the gradient clipping"
    if args.optimizer == "rmsprop":
        optimizer = partial(torch.optim.RMSprop, alpha=args.rmsprop_alpha, eps=args.optimizer_eps)
    else:
        optimizer = partial(torch.optim.Adam, eps=args.optimizer_eps)
    # annealed, the step size decays linearly to 0: all of it, then 1/2 of it in a run of two updates
    assert_replayed_step(run.steps, expected_grads, optimizer, [[0.01], [0.005 if args.anneal_lr else 0.01]])


def clock_progress(num_steps: int, num_envs: int) -> list[tuple[int, float, int]]:
    """The rows (global_step, return, length) progress.csv must hold after `num_steps` steps of StaggeredClock-v0."""
    clock, rows = clock_rollout(num_steps, num_envs), []
    returns, lengths = np.zeros(num_envs), np.zeros(num_envs, dtype=int)
    for t in range(num_steps):
        returns, lengths = returns + clock["rewards"][t], lengths + 1
        for i in np.flatnonzero(clock["dones"][t]):
            rows.append(((t + 1) * num_envs, float(returns[i]), int(lengths[i])))
            returns[i], lengths[i] = 0.0, 0
    return rows


def read_episodes(run_dir) -> list[tuple[int, float, int]]:
    return [
        (int(r["global_step"]), float(r["episodic_return"]), int(r["episodic_length"])) for r in read_progress(run_dir)
    ]


@pytest.mark.grades("train")
def test_progress_logs_the_clock_episodes(tmp_path, monkeypatch):
    """Catches the step count, or an episode's return or length, not summed or not reset per episode and env."""
    run = clock_run(tmp_path, monkeypatch, iterations=2)
    assert read_episodes(run.run_dir) == clock_progress(2 * T_CLOCK, N_CLOCK)


@pytest.mark.grades("train")
def test_box_env_gets_the_clipped_action(tmp_path, monkeypatch):
    """Catches the env stepped with the unclipped action (the loss gets the sampled one: tested above)."""
    run = traced_train(
        tmp_path, monkeypatch, a2c, ("nstep_returns",), env_id="tests.fake_envs:BanditBox-v0", num_envs=8,
        num_steps=5, total_timesteps=40, eval_episodes=0, scale_rewards=False,
    )  # fmt: skip
    actions = torch.stack([c["result"] for c in run.samples])[..., 0].numpy()
    assert (np.abs(actions) > 1).any(), "no sample fell outside the box: the test cannot see the clipping"
    best = fake_envs.BanditEnv.BEST_ACTION
    np.testing.assert_allclose(run.calls["nstep_returns"][0]["rewards"], -((np.clip(actions, -1, 1) - best) ** 2))


# ## Uphill: a few updates on a bandit move the policy toward the best action, over several seeds
def bandit_policy(tmp_path, monkeypatch, module, env_id: str, seed: int, **overrides) -> tuple[float, float]:
    """The policy at the bandit's observation before and after a short run: P(best arm), or the Gaussian's mean."""
    with monkeypatch.context() as patch:
        run = traced_train(tmp_path, patch, module, env_id=env_id, seed=seed, eval_episodes=0, **overrides)
    obs, nets = torch.tensor([[1.0, -1.0]]), (agent_at(run.agent, run.steps[0]["before"]), run.agent)
    with torch.no_grad():
        if run.agent.discrete:
            best = torch.tensor([fake_envs.BanditEnv.BEST_ARM])
            return tuple(log_pi(net, obs, best).exp().item() for net in nets)
        return tuple(net.mode(obs).item() for net in nets)


def assert_uphill(before: float, after: float, discrete: bool, seed: int):
    """P(best arm) up by 0.04, or the Gaussian's mean 0.05 closer to the best action: a sign error moves them away."""
    if discrete:
        assert after > before + 0.04, f"seed {seed}: P(best arm) went from {before:.3f} to {after:.3f}"
    else:
        best = fake_envs.BanditEnv.BEST_ACTION
        assert abs(after - best) < abs(before - best) - 0.05, f"seed {seed}: mean from {before:.3f} to {after:.3f}"


@pytest.mark.parametrize("env", ["Bandit-v0", "BanditBox-v0"])
@pytest.mark.grades("train")
def test_a_few_updates_move_the_policy_toward_the_best_action(env, tmp_path, monkeypatch):
    """Catches a sign error anywhere between the reward and the step: it moves the policy away instead."""
    for seed in (1, 2, 3):
        # 10 updates; seeds 1-15 all take P(best arm) from 1/3 to 0.4 or more, the mean from about 0 to 0.19 or more
        before, after = bandit_policy(
            tmp_path, monkeypatch, a2c, f"tests.fake_envs:{env}", seed, num_envs=8, num_steps=5, total_timesteps=400,
            learning_rate=3e-4,
        )  # fmt: skip
        assert_uphill(before, after, discrete=env == "Bandit-v0", seed=seed)
