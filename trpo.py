r"""Trust Region Policy Optimization (TRPO), for Discrete and Box actions.

Paper: Schulman, Levine, Moritz, Jordan, Abbeel. "Trust Region Policy Optimization",
ICML 2015 (arXiv:1502.05477). Lecture: slide "Trust Region Policy Optimization (TRPO)",
with the output layers of slides "Policy Gradient Methods" (softmax for discrete actions,
a Gaussian $\mathbb{N}(f(s_t), \Sigma)$ for continuous ones).

Each update solves, on one rollout of $\pi_{\theta_{old}}$,

$\max_\theta \mathcal{L}(\theta) = \hat{\mathbb{E}}_t[r_t(\theta)\hat{A}_t]$ subject to
$\bar{D}_{KL}(\theta) = \hat{\mathbb{E}}_t[KL(\pi(\cdot|s_t;\theta_{old}) || \pi(\cdot|s_t;\theta))] \le \delta$,

by a linear model of $\mathcal{L}$ ($g = \nabla_\theta \mathcal{L}$) and a quadratic model of the KL
(its Hessian $F$, the Fisher information matrix): the natural-gradient direction $s = F^{-1}g$
(conjugate gradient on Fisher-vector products), the largest step $\beta s$ with
$\frac{1}{2}\beta^2 s^T F s = \delta$, then a backtracking line search on the true KL and
surrogate. A separate critic $V(s)$ is fitted by regression; $\hat{A}_t$ is GAE($\lambda$).

Run: python trpo.py --env-id CartPole-v1
Pendulum-v1: python trpo.py --env-id Pendulum-v1 --gamma 0.9 --gae-lambda 0.9 --target-kl 0.03 --anneal-kl --num-minibatches 8 --critic-epochs 20
"""

import functools
import importlib.util
import json
import os
import random
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of random, numpy, torch and the environments"""
    torch_deterministic: bool = True
    """make torch pick deterministic algorithms (same seed, same machine: same run)"""
    cuda: bool = False
    """use the GPU when one is available"""
    track: bool = False
    """log to Weights and Biases (set WANDB_MODE=offline to log without a network)"""
    wandb_project_name: str = "pg-lecture"
    """the W&B project"""
    wandb_entity: str | None = None
    """the W&B entity (team or user)"""
    capture_video: bool = False
    """record videos of the evaluation episodes under videos/<run_name>/"""
    save_model: bool = False
    """save the weights to runs/<run_name>/<exp_name>.pt"""
    model_path: str | None = None
    """load weights before training (with --total-timesteps 0: only evaluate them)"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id"""
    total_timesteps: int = 100_000
    """environment steps to train for, over all environments"""
    eval_episodes: int = 10
    """episodes of the final, deterministic policy to evaluate"""

    target_kl: float = 0.01
    """delta, the trust region: bound on the mean KL between old and new policy"""
    anneal_kl: bool = False
    """shrink delta linearly towards 0 over training: steadier steps near the end"""
    cg_iters: int = 15
    """conjugate-gradient iterations for $s = F^{-1}g$"""
    cg_damping: float = 0.1
    """added to the Fisher matrix, F + damping I, so CG stays well conditioned"""
    backtrack_coef: float = 0.8
    """the line search shrinks the step by this factor after each rejected trial"""
    max_backtracks: int = 10
    """trial steps of the line search before it gives up and keeps the old policy"""
    learning_rate: float = 1e-3
    """Adam's step size for the critic"""
    critic_epochs: int = 10
    """epochs of minibatch regression of V on each rollout"""
    num_minibatches: int = 4
    """critic minibatches per epoch"""
    num_envs: int = 8
    """parallel environments"""
    num_steps: int = 128
    """steps per environment in each rollout"""
    gamma: float = 0.99
    """discount factor gamma"""
    gae_lambda: float = 0.95
    """lambda of GAE (1: Monte-Carlo returns, 0: one-step TD)"""
    norm_adv: bool = True
    """normalize the advantages of each rollout"""
    scale_rewards: bool = True
    """divide rewards by the running std of the discounted return (keeps V's targets near 1)"""
    hidden_size: int = 64
    """units in each of the two hidden layers"""
    num_threads: int = 1
    """torch CPU threads (1 is fastest for networks this small)"""


class ArgError(ValueError):
    """Bad input: reported as one `error:` line and exit status 2."""


# ## Environments
# Gymnasium 1.x vector envs with `SAME_STEP` autoreset: when an episode ends, `step` returns the first observation of
# the next one and the true last observation in `info["final_obs"]`, which we need to bootstrap $V(s_{T})$ when the
# episode was cut by a time limit. Env $i$ is seeded with `seed + i` by the first `reset(seed=seed)`.
def make_envs(env_id: str, num_envs: int, seed: int) -> gym.vector.SyncVectorEnv:
    mode = gym.vector.AutoresetMode.SAME_STEP
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id)] * num_envs, autoreset_mode=mode)
    envs.action_space.seed(seed)
    return envs


# $s_{t+1}$ of every env: `obs`, except where an episode ended at this step, there `final_obs`.
def true_next_obs(obs: np.ndarray, info: dict) -> np.ndarray:
    real = obs.copy()
    for i in np.flatnonzero(info.get("_final_obs", [])):
        real[i] = info["final_obs"][i]
    return real


# Two tanh hidden layers; orthogonal weights of gain $\sqrt{2}$ (`out_std` for the output layer), zero biases.
def mlp(n_in: int, h: int, n_out: int, out_std: float) -> nn.Sequential:
    def linear(n_in: int, n_out: int, std: float = np.sqrt(2)) -> nn.Linear:
        layer = nn.Linear(n_in, n_out)
        nn.init.orthogonal_(layer.weight, std)
        nn.init.zeros_(layer.bias)
        return layer

    return nn.Sequential(linear(n_in, h), nn.Tanh(), linear(h, h), nn.Tanh(), linear(h, n_out, out_std))


class Agent(nn.Module):
    r"""Actor $\pi(a|s;\theta)$ and a separate critic $V(s)$, trained by different rules.
    The actor's output is the softmax's logits $\mathbf{z}$ (discrete) or the Gaussian's
    mean $f(s)$ (continuous, with $\log\sigma$ a parameter in $\theta$ that does not depend on $s$)."""

    def __init__(self, obs_dim: int, action_dim: int, discrete: bool, hidden: int):
        super().__init__()
        self.discrete = discrete
        self.critic = mlp(obs_dim, hidden, 1, out_std=1.0)
        self.actor = mlp(obs_dim, hidden, action_dim, out_std=0.01)
        if not discrete:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def policy_params(self) -> list[nn.Parameter]:
        r"""$\theta$: everything the trust-region step moves, $\log\sigma$ included."""
        return list(self.actor.parameters()) + ([] if self.discrete else [self.log_std])

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The distribution's parameters: (logits, None) or (mean, log_std)."""
        out = self.actor(obs)
        return (out, None) if self.discrete else (out, self.log_std)

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        # No torch.distributions per env step. Softmax: Gumbel-max, $\arg\max_a (z_a + g_a)$
        # with $g_a = -\log(-\log u_a)$, $u_a \sim U(0,1)$. Gaussian: $\mu + \sigma \xi$, $\xi \sim \mathbb{N}(0, I)$.
        out = self.actor(obs)
        if self.discrete:
            return torch.argmax(out - torch.log(-torch.log(torch.rand_like(out))), dim=-1)
        return out + torch.exp(self.log_std) * torch.randn_like(out)


# ## Log-likelihood and KL of the two output layers
# Softmax: $\log\pi(a|s) = z_a - \log\sum_b e^{z_b}$. Gaussian:
# $\log \pi(a|s) = -\sum_i \left[\frac{(a_i - \mu_i)^2}{2\sigma_i^2} + \log \sigma_i + \frac{1}{2}\log 2\pi\right]$.
def log_prob(out: torch.Tensor, log_std: torch.Tensor | None, actions: torch.Tensor) -> torch.Tensor:
    if log_std is None:
        return torch.log_softmax(out, -1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    z = (actions - out) * torch.exp(-log_std)
    return -(0.5 * z.pow(2) + log_std + 0.5 * float(np.log(2 * np.pi))).sum(-1)


# $KL(\pi_{old} || \pi)$ per state, in the paper's order (the slide writes $KL(\pi_\theta || \pi_{old})$: the two
# agree to second order at $\theta_{old}$, so $F$ and the step are the same). Softmax: $\sum_a p^{old}_a (\log p^{old}_a - \log p_a)$.
# Gaussian: $\sum_i \left[\log\frac{\sigma_i}{\sigma^{old}_i} + \frac{(\sigma^{old}_i)^2 + (\mu^{old}_i - \mu_i)^2}{2\sigma_i^2} - \frac{1}{2}\right]$.
def kl_divergence(old_out, old_log_std, out, log_std) -> torch.Tensor:
    if log_std is None:
        old_logp, logp = torch.log_softmax(old_out, -1), torch.log_softmax(out, -1)
        return (old_logp.exp() * (old_logp - logp)).sum(-1)
    var_ratio = torch.exp(2 * (old_log_std - log_std))
    mean_term = (old_out - out).pow(2) * torch.exp(-2 * log_std)
    return (log_std - old_log_std + 0.5 * (var_ratio + mean_term) - 0.5).sum(-1)


# ## Generalized advantage estimation
# $\delta_t = r_t + \gamma V(s_{t+1})(1 - \text{terminated}_t) - V(s_t)$ and
# $\hat{A}_t = \delta_t + \gamma\lambda (1 - \text{done}_t) \hat{A}_{t+1}$.
# `next_values[t]` is $V$ of the true next state, also when the episode was truncated there: a time limit is
# not a terminal state, so it still bootstraps. `dones[t]` (terminated or truncated) only stops the sum from
# running into the next episode. Arrays are (T, N) numpy: a loop over T small rows runs several times faster
# in numpy than in torch.
def gae(rewards, values, next_values, terminated, dones, gamma: float, gae_lambda: float) -> np.ndarray:
    advantages, next_advantage = np.zeros_like(rewards), np.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminated[t]) - values[t]
        next_advantage = delta + gamma * gae_lambda * (1.0 - dones[t]) * next_advantage
        advantages[t] = next_advantage
    return advantages


# ## The surrogate and the constraint
# $\mathcal{L}(\theta) = \hat{\mathbb{E}}_t[r_t(\theta)\hat{A}_t]$ with $r_t = \exp(\log\pi_\theta(a_t|s_t) - \log\pi_{\theta_{old}}(a_t|s_t))$,
# and $\bar{D}_{KL}(\theta) = \hat{\mathbb{E}}_t[KL(\pi_{old}(\cdot|s_t) || \pi_\theta(\cdot|s_t))]$, both at the current $\theta$.
# `old_out`, `old_log_std`, `old_log_prob` hold $\pi_{\theta_{old}}$ on the batch, detached.
def surrogate_and_kl(agent, obs, actions, advantages, old_out, old_log_std, old_log_prob):
    out, log_std = agent.dist(obs)
    ratio = torch.exp(log_prob(out, log_std, actions) - old_log_prob)
    return (ratio * advantages).mean(), kl_divergence(old_out, old_log_std, out, log_std).mean()


# ## The trust-region step, on $\theta$ as one flat vector
def flat_grad(y: torch.Tensor, params, **kwargs) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(y, params, **kwargs)])


def set_flat_params(params, flat: torch.Tensor) -> None:  # in place, exact: the same floats come back out
    with torch.no_grad():
        for p, x in zip(params, flat.split([p.numel() for p in params])):
            p.copy_(x.view_as(p))


# Fisher-vector product $Fv$ without forming $F$: $F$ is the Hessian of the mean KL at
# $\theta = \theta_{old}$, so $Fv = \nabla_\theta \left[(\nabla_\theta \bar{D}_{KL})^T v\right]$
# (double backprop). `kl` must be built with $\pi_{old}$ detached and a graph to $\theta$;
# its gradient graph is built once and reused by every product. Damping: $(F + cI)v$.
def fisher_vector_product_fn(kl: torch.Tensor, params, damping: float):
    grad_kl = flat_grad(kl, params, create_graph=True)
    return lambda v: flat_grad(grad_kl @ v, params, retain_graph=True) + damping * v


# Conjugate gradient for $Fx = g$, with $F$ symmetric positive definite, known only through
# $v \mapsto Fv$: exact in at most $n$ iterations in exact arithmetic.
def conjugate_gradient(Av, b: torch.Tensor, iters: int, residual_tol: float = 1e-10) -> torch.Tensor:
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()  # residual $b - Ax$ and search direction
    rr = r @ r
    for _ in range(iters):
        if rr < residual_tol:
            break
        Ap = Av(p)
        alpha = rr / (p @ Ap)
        x, r = x + alpha * p, r - alpha * Ap
        rr, rr_old = r @ r, rr
        p = r + (rr / rr_old) * p
    return x


# The largest step along $s$ inside the quadratic model of the trust region:
# $\frac{1}{2}(\beta s)^T F (\beta s) = \delta \Rightarrow \beta = \sqrt{2\delta / s^T F s}$.
def max_step(s: torch.Tensor, Fs: torch.Tensor, delta: float) -> torch.Tensor:
    return torch.sqrt(2.0 * delta / (s @ Fs)) * s


# Backtracking line search: try $\theta_{old} + \alpha^k \beta s$, $k = 0, 1, \dots$, and accept the
# first that keeps the measured $\bar{D}_{KL} \le \delta$ and improves $\mathcal{L}$. If none does,
# $\theta_{old}$ is put back exactly. `surrogate_kl()` evaluates $(\mathcal{L}, \bar{D}_{KL})$ at the
# current parameters. Returns (accepted, backtracks, KL, $\mathcal{L}$) of the accepted step.
def line_search(params, step: torch.Tensor, surrogate_kl, delta: float, coef: float, max_backtracks: int):
    with torch.no_grad():
        old = torch.cat([p.reshape(-1) for p in params]).clone()
        old_surrogate, _ = surrogate_kl()
        for k in range(max_backtracks):
            set_flat_params(params, old + coef**k * step)
            surrogate, kl = surrogate_kl()
            if kl <= delta and surrogate > old_surrogate:  # False on NaN
                return True, k, float(kl), float(surrogate)
        set_flat_params(params, old)
    return False, max_backtracks, 0.0, float(old_surrogate)


class RunningMeanStd:
    """Mean and variance of a stream of batches (Chan et al.'s parallel update)."""

    def __init__(self, shape=()):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4

    def update(self, batch: np.ndarray):
        b_mean, b_var, b_count = batch.mean(0), batch.var(0), batch.shape[0]
        delta, total = b_mean - self.mean, self.count + b_count
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.mean, self.var, self.count = self.mean + delta * b_count / total, m2 / total, total


def check_args(args: Args) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:  # also when a comparison with NaN made `ok` False
            raise ArgError(message)

    need(0 <= args.seed < 2**32, f"--seed must lie in [0, 2**32), got {args.seed}")
    for name in ("num_envs", "num_steps", "num_minibatches", "critic_epochs", "cg_iters", "max_backtracks",
                 "hidden_size", "num_threads", "learning_rate", "target_kl"):  # fmt: skip
        need(getattr(args, name) > 0, f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    a, batch_size = args, args.num_envs * args.num_steps
    need(0 < a.backtrack_coef < 1, f"--backtrack-coef must lie in (0, 1), got {a.backtrack_coef}")
    need(a.cg_damping >= 0, f"--cg-damping must be >= 0, got {a.cg_damping}")
    for name in ("gamma", "gae_lambda"):
        need(0 <= getattr(a, name) <= 1, f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(a, name)}")
    need(a.eval_episodes >= 0, f"--eval-episodes must be >= 0, got {a.eval_episodes}")
    need(batch_size % a.num_minibatches == 0, f"--num-minibatches must divide the batch {batch_size}")
    need(a.total_timesteps != 0 or a.model_path is not None, "--total-timesteps 0 only evaluates: needs --model-path")
    need(a.total_timesteps == 0 or a.total_timesteps >= batch_size,
         f"--total-timesteps {a.total_timesteps} is less than one update (num_envs * num_steps = {batch_size})")  # fmt: skip
    need(a.model_path is None or os.path.isfile(a.model_path), f"--model-path {a.model_path}: no such file")
    has_video = all(importlib.util.find_spec(m) is not None for m in ("moviepy", "pygame"))
    need(not a.capture_video or has_video, '--capture-video needs: pip install "gymnasium[classic-control,other]"')


def evaluate(agent: Agent, args: Args, run_name: str, device: torch.device) -> list[float]:
    """Returns of `eval_episodes` episodes of the most likely action, no exploration."""
    env = gym.make(args.env_id, render_mode="rgb_array" if args.capture_video else None)
    if args.capture_video:
        env = gym.wrappers.RecordVideo(env, f"videos/{run_name}", episode_trigger=lambda e: True)
    returns = [0.0] * args.eval_episodes
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 + episode)
        done = False
        while not done:
            with torch.inference_mode():  # the most likely action: $\arg\max_a z_a$, or the mean $f(s)$
                out = agent.actor(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            action = out.argmax(-1) if agent.discrete else np.clip(out, env.action_space.low, env.action_space.high)
            obs, reward, terminated, truncated, _ = env.step(action)
            returns[episode] += float(reward)
            done = terminated or truncated
    env.close()
    return returns


def train(args: Args) -> dict:
    check_args(args)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.num_threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")

    try:
        envs = make_envs(args.env_id, args.num_envs, args.seed)
    except (gym.error.Error, ImportError) as e:  # unknown id, missing extra (MuJoCo, Box2D), ...
        raise ArgError(f"cannot make env {args.env_id!r}: {str(e).splitlines()[0]}") from None
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    if not isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise ArgError(f"trpo.py needs a Discrete or Box action space, {args.env_id} has {act_space}")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ArgError(f"trpo.py needs a flat Box observation space, {args.env_id} has {obs_space}")
    discrete = isinstance(act_space, gym.spaces.Discrete)
    obs_dim, action_dim = obs_space.shape[0], int(act_space.n) if discrete else act_space.shape[0]
    agent = Agent(obs_dim, action_dim, discrete, args.hidden_size).to(device)
    params = agent.policy_params()
    critic_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.learning_rate, eps=1e-5)
    reward_rms = RunningMeanStd()  # of the discounted return, for reward scaling
    if args.model_path is not None:
        try:
            saved = torch.load(args.model_path, map_location=device, weights_only=True)
            agent.load_state_dict(saved["agent"])
        except Exception as e:  # not a model file, or one saved for another env or network
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            raise ArgError(f"--model-path {args.model_path} does not fit {args.env_id}: {reason}") from None
        reward_rms.mean, reward_rms.var, reward_rms.count = saved.get("reward_stats", (0.0, 1.0, 1e-4))

    os.makedirs(f"runs/{run_name}", exist_ok=True)
    writer = None
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name, config=vars(args))
        writer = wandb
    progress = open(f"runs/{run_name}/progress.csv", "w", buffering=1)  # line-buffered: flushed per episode
    progress.write("global_step,wall_time,episodic_return,episodic_length\n")

    # Rollout storage, on the CPU as numpy: the env lives there.
    T, N = args.num_steps, args.num_envs
    batch_size, num_iterations, minibatch_size = T * N, args.total_timesteps // (T * N), T * N // args.num_minibatches
    obs_buf, next_obs_buf = np.zeros((2, T, N, obs_dim), dtype=np.float32)
    actions_buf = np.zeros((T, N) if discrete else (T, N, action_dim), dtype=np.int64 if discrete else np.float32)
    # rewards, terminated, done flags, and $\sum_k \gamma^k r_{t-k}$ (for reward scaling)
    rewards_buf, terminated_buf, dones_buf, discounted_buf = np.zeros((4, T, N), dtype=np.float32)

    global_step, episode_returns, interrupted = 0, [], False
    ep_return, discounted_return, ep_length = np.zeros(N), np.zeros(N), np.zeros(N, dtype=np.int64)
    obs, _ = envs.reset(seed=args.seed)
    start_time = last_print = time.time()
    try:
        for iteration in range(1, num_iterations + 1):
            # ## Rollout: run $\pi_{\theta_{old}}$ for T steps in each of the N envs
            for step in range(T):
                obs_buf[step] = obs
                with torch.inference_mode():
                    action = agent.sample(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
                actions_buf[step] = action  # as sampled; the env gets it clipped into the box
                action = action if discrete else np.clip(action, act_space.low, act_space.high)
                obs, reward, terminated, truncated, info = envs.step(action)
                global_step += N
                next_obs_buf[step] = true_next_obs(obs, info)  # the true $s_{t+1}$ where an episode ended
                done = terminated | truncated
                rewards_buf[step], terminated_buf[step], dones_buf[step] = reward, terminated, done
                discounted_buf[step] = discounted_return = discounted_return * args.gamma + reward
                discounted_return[done] = 0.0
                ep_return, ep_length = ep_return + reward, ep_length + 1
                for i in np.flatnonzero(done):
                    episode_returns.append(float(ep_return[i]))
                    progress.write(f"{global_step},{time.time() - start_time:.4f},{ep_return[i]:.6g},{ep_length[i]}\n")
                    if writer:
                        writer.log({"charts/episodic_return": ep_return[i], "charts/episodic_length": ep_length[i]},
                                   step=global_step)  # fmt: skip
                    ep_return[i], ep_length[i] = 0.0, 0

            # ## Advantages: one batched forward of V over $s_t$ and the true $s_{t+1}$
            # Reward scaling: $r_t / \sigma$, $\sigma$ the running std of the discounted return.
            rewards = rewards_buf
            if args.scale_rewards:
                reward_rms.update(discounted_buf.reshape(-1))
                rewards = (rewards_buf / np.sqrt(reward_rms.var + 1e-8)).astype(np.float32)
            b_obs = torch.from_numpy(obs_buf).to(device).reshape(batch_size, obs_dim)
            b_actions = torch.from_numpy(actions_buf).to(device).reshape(batch_size, *actions_buf.shape[2:])
            with torch.no_grad():
                values = agent.value(b_obs).reshape(T, N).cpu().numpy()
                next_values = agent.value(torch.from_numpy(next_obs_buf).to(device)).reshape(T, N).cpu().numpy()
                old_out, old_log_std = agent.dist(b_obs)  # $\pi_{\theta_{old}}$, kept while $\theta$ moves
                old_log_std = None if old_log_std is None else old_log_std.clone()
                old = (old_out, old_log_std, log_prob(old_out, old_log_std, b_actions))
            advantages = gae(rewards, values, next_values, terminated_buf, dones_buf, args.gamma, args.gae_lambda)
            returns = advantages + values  # $V^{targ}_t = \hat{A}_t + V(s_t)$
            flat = np.stack([advantages, returns, values]).reshape(3, batch_size)
            b_adv, b_returns, b_values = torch.from_numpy(flat).to(device)
            if args.norm_adv:
                b_adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8)

            # ## Policy: $g$, $s = F^{-1}g$ by CG, the step $\beta s$, the line search
            # With `--anneal-kl`, update $k$ of $K$ uses $\delta_k = \delta (1 - (k - 1) / K)$.
            delta = args.target_kl * (1.0 - (iteration - 1) / num_iterations if args.anneal_kl else 1.0)
            surrogate_kl = functools.partial(surrogate_and_kl, agent, b_obs, b_actions, b_adv, *old)
            surrogate, kl = surrogate_kl()
            g = flat_grad(surrogate, params, retain_graph=True)
            fvp = fisher_vector_product_fn(kl, params, args.cg_damping)
            s = conjugate_gradient(fvp, g, args.cg_iters)
            step = max_step(s, fvp(s), delta)
            accepted, backtracks, step_kl, new_surrogate = line_search(params, step, surrogate_kl, delta,
                                                                       args.backtrack_coef, args.max_backtracks)  # fmt: skip

            # ## Critic: minimise $(V(s_t) - V_t^{targ})^2$, $V_t^{targ} = \hat{A}_t + V_{old}(s_t)$, by Adam
            for _epoch in range(args.critic_epochs):
                perm = torch.randperm(batch_size, device=device)
                for start in range(0, batch_size, minibatch_size):
                    mb = perm[start : start + minibatch_size]
                    v_loss = 0.5 * (agent.value(b_obs[mb]) - b_returns[mb]).pow(2).mean()
                    critic_optimizer.zero_grad()
                    v_loss.backward()
                    critic_optimizer.step()

            finite = np.isfinite(new_surrogate) and torch.isfinite(v_loss)
            if not finite or not all(torch.isfinite(p).all() for p in agent.parameters()):
                raise FloatingPointError(f"loss or parameters became NaN/inf at global_step={global_step}")

            now = time.time()
            sps = int(global_step / (now - start_time))
            if writer:
                var_y = b_returns.var()
                explained_var = float("nan") if var_y == 0 else float(1 - (b_returns - b_values).var() / var_y)
                writer.log({
                    "charts/SPS": sps, "losses/policy_objective": new_surrogate, "losses/value_loss": v_loss.item(),
                    "losses/kl": step_kl, "losses/line_search_backtracks": backtracks, "losses/step_norm": step.norm().item(),
                    "losses/line_search_success": float(accepted), "losses/explained_variance": explained_var,
                }, step=global_step)  # fmt: skip
            if now - last_print >= 2.0 or iteration == num_iterations:
                last_print = now
                recent = np.mean(episode_returns[-20:]) if episode_returns else float("nan")
                eta = (args.total_timesteps - global_step) / max(sps, 1)
                print(f"step {global_step}/{args.total_timesteps} | {sps} SPS | {now - start_time:.0f}s elapsed, "
                      f"{eta:.0f}s left | mean return (last 20) {recent:.1f} | kl {step_kl:.4f}, "
                      f"backtracks {backtracks}{'' if accepted else ' (rejected)'}", flush=True)  # fmt: skip
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: saving what was reached", file=sys.stderr)
    wall_time = time.time() - start_time
    envs.close()
    progress.close()

    if args.save_model:
        path = f"runs/{run_name}/{args.exp_name}.pt"
        reward_stats = (float(reward_rms.mean), float(reward_rms.var), float(reward_rms.count))
        torch.save({"agent": agent.state_dict(), "reward_stats": reward_stats, "args": vars(args)}, path)
        print(f"model saved to {path}")

    eval_returns = [] if interrupted else evaluate(agent, args, run_name, device)
    mean, std = (float(np.mean(eval_returns)), float(np.std(eval_returns))) if eval_returns else (None, None)
    summary = {
        "algo": "trpo", "env_id": args.env_id, "seed": args.seed, "global_step": global_step,
        "wall_time_s": wall_time, "sps": global_step / wall_time if wall_time > 0 else 0.0,
        "eval_mean_return": mean, "eval_std_return": std, "eval_episodes": len(eval_returns),
        "train_last_mean_return": float(np.mean(episode_returns[-20:])) if episode_returns else None,
        "interrupted": interrupted, "run_name": run_name,
    }  # fmt: skip
    with open(f"runs/{run_name}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    if writer:
        writer.log({"eval/mean_return": summary["eval_mean_return"]}, step=global_step)
        writer.finish()
    print(f"eval: mean_return={mean} std_return={std} episodes={len(eval_returns)}")
    return summary


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgError, FloatingPointError) as e:  # bad input: exit 2; NaN/inf in training: exit 1
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ArgError) else 1)
    except KeyboardInterrupt:  # during evaluation; training itself stops cleanly on Ctrl-C
        sys.exit(130)
