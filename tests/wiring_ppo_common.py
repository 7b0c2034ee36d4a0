"""What `train` feeds the math, recorded and recomputed: shared by test_ppo.py and test_ppo_continuous.py.

`record_train` runs a script's `train` with a spy on every piece its loop wires together: the
policy's samples, `gae`, `clipped_policy_loss`, `value_loss` and each optimizer step (learning rate
and gradients). At every `gae` call it keeps a copy of the agent that collected the rollout,
$\\pi_{\\theta_{old}}$ and $V_{\\theta_{old}}$. On the Clock env every transition is known in advance,
so `expected_rollouts` recomputes, from the env alone, what each piece must have been given, and the
`check_*` functions compare. A test file only says how its script scales rewards and observations.
"""

import copy
import inspect
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from tests.fake_envs import BanditEnv, ClockEnv
from tests.helpers import make_args, read_progress, train_in

# One rollout of 8 steps sees a terminated episode (3 steps) and a truncated one (5 steps), ending
# on the truncation; every observation in it is a different one, so it names its step. Three
# rollouts, so that a step size that decays but not linearly shows.
CLOCK = {
    "env_id": "tests.fake_envs:Clock-v0", "num_envs": 2, "num_steps": 8, "total_timesteps": 48,
    "num_minibatches": 2, "update_epochs": 2, "gamma": 0.9, "gae_lambda": 0.7, "ent_coef": 0.05,
    "max_grad_norm": 0.3, "learning_rate": 3e-3, "eval_episodes": 0,
}  # fmt: skip
PRIOR = 1e-4  # RunningMeanStd starts as mean 0, variance 1, with this weight


def naive_gae(rewards, values, next_values, terminated, dones, gamma, lam):
    """$\\hat{A}_t = \\sum_{l \\ge 0} (\\gamma\\lambda)^l \\delta_{t+l}$, summed until the episode ends."""
    T, N = rewards.shape
    delta = rewards + gamma * next_values * (1 - terminated) - values
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            for k in range(t, T):
                adv[t, n] += (gamma * lam) ** (k - t) * delta[k, n]
                if dones[k, n]:
                    break
    return adv


# ## What the env gives, computed without the vector env or the script
def clock_transitions(steps: int) -> dict:
    """Per step of one Clock env: $s_t$, the true $s_{t+1}$, the obs `step` returns (the reset one where
    the episode ended), $r_t$, terminated, truncated. Every sub-env of a vector env gives the same."""
    env = ClockEnv()
    obs, _ = env.reset()
    rows = {k: [] for k in ("obs", "next_obs", "returned", "reward", "terminated", "truncated")}
    for _ in range(steps):
        next_obs, reward, terminated, truncated, _ = env.step(0)
        returned = env.reset()[0] if terminated or truncated else next_obs
        for key, x in zip(rows, (obs, next_obs, returned, reward, terminated, truncated)):
            rows[key].append(x)
        obs = returned
    out = {k: np.array(v, dtype=np.float64) for k, v in rows.items()}
    out["done"] = np.maximum(out["terminated"], out["truncated"])
    return out


def discounted_returns(rewards: np.ndarray, dones: np.ndarray, gamma: float) -> np.ndarray:
    """$G_t = \\gamma G_{t-1} + r_t$ along the steps, restarted after every episode end."""
    G, prev = np.zeros(len(rewards)), 0.0
    for t, r in enumerate(rewards):
        G[t] = prev = gamma * prev + r
        prev = 0.0 if dones[t] else prev
    return G


def running_moments(seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of all of `seen` pooled, in one pass, with RunningMeanStd's prior."""
    n = len(seen)
    mean = seen.sum(0) / (n + PRIOR)
    return mean, (PRIOR * (1.0 + mean**2) + ((seen - mean) ** 2).sum(0)) / (n + PRIOR)


# ## Recording a run
@dataclass
class Rollout:
    obs: np.ndarray  # (T, N, obs_dim) what `sample` was given
    actions: np.ndarray  # (T, N, ...) what it drew
    gae: dict  # the arguments `gae` got, as numpy
    agent: torch.nn.Module  # a copy of the agent that collected the rollout


@dataclass
class Step:
    """One optimizer step: one minibatch, with what its loss was made of."""

    iteration: int
    lr: float
    grads: list  # the gradients the optimizer applied
    pg: dict = field(default_factory=dict)  # clipped_policy_loss's arguments; obs, actions of its log-probs
    value: dict = field(default_factory=dict)  # value_loss's arguments and the obs of its new values
    grad_pg: list | None = None  # d(policy loss), d(mean entropy), d(value loss) w.r.t. the parameters
    grad_entropy: list | None = None
    grad_value: list | None = None
    sample_steps: np.ndarray | None = None  # the rollout step of each minibatch sample, found by check_minibatches


class Recording:
    """What the spies saw: per rollout, what the policy acted on and what `gae` got; per optimizer
    step, what its loss was made of. The `on_*` methods are called by the spies as `train` runs."""

    def __init__(self, module, args):
        self.module, self.args = module, args
        self.agent, self.rollouts, self.steps = None, [], []
        self._samples, self._log_probs, self._values, self._step = [], [], [], {}

    def _grads(self, output: torch.Tensor) -> list:
        params = list(self.agent.parameters())
        grads = torch.autograd.grad(output, params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g.detach().clone() for g, p in zip(grads, params)]

    def on_sample(self, a, result):
        self.agent = a["self"]
        self._samples.append((a["obs"].cpu().numpy().copy(), result.cpu().numpy().copy()))

    def on_gae(self, a, result):
        gae_args = {k: v.cpu().numpy().copy() if torch.is_tensor(v) else v for k, v in a.items()}
        obs, actions = (np.stack(x) for x in zip(*self._samples))
        self.rollouts.append(Rollout(obs, actions, gae_args, copy.deepcopy(self.agent)))
        self._samples = []

    def on_log_prob(self, a, result):
        if result[0].requires_grad:
            self._log_probs.append((a["obs"].detach(), a["actions"].detach(), *result))

    def on_value(self, a, result):
        if result.requires_grad:
            self._values.append((a["obs"].detach(), result))

    def on_policy_loss(self, a, result):
        new = a["new_log_prob"]
        obs, actions, _, entropy = next(c for c in reversed(self._log_probs) if _same(c[2], new))
        pg = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in a.items()}
        grad_pg, grad_entropy = self._grads(result[0]), self._grads(entropy.mean())
        self._step.update(pg=dict(pg, obs=obs, actions=actions), grad_pg=grad_pg, grad_entropy=grad_entropy)

    def on_value_loss(self, a, result):
        if result.requires_grad:
            obs = next(o for o, v in reversed(self._values) if _same(v, a["new_values"]))
            value = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in a.items()}
            self._step.update(value=dict(value, obs=obs), grad_value=self._grads(result))

    def on_optimizer_step(self, optimizer, *_):
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in self.agent.parameters()]
        lr = optimizer.param_groups[0]["lr"]
        self.steps.append(Step(len(self.rollouts), lr, grads, **self._step))
        self._step, self._log_probs, self._values = {}, [], []


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and torch.equal(a.detach(), b.detach()))


def _spy(mp: pytest.MonkeyPatch, owner, name: str, record):
    """Like helpers.spy, but hands `record` the call's arguments by name as it happens."""
    original = getattr(owner, name)
    signature = inspect.signature(original)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        record(signature.bind(*args, **kwargs).arguments, result)
        return result

    mp.setattr(owner, name, wrapper)


def record_train(module, tmp_path, **overrides) -> Recording:
    """Run `module.train(Args(**overrides))` in tmp_path with every piece of the loop spied on."""
    rec = Recording(module, make_args(module, **overrides))
    with pytest.MonkeyPatch.context() as mp:
        _spy(mp, module.Agent, "sample", rec.on_sample)
        _spy(mp, module.Agent, "log_prob_entropy", rec.on_log_prob)
        _spy(mp, module.Agent, "value", rec.on_value)
        _spy(mp, module, "gae", rec.on_gae)
        _spy(mp, module, "clipped_policy_loss", rec.on_policy_loss)
        _spy(mp, module, "value_loss", rec.on_value_loss)
        hook = register_optimizer_step_pre_hook(rec.on_optimizer_step)
        try:
            rec.summary, rec.run_dir = train_in(tmp_path, module, **overrides)
        finally:
            hook.remove()
    return rec


# ## What each piece must have been given
def expected_rollouts(rec: Recording, net_obs, net_next_obs, rewards) -> list[dict]:
    """Per rollout: what the loop should feed the math, given what the networks should see for
    $s_t$ and $s_{t+1}$ and the rewards after the script's scaling (arrays over all steps, per env)."""
    args, T = rec.args, rec.args.num_steps
    tr = clock_transitions(T * len(rec.rollouts))
    out = []
    for i, rollout in enumerate(rec.rollouts):
        s = slice(i * T, (i + 1) * T)
        with torch.no_grad():
            values = rollout.agent.value(torch.tensor(net_obs[s], dtype=torch.float32)).numpy()
            next_values = rollout.agent.value(torch.tensor(net_next_obs[s], dtype=torch.float32)).numpy()
        term, done = tr["terminated"][s], tr["done"][s]
        column = (x[:, None] for x in (rewards[s], values, next_values, term, done))
        advantages = naive_gae(*column, args.gamma, args.gae_lambda)[:, 0]
        out.append({
            "obs": net_obs[s], "next_obs": net_next_obs[s], "rewards": rewards[s], "terminated": term,
            "dones": done, "values": values, "next_values": next_values, "advantages": advantages,
            "returns": advantages + values,
        })  # fmt: skip
    return out


def check_rollout_obs(rec: Recording, expected: list[dict]):
    """The policy samples $a_t$ from the observation the networks should see for $s_t$."""
    for rollout, exp in zip(rec.rollouts, expected, strict=True):
        want = np.broadcast_to(exp["obs"][:, None], rollout.obs.shape)
        np.testing.assert_allclose(rollout.obs, want, atol=1e-5, err_msg="the policy acted on the wrong s_t")


def check_gae_inputs(rec: Recording, expected: list[dict]):
    """`gae` gets the rewards, both masks, $V(s_t)$ and $V$ of the true $s_{t+1}$, $\\gamma$ and $\\lambda$."""
    args = rec.args
    assert len(rec.rollouts) == args.total_timesteps // (args.num_steps * args.num_envs)
    for i, (rollout, exp) in enumerate(zip(rec.rollouts, expected)):
        got = rollout.gae
        assert (got["gamma"], got["gae_lambda"]) == (args.gamma, args.gae_lambda), f"rollout {i}"
        for name in ("rewards", "terminated", "dones", "values"):
            want = np.broadcast_to(exp[name][:, None], got[name].shape)
            np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=f"rollout {i}: {name}")
        # after a termination $V(s_{t+1})$ is masked out: whatever stands there is fine
        live = exp["terminated"] == 0
        want = np.broadcast_to(exp["next_values"][live, None], got["next_values"][live].shape)
        np.testing.assert_allclose(got["next_values"][live], want, rtol=1e-5, atol=1e-6, err_msg=f"rollout {i}")


def _steps_of(rollout: Rollout, obs: torch.Tensor, actions: torch.Tensor | None = None) -> np.ndarray:
    """The rollout step of every sample of a minibatch, found by its observation (and action)."""
    steps = []
    for j in range(len(obs)):
        hit = (np.abs(rollout.obs - obs[j].numpy()) < 1e-6).all(-1)
        if actions is not None:
            hit &= (rollout.actions == actions[j].numpy()).reshape(hit.shape + (-1,)).all(-1)
        ts = np.unique(np.nonzero(hit)[0])
        assert len(ts) == 1, f"minibatch sample {j} is no (s_t, a_t) pair of the rollout"
        steps.append(ts[0])
    return np.array(steps)


def check_minibatches(rec: Recording, expected: list[dict]):
    """Every epoch visits every sample once, reshuffled; each gets its own a_t, log pi_old and advantage."""
    args = rec.args
    per_iteration = args.update_epochs * args.num_minibatches
    assert len(rec.steps) == per_iteration * len(rec.rollouts), "optimizer steps per update"
    assert [s.iteration for s in rec.steps] == [i // per_iteration + 1 for i in range(len(rec.steps))]
    for k, step in enumerate(rec.steps):
        rollout, exp, pg = rec.rollouts[step.iteration - 1], expected[step.iteration - 1], step.pg
        steps = _steps_of(rollout, pg["obs"], pg["actions"])
        assert len(steps) == args.num_steps * args.num_envs // args.num_minibatches, f"step {k}: minibatch size"
        step.sample_steps = steps
        with torch.no_grad():
            old, _ = rollout.agent.log_prob_entropy(pg["obs"], pg["actions"])
        torch.testing.assert_close(pg["old_log_prob"], old, atol=1e-5, rtol=1e-5, msg=f"step {k}: log pi_old")
        adv = torch.tensor(exp["advantages"][steps], dtype=torch.float64)
        if args.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        torch.testing.assert_close(pg["advantages"].double(), adv, atol=1e-4, rtol=1e-4, msg=f"step {k}: A")
        assert pg["clip_coef"] == args.clip_coef
    for i, rollout in enumerate(rec.rollouts):
        steps = [s for s in rec.steps if s.iteration == i + 1]
        partitions = []
        for e in range(args.update_epochs):
            epoch = steps[e * args.num_minibatches : (e + 1) * args.num_minibatches]
            seen_steps = np.sort(np.concatenate([s.sample_steps for s in epoch]))
            np.testing.assert_array_equal(seen_steps, np.repeat(np.arange(args.num_steps), args.num_envs))
            seen_actions = torch.cat([s.pg["actions"] for s in epoch]).numpy().reshape(-1)
            np.testing.assert_array_equal(np.sort(seen_actions), np.sort(rollout.actions.reshape(-1)))
            partitions.append([sorted(zip(s.sample_steps, s.pg["actions"].reshape(-1).tolist())) for s in epoch])
        assert all(p != partitions[0] for p in partitions[1:]), f"update {i + 1}: the same minibatches every epoch"


def check_value_targets(rec: Recording, expected: list[dict]):
    """V is regressed at s_t onto $\\hat{A}_t + V_{old}(s_t)$, around $V_{old}(s_t)$."""
    args = rec.args
    for k, step in enumerate(rec.steps):
        rollout, exp, v = rec.rollouts[step.iteration - 1], expected[step.iteration - 1], step.value
        steps = _steps_of(rollout, v["obs"])
        for name, want in (("returns", exp["returns"][steps]), ("old_values", exp["values"][steps])):
            torch.testing.assert_close(v[name].double(), torch.tensor(want, dtype=torch.float64), atol=1e-4,
                                       rtol=1e-4, msg=f"step {k}: {name}")  # fmt: skip
        assert v["clip_coef"] == (args.clip_coef if args.clip_vloss else None)


def check_value_loss_against_hand_values(module):
    r"""$\frac{1}{2}(V - V^{targ})^2$, or clipped: the larger of that and the loss of $V$ held within $\epsilon$ of $V_{old}$."""
    new, old, ret = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([3.0, 1.0])
    assert module.value_loss(new, old, ret, None).item() == pytest.approx(0.5 * (1 + 1) / 2)
    # clipped prediction of the first sample is 0.2: max((2-3)^2, (0.2-3)^2) = 7.84
    assert module.value_loss(new, old, ret, 0.2).item() == pytest.approx(0.5 * (7.84 + 1) / 2)


def check_ratio_starts_at_one(rec: Recording):
    """Before the first step of an update, $\\pi_\\theta = \\pi_{\\theta_{old}}$: the loss must see $r_t = 1$."""
    first = [s for k, s in enumerate(rec.steps) if k == 0 or rec.steps[k - 1].iteration != s.iteration]
    assert len(first) == len(rec.rollouts)
    for step in first:
        torch.testing.assert_close(step.pg["new_log_prob"], step.pg["old_log_prob"], atol=1e-6, rtol=0)


def check_gradients(rec: Recording):
    """The step follows $\\nabla(-L^{CLIP} + c_1 L^{VF} - c_2 S)$ of its own minibatch, norm-clipped."""
    args, clipped = rec.args, 0
    for k, step in enumerate(rec.steps):
        zipped = zip(step.grad_pg, step.grad_value, step.grad_entropy)
        want = [gp + args.vf_coef * gv - args.ent_coef * ge for gp, gv, ge in zipped]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in want]))
        scale = min(1.0, args.max_grad_norm / (norm.item() + 1e-6))
        clipped += scale < 1.0
        for j, (got, g) in enumerate(zip(step.grads, want)):
            torch.testing.assert_close(got, g * scale, atol=1e-6, rtol=1e-4, msg=f"step {k}, parameter {j}")
    assert 0 < clipped, "no step's gradient was long enough to be clipped: the test checks nothing"


def check_learning_rates(rec: Recording):
    """Update $k$ of $K$ steps with $\\alpha (1 - (k-1)/K)$, or with $\\alpha$ throughout."""
    args, n = rec.args, len(rec.rollouts)
    for step in rec.steps:
        decay = 1.0 - (step.iteration - 1) / n if args.anneal_lr else 1.0
        assert step.lr == pytest.approx(args.learning_rate * decay, rel=1e-9), f"iteration {step.iteration}"


def check_progress(rec: Recording):
    """Every episode of every env in progress.csv: its return, length and the step it ended at."""
    args = rec.args
    tr = clock_transitions(args.num_steps * len(rec.rollouts))
    want, start = [], 0
    for t in np.flatnonzero(tr["done"]):
        ret, length = tr["reward"][start : t + 1].sum(), t + 1 - start
        want += [((t + 1) * args.num_envs, ret, length)] * args.num_envs
        start = t + 1
    got = [(int(r["global_step"]), float(r["episodic_return"]), int(r["episodic_length"])) for r in
           read_progress(rec.run_dir)]  # fmt: skip
    assert got == want


# ## Whole runs
def best_action_before_after(module, tmp_path, **overrides) -> tuple[float, float]:
    """On a Bandit env: P(best arm), or the Gaussian's mean, before and after `train`."""
    seen = []
    with pytest.MonkeyPatch.context() as mp:
        _spy(mp, module.Agent, "sample", lambda a, _: seen.append((a["self"], a["obs"][:1].clone(), _measure(a))))
        train_in(tmp_path, module, eval_episodes=0, **overrides)
    agent, obs, _ = seen[-1]
    return seen[0][2], _measure({"self": agent, "obs": obs})


def _measure(a) -> float:
    agent, obs = a["self"], a["obs"][:1]
    with torch.no_grad():
        mode = agent.mode(obs)
        if mode.dtype.is_floating_point:
            return mode[0, 0].item()
        return agent.log_prob_entropy(obs, torch.tensor([BanditEnv.BEST_ARM]))[0].exp().item()


def check_env_gets_the_clipped_action(module, tmp_path, **overrides):
    """BanditBox pays $-(a - 0.5)^2$ for the action it got: that must be the sample clipped to [-1, 1]."""
    rec = record_train(module, tmp_path, env_id="tests.fake_envs:BanditBox-v0", scale_rewards=False,
                       eval_episodes=0, **overrides)  # fmt: skip
    (rollout,) = rec.rollouts
    a = rollout.actions[..., 0]
    assert (np.abs(a) > 1).mean() > 0.1
    want = -((np.clip(a, -1.0, 1.0) - BanditEnv.BEST_ACTION) ** 2)
    np.testing.assert_allclose(rollout.gae["rewards"], want, rtol=1e-5, atol=1e-6)


def steps_per_update(module, tmp_path, **overrides) -> list[int]:
    """How many optimizer steps each update of a run took."""
    rec = record_train(module, tmp_path, **overrides)
    return [sum(s.iteration == i + 1 for s in rec.steps) for i in range(len(rec.rollouts))]


def check_policy_and_value_use_their_own_networks(agent, obs, actions):
    """$\\log\\pi$ depends on the actor's parameters only, V on the critic's only."""
    params = list(agent.parameters())
    log_prob, _ = agent.log_prob_entropy(obs, actions)
    g_pi = torch.autograd.grad(log_prob.sum(), params, allow_unused=True)
    g_v = torch.autograd.grad(agent.value(obs).sum(), params, allow_unused=True)
    uses_pi = [g is not None and bool(g.abs().sum() > 0) for g in g_pi]
    uses_v = [g is not None and bool(g.abs().sum() > 0) for g in g_v]
    assert any(uses_pi) and any(uses_v)
    assert not any(p and v for p, v in zip(uses_pi, uses_v)), "a parameter is shared by the policy and V"


def check_true_next_obs(module):
    """`true_next_obs` gives $s_{t+1}$: `final_obs` at both kinds of episode end, the next obs elsewhere."""
    envs = module.make_envs("tests.fake_envs:Clock-v0", 2)
    envs.reset(seed=0)
    tr = clock_transitions(2 * (ClockEnv.TERMINATE_AT + ClockEnv.TRUNCATE_AT))
    for t, want in enumerate(tr["next_obs"]):
        obs, _, _, _, info = envs.step(np.zeros(2, dtype=np.int64))
        returned = obs.copy()
        np.testing.assert_array_equal(module.true_next_obs(obs, info), np.stack([want, want]), err_msg=f"step {t}")
        np.testing.assert_array_equal(obs, returned)  # and leaves the reset observations alone
    envs.close()


def check_clip_bounds(module, eps=0.2):
    """Clipped exactly outside $[1-\\epsilon, 1+\\epsilon]$ on the side the advantage pushes to, not at $1 \\pm 2\\epsilon$."""
    ratios = torch.tensor([1 + eps / 2, 1 + 1.5 * eps, 1 + 3 * eps, 1 - eps / 2, 1 - 1.5 * eps, 1 - 3 * eps] * 2)
    adv = torch.tensor([1.0] * 6 + [-1.0] * 6)
    new_log_prob = ratios.log().requires_grad_()
    loss, _, _ = module.clipped_policy_loss(new_log_prob, torch.zeros(12), adv, eps)
    loss.backward()
    clipped = ((adv > 0) & (ratios > 1 + eps)) | ((adv < 0) & (ratios < 1 - eps))
    expected_grad = torch.where(clipped, 0.0, -ratios * adv / 12)
    torch.testing.assert_close(new_log_prob.grad, expected_grad)
    objective = torch.where(clipped, ratios.clamp(1 - eps, 1 + eps), ratios) * adv
    assert loss.item() == pytest.approx(-objective.mean().item())


def check_gaussian_sampling(agent, obs_dim: int):
    r"""`sample` draws from $\mathbb{N}(\mu, \sigma^2)$, $\sigma = e^{\log\sigma}$, and `mode` is that $\mu$,
    where `log_prob_entropy`'s density peaks."""
    torch.manual_seed(0)
    obs = torch.randn(1, obs_dim)
    with torch.no_grad():
        agent.log_std.copy_(torch.tensor([0.5, -1.0]))
        draws = agent.sample(obs.expand(40_000, obs_dim))
        mean = agent.mode(obs)
        shifted = mean + torch.tensor([[0.05, 0.0], [-0.05, 0.0], [0.0, 0.05], [0.0, -0.05]])
        log_probs, _ = agent.log_prob_entropy(obs.expand(5, obs_dim), torch.cat([mean, shifted]))
    torch.testing.assert_close(draws.mean(0), mean[0], atol=0.03, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.tensor([0.5, -1.0]).exp(), atol=0.03, rtol=0)
    assert (log_probs[0] > log_probs[1:]).all()
