"""What a Monte-Carlo training loop did, recorded from outside: shared by the tests of
reinforce.py, reinforce_baseline.py and finite_diff.py.

`record_batches` watches the vector env (every reset starts a batch, every step is stored) and
`optimizer_steps` watches every optimizer step (its step size, the parameters it starts from and
the gradients it is given). The tests recompute from these records, with the plain loops below
and not with the script's own functions, what `train` must have fed the math, and compare.
"""

import copy
import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

BANDITS = ["tests.fake_envs:Bandit-v0", "tests.fake_envs:BanditBox-v0"]


@dataclass
class Batch:
    """One reset of the vector env and the steps after it, arrays (T, n, ...), time down."""

    seed: object
    """the `seed` the loop passed to `reset`"""
    first_step: int
    """index of this batch's first step among all steps of the run"""
    obs: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    ended: list = field(default_factory=list)

    @property
    def s(self) -> np.ndarray:
        """$s_t$, the observation each env showed before step t (the last one shown is not acted on)."""
        return np.stack(self.obs[: len(self.actions)])

    @property
    def mask(self) -> np.ndarray:
        """1 where step t belongs to env i's first episode, up to and including the step that ended it."""
        ended = np.stack(self.ended) if self.ended else np.zeros((0, len(self.obs[0])), dtype=bool)
        return (np.cumsum(ended, 0) - ended == 0).astype(np.float64)

    @property
    def complete(self) -> bool:
        """Every env ended its episode: a batch a Monte-Carlo method can learn from."""
        return bool(self.ended) and bool(np.stack(self.ended).any(0).all())

    @property
    def masked_rewards(self) -> np.ndarray:
        return np.stack(self.rewards) * self.mask

    @property
    def episode_returns(self) -> np.ndarray:
        """(n,) undiscounted return of each env's first episode."""
        return self.masked_rewards.sum(0)


def record_batches(monkeypatch) -> list[Batch]:
    """Record every reset and step of every `SyncVectorEnv` while `train` runs."""
    batches, n_steps = [], [0]
    reset, step = gym.vector.SyncVectorEnv.reset, gym.vector.SyncVectorEnv.step

    def recording_reset(env, *args, **kwargs):
        obs, info = reset(env, *args, **kwargs)
        batches.append(Batch(seed=kwargs.get("seed"), first_step=n_steps[0], obs=[np.array(obs)]))
        return obs, info

    def recording_step(env, actions):
        obs, reward, terminated, truncated, info = step(env, actions)
        b = batches[-1]
        b.actions.append(np.array(actions))
        b.obs.append(np.array(obs))
        b.rewards.append(np.array(reward, dtype=np.float64))
        b.ended.append(np.asarray(terminated) | np.asarray(truncated))
        n_steps[0] += 1
        return obs, reward, terminated, truncated, info

    monkeypatch.setattr(gym.vector.SyncVectorEnv, "reset", recording_reset)
    monkeypatch.setattr(gym.vector.SyncVectorEnv, "step", recording_step)
    return batches


@contextmanager
def optimizer_steps():
    """Record every `torch.optim` step taken inside the block: optimizer, lr, parameters and grads before it."""
    steps = []

    def hook(optimizer, args, kwargs):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        steps.append(
            SimpleNamespace(
                optimizer=optimizer,
                lr=optimizer.param_groups[0]["lr"],
                params=params,
                values=[p.detach().clone() for p in params],
                grads=[None if p.grad is None else p.grad.detach().clone() for p in params],
            )
        )

    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield steps
    finally:
        handle.remove()


def steps_of(steps, module: torch.nn.Module) -> list:
    """The recorded steps of the optimizer that holds `module`'s parameters."""
    own = {id(p) for p in module.parameters()}
    return [s for s in steps if own & {id(p) for p in s.params}]


def module_at(module: torch.nn.Module, step) -> torch.nn.Module:
    """A copy of `module` with the parameter values `step` started from."""
    snapshot = copy.deepcopy(module)
    values = {id(p): v for p, v in zip(step.params, step.values)}
    with torch.no_grad():
        for p, q in zip(module.parameters(), snapshot.parameters()):
            q.copy_(values[id(p)])
    return snapshot


def flat_grad(step, module: torch.nn.Module) -> torch.Tensor:
    """The gradients `step` was given for `module`'s parameters, flattened in `module.parameters()` order."""
    grads = {id(p): g for p, g in zip(step.params, step.grads)}
    return torch.cat([grads[id(p)].flatten() for p in module.parameters()])


def sampled(samples: list, batch: Batch) -> torch.Tensor:
    """The actions a spied `sample(obs)` drew during `batch`, (T, N[, A]), before any clipping."""
    calls = samples[batch.first_step : batch.first_step + len(batch.actions)]
    return torch.stack([action.clone() for _, _, action in calls])


def assert_whole_batches(batches: list[Batch], n_updates: int, global_step: int, budget: int, first_seed=None) -> None:
    """One update per batch of whole episodes; only the last batch, cut short by the budget, is not learnt from.

    `global_step` counts every step of an episode, none after its end, and the loop stops only when
    one more step of the envs still running would pass the budget. With `first_seed`, the first
    reset is seeded with it and the later ones are not (a seed at every reset replays the same episodes).
    """
    assert len(batches) >= 3 and all(b.complete for b in batches[:-1])
    assert n_updates == len([b for b in batches if b.complete])
    assert global_step == sum(b.mask.sum() for b in batches)
    last = batches[-1]
    running = len(last.obs[0]) - (np.stack(last.ended).any(0).sum() if last.ended else 0)
    assert global_step == budget if last.complete else global_step + running > budget
    if first_seed is not None:
        assert batches[0].seed == first_seed and all(b.seed is None for b in batches[1:])


def assert_env_got_the_samples(batches: list[Batch], samples: list, env_id: str) -> None:
    """Each step the policy sampled at $s_t$, and the env got that sample (clipped to the bounds for Box)."""
    space = gym.make(env_id).action_space
    for b in batches:
        for t in range(len(b.actions)):
            np.testing.assert_array_equal(samples[b.first_step + t][0][1].numpy(), b.s[t])
        actions = sampled(samples, b).numpy()
        if isinstance(space, gym.spaces.Box):
            actions = np.clip(actions, space.low, space.high)
        np.testing.assert_array_equal(b.actions, actions)


def step_sizes(args, batches: list[Batch]) -> list[float]:
    """Algorithm 1's $\\alpha_k = \\alpha (1 - \\text{steps before batch k} / \\text{budget})$ per whole batch ($\\alpha$ without annealing)."""
    sizes, done = [], 0
    for b in batches:
        if b.complete:
            sizes.append(args.learning_rate * (1 - done / args.total_timesteps if args.anneal_lr else 1))
        done += int(b.mask.sum())
    return sizes


def weights_psi(batch: Batch, gamma: float, reward_to_go: bool) -> np.ndarray:
    """$\\Psi_t$: $G_t$ (causality) or $G(\\tau) = G_0$ at every step (Algorithm 1), 0 after the episode's end."""
    G = discounted_sums(batch.masked_rewards, gamma)
    return (G if reward_to_go else np.broadcast_to(G[:1], G.shape)) * batch.mask


def episode_gradients(policy: torch.nn.Module, obs: np.ndarray, actions: torch.Tensor, weights) -> torch.Tensor:
    """(N, P): $\\nabla_\\theta \\sum_t \\log \\pi(a_t|s_t;\\theta) w_t$ of each episode (column), by autograd one at a time."""
    obs, weights = torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(weights, dtype=torch.float32)
    out = []
    for i in range(obs.shape[1]):
        total = (policy.log_prob(obs[:, i], actions[:, i]) * weights[:, i]).sum()
        out.append(torch.cat([g.flatten() for g in torch.autograd.grad(total, list(policy.parameters()))]))
    return torch.stack(out)


def discounted_sums(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """$G_t = \\sum_{t' \\ge t} \\gamma^{t'-t} r_{t'}$ down each column of a (T, n) array, by the definition."""
    T = rewards.shape[0]
    out = np.zeros(rewards.shape, dtype=np.float64)
    for t in range(T):
        for u in range(t, T):
            out[t] += gamma ** (u - t) * rewards[u]
    return out


def assert_climbs(env_id: str, summaries: list[dict]) -> None:
    """The policies trained on a bandit prefer its best action (each summary from another seed).

    Discrete: the most likely arm is the best one and the last episodes earn more than the 0.5
    of the uniform policy. Box: the mean action went from 0 to within 0.32 of the best action 0.5
    (its evaluation return $-(\\mu - 0.5)^2$ was -0.25 at the start).
    """
    for s in summaries:
        if env_id.endswith("Box-v0"):
            assert s["eval_mean_return"] > -0.1, summaries
        else:
            assert s["eval_mean_return"] == 1.0 and s["train_last_mean_return"] > 0.65, summaries


def bound(function, call) -> dict:
    """The arguments of a recorded `(args, kwargs, result)` call of `function`, by parameter name."""
    args, kwargs, _ = call
    binding = inspect.signature(function).bind(*args, **kwargs)
    binding.apply_defaults()
    return binding.arguments
