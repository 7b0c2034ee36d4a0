r"""Trust Region Policy Optimization (TRPO), for Discrete and Box actions.

Paper: Schulman, Levine, Moritz, Jordan, Abbeel. "Trust Region Policy Optimization", ICML 2015
(arXiv:1502.05477). Lecture: slide "Trust Region Policy Optimization (TRPO)", with the softmax and
Gaussian output layers of "Policy Gradient Methods".

Each update maximises $\mathcal{L}(\theta) = \hat{\mathbb{E}}_t[r_t(\theta)\hat{A}_t]$ subject to
$\bar{D}_{KL}(\theta_{old}, \theta) \le \delta$ by a natural-gradient step $\beta F^{-1}g$ ($F$: the
Fisher matrix) and a line search; $\hat{A}_t$ is GAE($\lambda$) with a critic $V(s)$.

Run: python trpo.py --env-id CartPole-v1
Pendulum-v1: python trpo.py --env-id Pendulum-v1 --gamma 0.9 --gae-lambda 0.9 --target-kl 0.03 \
    --anneal-kl --num-minibatches 8 --critic-epochs 20"""

import functools
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
    """TRPO: natural-gradient steps in a KL trust region, for Discrete or Box actions."""

    # TRPO's own fields, with CleanRL's names and meanings where CleanRL has them.
    target_kl: float = 0.01
    """delta, the trust region: bound on the mean KL between old and new policy"""
    anneal_kl: bool = False
    """shrink delta linearly towards 0 over training: steadier steps near the end"""
    cg_iters: int = 15
    """conjugate-gradient iterations for the natural-gradient direction s = F^-1 g"""
    cg_damping: float = 0.1
    """added to the Fisher matrix, F + damping I, so CG stays well conditioned"""
    backtrack_coef: float = 0.8
    """the line search shrinks the step by this factor after each rejected trial"""
    max_backtracks: int = 10
    """trial steps of the line search before it gives up and keeps the old policy"""
    accept_ratio: float = 0.1
    """the line search takes a step gaining more than this fraction of its linear model's g^T x"""
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
    gamma: float = 0.999
    """discount factor gamma (0.999: LunarLander's landing, hundreds of steps away, still counts)"""
    gae_lambda: float = 0.98
    """lambda of GAE (1: Monte-Carlo returns, 0: one-step TD)"""
    norm_adv: bool = True
    """normalize the advantages of each rollout"""
    scale_rewards: bool = True
    """divide rewards by the running std of the discounted return (keeps V's targets near 1)"""
    norm_obs: bool = False
    """normalize observations with running mean and std (saved with the model, frozen at eval)"""
    clip_obs: float = 10.0
    """clip normalized observations to [-clip_obs, clip_obs]"""
    hidden_size: int = 64
    """units in each of the two hidden layers"""
    num_threads: int = 1
    """torch CPU threads (1 is fastest for networks this small)"""

    # The fields every script shares (CONTRIBUTING.md), same names and meanings in all nine.
    exp_name: str = "trpo"
    """the name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of random, numpy, torch and the environments"""
    torch_deterministic: bool = True
    """set torch.backends.cudnn.deterministic (only cuDNN reads it; these MLPs never use cuDNN)"""
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
    """save the weights (and normalization statistics) to runs/<run_name>/<exp_name>.pt"""
    model_path: str | None = None
    """load weights from this file before training (with --total-timesteps 0: only evaluate)"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id"""
    total_timesteps: int = 99_328
    """environment steps to train for, over all environments"""
    eval_episodes: int = 10
    """episodes of the final, deterministic policy to evaluate"""


# ## Environments
# Gymnasium 1.x vector envs, `SAME_STEP` autoreset: `step` returns the next episode's first
# observation, the true last one in `info["final_obs"]`.
def make_envs(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
    env_fns = [lambda: gym.make(env_id) for _ in range(num_envs)]
    return gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def true_next_obs(obs: np.ndarray, info: dict) -> np.ndarray:
    """$s_{t+1}$ of every env: `obs`, except where an episode just ended: its true last one."""
    if "final_obs" not in info:
        return obs
    next_obs = obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        next_obs[i] = info["final_obs"][i]
    return next_obs


# ## Networks
# Orthogonal weights of gain `std`, zero biases; two tanh hidden layers. The small gain of the
# policy's last layer starts $\pi$ near uniform (or the mean near 0).
def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(n_in: int, n_hidden: int, n_out: int, out_std: float) -> nn.Sequential:
    return nn.Sequential(
        layer_init(nn.Linear(n_in, n_hidden)),
        nn.Tanh(),
        layer_init(nn.Linear(n_hidden, n_hidden)),
        nn.Tanh(),
        layer_init(nn.Linear(n_hidden, n_out), std=out_std),
    )


# ## The policy and the critic
# The actor $\pi(a|s;\theta)$ outputs the logits $\mathbf{z}$ (softmax layer), or the mean $f(s)$
# of a Gaussian whose $\log\sigma$ is a free parameter; the critic $V(s)$ is a separate network.
class Agent(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, discrete: bool, hidden: int):
        super().__init__()
        self.discrete = discrete
        self.critic = mlp(obs_dim, hidden, 1, out_std=1.0)
        self.actor = mlp(obs_dim, hidden, action_dim, out_std=0.01)
        if not discrete:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def policy_params(self) -> list[nn.Parameter]:
        """$\\theta$: what the trust-region step moves (the actor, and $\\log\\sigma$)."""
        return list(self.actor.parameters()) + ([] if self.discrete else [self.log_std])

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The output layer's parameters: (logits, None) or (mean, log_std)."""
        out = self.actor(obs)
        return (out, None) if self.discrete else (out, self.log_std)

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        """$a \\sim \\pi(\\cdot|s)$: softmax over the logits, or $\\mathcal{N}(f(s), \\sigma^2)$."""
        out = self.actor(obs)
        # Softmax by the Gumbel-max trick, $\arg\max_a (z_a - \log(-\log u_a))$, $u_a \sim U(0,1)$:
        # a whole default CartPole run with `torch.distributions.Categorical(logits=out).sample()`
        # took 1.21 times the CPU time (median of 5 alternating pairs).
        if self.discrete:
            u = torch.rand_like(out)
            return torch.argmax(out - torch.log(-torch.log(u)), dim=-1)
        return torch.distributions.Normal(out, torch.exp(self.log_std)).sample()

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """The most likely action, for evaluation."""
        out = self.actor(obs)
        return torch.argmax(out, dim=-1) if self.discrete else out


# ## Log-likelihood and KL of the two output layers
# Written out, as the lecture's math, not taken from `torch.distributions` (the tests compare).
# Softmax: $\log\pi(a|s) = z_a - \log\sum_b e^{z_b}$.
# Gaussian: $\log \pi(a|s) = -\sum_i \left[\frac{(a_i - \mu_i)^2}{2\sigma_i^2} + \log \sigma_i
# + \frac{1}{2}\log 2\pi\right]$.
def log_prob(out: torch.Tensor, log_std: torch.Tensor | None, actions: torch.Tensor):
    if log_std is None:
        log_p = torch.log_softmax(out, -1)
        return log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    z = (actions - out) * torch.exp(-log_std)
    return -(0.5 * z.pow(2) + log_std + 0.5 * float(np.log(2 * np.pi))).sum(-1)


# $KL(\pi_{old} || \pi)$ per state, the paper's order; a departure: the slide writes
# $KL(\pi_\theta || \pi_{old})$. Both agree to second order at $\theta_{old}$ (same $F$, same
# step); only the line search's measured KL differs.
# Softmax: $\sum_a p^{old}_a (\log p^{old}_a - \log p_a)$.
# Gaussian: $\sum_i \left[\log\frac{\sigma_i}{\sigma^{old}_i}
# + \frac{(\sigma^{old}_i)^2 + (\mu^{old}_i - \mu_i)^2}{2\sigma_i^2} - \frac{1}{2}\right]$.
def kl_divergence(old_out, old_log_std, out, log_std) -> torch.Tensor:
    if log_std is None:
        old_logp = torch.log_softmax(old_out, -1)
        logp = torch.log_softmax(out, -1)
        return (old_logp.exp() * (old_logp - logp)).sum(-1)
    var_ratio = torch.exp(2 * (old_log_std - log_std))
    mean_term = (old_out - out).pow(2) * torch.exp(-2 * log_std)
    return (log_std - old_log_std + 0.5 * (var_ratio + mean_term) - 0.5).sum(-1)


# ## Generalized advantage estimation
# $\delta_t = r_t + \gamma V(s_{t+1})(1 - \text{terminated}_t) - V(s_t)$ and
# $\hat{A}_t = \delta_t + \gamma\lambda (1 - \text{done}_t) \hat{A}_{t+1}$: unrolled, the
# $\lambda$-weighted sum $\hat{A}_t = \sum_l (\gamma\lambda)^l \delta_{t+l}$, i.e. the mix
# $(1-\lambda)\sum_k \lambda^{k-1} \hat{A}^{(k)}_t$ of the $k$-step advantages
# $\hat{A}^{(k)}_t = \sum_{l<k} \gamma^l r_{t+l} + \gamma^k V(s_{t+k}) - V(s_t)$.
# `next_values[t]`: $V$ of the true next state, also after a time limit (not terminal: it
# bootstraps); `dones[t]` only stops the sum.
def gae(rewards, values, next_values, terminated, dones, gamma: float, gae_lambda: float):
    advantages = np.zeros_like(rewards)
    next_advantage = np.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminated[t]) - values[t]
        next_advantage = delta + gamma * gae_lambda * (1.0 - dones[t]) * next_advantage
        advantages[t] = next_advantage
    return advantages


# ## The surrogate and the constraint
# $\mathcal{L}(\theta) = \hat{\mathbb{E}}_t[r_t(\theta)\hat{A}_t]$, with
# $r_t = \exp(\log\pi_\theta(a_t|s_t) - \log\pi_{\theta_{old}}(a_t|s_t))$, and
# $\bar{D}_{KL}(\theta)$, the mean KL over the rollout's states (`old_*`: $\pi_{\theta_{old}}$,
# detached).
def surrogate_and_kl(agent, obs, actions, advantages, old_out, old_log_std, old_log_prob):
    out, log_std = agent.dist(obs)
    ratio = torch.exp(log_prob(out, log_std, actions) - old_log_prob)
    surrogate = (ratio * advantages).mean()
    kl = kl_divergence(old_out, old_log_std, out, log_std).mean()
    return surrogate, kl


def flat_grad(y: torch.Tensor, params, **kwargs) -> torch.Tensor:
    """$\\nabla_\\theta y$ as one flat vector."""
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(y, params, **kwargs)])


def set_flat_params(params, flat: torch.Tensor) -> None:
    """Write the flat vector into `params`, in place and exact: the same floats come back out."""
    with torch.no_grad():
        for p, x in zip(params, flat.split([p.numel() for p in params])):
            p.copy_(x.view_as(p))


# ## The Fisher-vector product
# $Fv = \nabla_\theta [(\nabla_\theta \bar{D}_{KL})^T v]$ by double backprop, without forming $F$
# (the KL's Hessian at $\theta_{old}$). Damping: $(F + cI)v$.
def fisher_vector_product_fn(kl: torch.Tensor, params, damping: float):
    grad_kl = flat_grad(kl, params, create_graph=True)
    return lambda v: flat_grad(grad_kl @ v, params, retain_graph=True) + damping * v


# ## Conjugate gradient
# Solves $Fx = g$, $F$ symmetric positive definite and known only as $v \mapsto Fv$ (exact in
# $n$ iterations). Each iteration moves $x$ along the direction $p$ to the minimum of
# $\frac{1}{2}x^T F x - g^T x$ on that line, then makes the next direction $F$-conjugate to $p$.
def conjugate_gradient(Av, b: torch.Tensor, iters: int, residual_tol: float = 1e-10):
    x = torch.zeros_like(b)
    r = b.clone()  # the residual $r = b - Ax$
    p = b.clone()  # the search direction
    rr = r @ r
    for _ in range(iters):
        if rr < residual_tol:
            break
        # The exact step along $p$: $\alpha = r^T r / p^T F p$.
        Ap = Av(p)
        alpha = rr / (p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        # The next direction: the new residual, made $F$-conjugate to the old direction.
        rr_old = rr
        rr = r @ r
        p = r + (rr / rr_old) * p
    return x


# ## The step length, from the quadratic model
# Near $\theta_{old}$, $\mathcal{L}(\theta_{old} + x) \approx \mathcal{L} + g^T x$ and
# $\bar{D}_{KL} \approx \frac{1}{2}x^T F x$. Maximising $g^T x$ subject to
# $\frac{1}{2}x^T F x \le \delta$: the Lagrangian's gradient $g - \lambda F x = 0$ gives
# $x = \beta s$ with $s = F^{-1}g$, and the constraint, active at the optimum,
# $\frac{1}{2}\beta^2 s^T F s = \delta$, gives $\beta = \sqrt{2\delta / s^T F s}$. The model then
# expects the gain $g^T \beta s = \beta\, s^T F s = \sqrt{2\delta\, g^T F^{-1} g}$.
# A departure from the slide: `Fs` is the damped $(F + cI)s$, so the step is a little shorter.
def max_step(s: torch.Tensor, Fs: torch.Tensor, delta: float) -> torch.Tensor:
    return torch.sqrt(2.0 * delta / (s @ Fs)) * s


# ## Backtracking line search
# Trials $\theta_{old} + \alpha^k x$, $k = 0, 1, \dots$: the first with a measured
# $\bar{D}_{KL} \le \delta$ and a gain $\mathcal{L}(\theta) - \mathcal{L}(\theta_{old})$ of more than
# `accept_ratio` times the linear model's $\alpha^k g^T x$ (`expected` is $g^T x$) is
# taken, as in the TRPO paper's code; else $\theta_{old}$ comes back exactly.
# Returns (accepted, backtracks, KL, $\mathcal{L}$).
def line_search(params, step, expected, surrogate_kl, delta, coef, max_backtracks, accept_ratio):
    with torch.no_grad():
        old = torch.cat([p.reshape(-1) for p in params]).clone()
        old_surrogate, _ = surrogate_kl()
        for k in range(max_backtracks):
            # Trial $k$: $\theta_{old} + \alpha^k x$, measured, and the model's gain for it.
            fraction = coef**k
            set_flat_params(params, old + fraction * step)
            surrogate, kl = surrogate_kl()
            improvement = surrogate - old_surrogate
            enough = improvement > accept_ratio * fraction * expected
            if kl <= delta and improvement > 0 and enough:  # False on NaN
                return True, k, float(kl), float(surrogate)
        # No trial passed: $\theta_{old}$ again.
        set_flat_params(params, old)
    return False, max_backtracks, 0.0, float(old_surrogate)


# ## One TRPO step
# $g = \nabla_\theta \mathcal{L}$ at $\theta_{old}$, $s = F^{-1}g$ by CG, the step $x = \beta s$ to
# the edge of the quadratic trust region, then the line search along it. `surrogate_kl()` returns
# $(\mathcal{L}(\theta), \bar{D}_{KL}(\theta))$ for the current `params`.
# Returns (accepted, backtracks, KL, $\mathcal{L}$, $|x|$).
def trpo_step(params, surrogate_kl, delta, cg_iters, damping, coef, max_backtracks, accept_ratio):
    # The gradient and $v \mapsto (F + cI)v$, both from one forward pass at $\theta_{old}$.
    surrogate, kl = surrogate_kl()
    g = flat_grad(surrogate, params, retain_graph=True)
    fvp = fisher_vector_product_fn(kl, params, damping)
    # The natural-gradient direction and the full step.
    s = conjugate_gradient(fvp, g, cg_iters)
    step = max_step(s, fvp(s), delta)
    # What the linear model expects of the full step: $g^T x$.
    expected = float(g @ step)
    accepted, backtracks, step_kl, new_surrogate = line_search(
        params, step, expected, surrogate_kl, delta, coef, max_backtracks, accept_ratio
    )
    return accepted, backtracks, step_kl, new_surrogate, float(step.norm().nan_to_num())


class RunningMeanStd:
    """Mean and variance of a stream of batches (Chan et al.'s parallel update)."""

    def __init__(self, shape=()):
        self.mean = np.zeros(shape)
        self.var = np.ones(shape)
        self.count = 1e-4

    def update(self, batch: np.ndarray):
        # Merge the batch's moments into the running ones: the sum of squared deviations `m2` of
        # both parts, plus the spread between their means.
        b_mean = batch.mean(0)
        b_var = batch.var(0)
        b_count = batch.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var = m2 / total
        self.count = total


# ## Observation normalization
# $\tilde{s} = \text{clip}((s - \mu_s) / \sqrt{\sigma_s^2 + 10^{-8}}, -c, c)$, with
# $\mu_s, \sigma_s^2$ of every $s$ seen so far (`update` adds `obs` first): saved with the
# policy, frozen at evaluation.
def normalize_obs(obs: np.ndarray, rms: RunningMeanStd | None, clip: float, update: bool = False):
    if rms is not None and update:
        rms.update(obs)
    if rms is not None:
        obs = np.clip((obs - rms.mean) / np.sqrt(rms.var + 1e-8), -clip, clip)
    return obs.astype(np.float32)


def frozen_policy(agent: Agent, rms: RunningMeanStd | None, clip: float):
    """The evaluated policy: observations normalized with the statistics as training left them."""

    def policy(obs: torch.Tensor) -> torch.Tensor:
        normalized = normalize_obs(obs.cpu().numpy(), rms, clip)
        return agent.mode(torch.from_numpy(normalized).to(obs.device))

    return policy


# ## Reward scaling
# $\tilde{r}_t = r_t / \sqrt{\text{Var}[G] + 10^{-8}}$, with $G_t = \gamma G_{t-1} + r_t$ the
# discounted sum of the running episode's rewards, its variance over all rollouts so far
# (Engstrom et al. 2020). Subtracting a mean would change the task.
class RewardScaler:
    def __init__(self, num_envs: int, gamma: float):
        self.rms = RunningMeanStd()
        self.gamma = gamma
        self.G = np.zeros(num_envs)

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        # $G_t$ of every step of the rollout, restarted after each episode's end.
        G = np.zeros_like(rewards)
        for t in range(len(rewards)):
            self.G = self.G * self.gamma + rewards[t]
            G[t] = self.G
            self.G = self.G * (1.0 - dones[t])
        # Its variance over all rollouts so far scales every reward of this one.
        self.rms.update(G.reshape(-1))
        return (rewards / np.sqrt(self.rms.var + 1e-8)).astype(np.float32)


# ## Fitting the critic
# Minimise $\frac{1}{2}(V(s_t) - V^{targ}_t)^2$ by `optimizer`: `epochs` passes over the batch, each
# in shuffled minibatches of `minibatch_size`. Returns the last minibatch's loss.
def fit_critic(agent, optimizer, obs, returns, epochs: int, minibatch_size: int) -> torch.Tensor:
    for _epoch in range(epochs):
        for mb in torch.randperm(len(obs), device=obs.device).split(minibatch_size):
            v_loss = 0.5 * (agent.value(obs[mb]) - returns[mb]).pow(2).mean()
            optimizer.zero_grad()
            v_loss.backward()
            optimizer.step()
    return v_loss


# ## Checks of TRPO's own arguments
# Bad values are one `error:` line (exit 2) before anything is built.
def check_args(args: Args) -> None:
    sizes = ["num_envs", "num_steps", "num_minibatches", "critic_epochs", "cg_iters", "hidden_size"]
    sizes += ["max_backtracks", "num_threads", "learning_rate", "target_kl", "clip_obs"]
    # (name, allowed or not, the allowed range); every comparison is False for NaN.
    checks = [(name, getattr(args, name) > 0, "positive") for name in sizes]
    checks.append(("backtrack_coef", 0 < args.backtrack_coef < 1, "in (0, 1)"))
    checks.append(("accept_ratio", 0 <= args.accept_ratio < 1, "in [0, 1)"))
    checks.append(("cg_damping", args.cg_damping >= 0, ">= 0"))
    checks.append(("gamma", 0 <= args.gamma <= 1, "in [0, 1]"))
    checks.append(("gae_lambda", 0 <= args.gae_lambda <= 1, "in [0, 1]"))
    for name, ok, allowed in checks:
        if not ok:
            flag = "--" + name.replace("_", "-")
            raise ArgError(f"{flag} must be {allowed}, got {getattr(args, name)}")
    # Whole minibatches of the rollout for the critic.
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches:
        n = args.num_minibatches
        raise ArgError(f"--num-minibatches {n} must divide num_envs * num_steps = {batch_size}")


def train(args: Args) -> dict:
    check_args(args)
    # The checks every script shares: the env id, its spaces, --seed, --model-path, ...
    run = Run(args, "trpo", (gym.spaces.Discrete, gym.spaces.Box))

    # ## Seeds, device, spaces: `random`, numpy and torch seeded; one CPU thread, the fastest for networks this small
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.num_threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    # N envs; the sizes of $s$ and of the logits $\mathbf{z}$ (Discrete) or of $a$ (Box: its bounds clip).
    envs = make_envs(args.env_id, args.num_envs)
    obs_dim = envs.single_observation_space.shape[0]
    action_space = envs.single_action_space
    discrete = isinstance(action_space, gym.spaces.Discrete)
    action_dim = int(action_space.n) if discrete else action_space.shape[0]
    action_low = None if discrete else action_space.low
    action_high = None if discrete else action_space.high

    # ## The networks: $\pi_\theta$ and $V$, Adam for $V$ only ($\theta$ moves by the trust-region step), the running
    # statistics of $s$ (`--norm-obs`) and of the return (`--scale-rewards`); `run.start` fills them from `--model-path`.
    agent = Agent(obs_dim, action_dim, discrete, args.hidden_size).to(device)
    critic_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.learning_rate, eps=1e-5)
    obs_rms = RunningMeanStd((obs_dim,)) if args.norm_obs else None
    reward_scaler = RewardScaler(args.num_envs, args.gamma)
    T, N = args.num_steps, args.num_envs
    batch_size = T * N
    minibatch_size = batch_size // args.num_minibatches
    run.start(batch_size, agent=agent, obs_rms=obs_rms, reward_rms=reward_scaler.rms)

    # ## Rollout storage: T x N $(s_t, a_t, r_t, s_{t+1})$ in numpy, $s$ normalized as $\pi_{\theta_{old}}$ saw it
    obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)
    next_obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)
    action_shape = (T, N) if discrete else (T, N, action_dim)
    actions_buf = np.zeros(action_shape, dtype=np.int64 if discrete else np.float32)
    rewards_buf = np.zeros((T, N), dtype=np.float32)
    terminated_buf = np.zeros((T, N), dtype=np.float32)
    dones_buf = np.zeros((T, N), dtype=np.float32)
    global_step = 0
    # The statistics move only while training: an evaluation-only run keeps the loaded ones.
    first_obs, _ = envs.reset(seed=args.seed)
    obs = normalize_obs(first_obs, obs_rms, args.clip_obs, update=run.num_iterations > 0)

    for iteration in run.iterations():
        # ## Rollout: run $\pi_{\theta_{old}}$ for T steps in each of the N envs
        # $a_t$ is stored as sampled; the env gets it clipped into the box. The true $s_{t+1}$ is normalized like
        # the next row's $s_{t+1}$, so $V(s_{t+1})$ bootstraps a truncated episode from the input $V$ is trained on.
        for step in range(T):
            obs_buf[step] = obs
            with torch.inference_mode():
                action = agent.sample(torch.from_numpy(obs).to(device)).cpu().numpy()
            actions_buf[step] = action
            if not discrete:
                action = np.clip(action, action_low, action_high)
            raw_obs, reward, terminated, truncated, info = envs.step(action)
            global_step += N
            # The statistics take in the new row first; both $s_{t+1}$ are normalized with them.
            obs = normalize_obs(raw_obs, obs_rms, args.clip_obs, update=True)
            next_obs_buf[step] = normalize_obs(true_next_obs(raw_obs, info), obs_rms, args.clip_obs)
            # Termination stops the bootstrap; either end stops the GAE sum.
            done = terminated | truncated
            rewards_buf[step] = reward
            terminated_buf[step] = terminated
            dones_buf[step] = done
            run.record(global_step, reward, done)

        # ## Advantages: $\tilde{r}_t$; one batched forward of V over $s_t$ and over the true $s_{t+1}$;
        # $\pi_{\theta_{old}}$'s outputs, kept (detached) for the ratio and the KL.
        rewards = reward_scaler(rewards_buf, dones_buf) if args.scale_rewards else rewards_buf
        b_obs = torch.from_numpy(obs_buf).to(device).reshape(batch_size, obs_dim)
        b_actions = torch.from_numpy(actions_buf).to(device).flatten(0, 1)
        with torch.no_grad():
            values = agent.value(b_obs).reshape(T, N).cpu().numpy()
            next_values = agent.value(torch.from_numpy(next_obs_buf).to(device))
            next_values = next_values.reshape(T, N).cpu().numpy()
            old_out, old_log_std = agent.dist(b_obs)
            old_log_std = None if old_log_std is None else old_log_std.clone()
            old_log_prob = log_prob(old_out, old_log_std, b_actions)
        # $\hat{A}_t$ by GAE, the critic's targets $V^{targ}_t = \hat{A}_t + V(s_t)$ and the share of their variance
        # that $V(s_t)$ explains (1: a perfect critic), flat over the T x N batch; $\hat{A}_t$ normalized (`--norm-adv`).
        advantages = gae(rewards, values, next_values, terminated_buf, dones_buf,
                         args.gamma, args.gae_lambda)  # fmt: skip
        returns = advantages + values
        b_adv = torch.from_numpy(advantages).to(device).flatten()
        b_returns = torch.from_numpy(returns).to(device).flatten()
        explained_variance = 1 - np.var(returns - values) / max(np.var(returns), 1e-12)
        if args.norm_adv:
            b_adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8)

        # ## Policy: one TRPO step, $\max_\theta \mathcal{L}(\theta)$ subject to $\bar{D}_{KL} \le \delta$;
        # with `--anneal-kl`, update $k$ of $K$ has $\delta_k = \delta (1 - (k - 1) / K)$.
        anneal = 1.0 - (iteration - 1) / run.num_iterations if args.anneal_kl else 1.0
        delta = args.target_kl * anneal
        surrogate_kl = functools.partial(surrogate_and_kl, agent, b_obs, b_actions, b_adv,
                                         old_out, old_log_std, old_log_prob)  # fmt: skip
        accepted, backtracks, step_kl, new_surrogate, step_norm = trpo_step(
            agent.policy_params(), surrogate_kl, delta, args.cg_iters, args.cg_damping,
            args.backtrack_coef, args.max_backtracks, args.accept_ratio)  # fmt: skip

        # ## Critic: $V$ fitted to $V^{targ}_t$ by Adam, in shuffled minibatches (`fit_critic`)
        v_loss = fit_critic(agent, critic_optimizer, b_obs, b_returns, args.critic_epochs,
                            minibatch_size)  # fmt: skip

        # ## Logging: what the line search decided, the critic's last minibatch loss, the explained variance
        metrics = {
            "losses/policy_objective": new_surrogate,
            "losses/value_loss": v_loss,
            "losses/kl": step_kl,
            "losses/line_search_backtracks": backtracks,
            "losses/line_search_success": float(accepted),
            "losses/step_norm": step_norm,
            "losses/explained_variance": explained_variance,
        }
        run.log(global_step, metrics)

    # ## The end: the evaluated policy acts by its mode, on $s$ normalized as training left the statistics.
    envs.close()
    return run.finish(global_step, frozen_policy(agent, obs_rms, args.clip_obs))


# ## Bookkeeping
# Everything below is the same, byte for byte, in all nine scripts: the run folder, progress.csv and
# metrics.csv, W&B, the status line, the NaN guard, Ctrl-C, saving and loading, the evaluation and the
# summary, the checks every script shares, and `main()`. It holds no part of the method; read it once.

import configparser
import csv
import dataclasses
import importlib.util
import itertools
import json
import math
import netrc
import re
import shutil
import signal
import threading
from urllib.parse import urlsplit

# The fields of `Args`, in any of the nine scripts, that shape what a checkpoint holds (the networks and the
# observations they see): `--model-path` brings them along where the command line does not give them.
MODEL_ARGS = ("hidden_size", "critic", "norm_obs", "clip_obs")


class ArgError(ValueError):
    """Bad input: reported as one `error:` line and exit status 2."""


class EvaluationError(RuntimeError):
    """The evaluation after training failed, once the model and summary.json were written: exit status 1."""


class Run:
    """One training run, from the checks of its arguments to its summary.

    `train` makes one, then calls `start` (after building its networks), `iterations` (the loop),
    `record` (every env step), `log` (every update) and `finish` (returns the summary).
    """

    def __init__(self, args, algo: str, action_spaces: tuple):
        check_common_args(args)
        self.args, self.algo = args, algo
        # MuJoCo picks its drawing backend once, as its first env is made: on a Linux machine with no display,
        # --capture-video draws through EGL (off-screen), not GLFW (a window), unless MUJOCO_GL says otherwise.
        if args.capture_video and sys.platform == "linux" and not os.environ.get("DISPLAY"):
            os.environ.setdefault("MUJOCO_GL", "egl")
        # Probe the env once, so an unknown id or an unsupported space is an error before anything is written.
        try:
            env = gym.make(args.env_id)
        except (gym.error.Error, ImportError) as e:  # unknown id, missing extra (MuJoCo, Box2D), ...
            raise ArgError(f"cannot make env {args.env_id!r}: {str(e).splitlines()[0]}") from None
        obs_space, act_space = env.observation_space, env.action_space
        env.close()
        if not isinstance(act_space, action_spaces):
            needs = " or ".join(space.__name__ for space in action_spaces)
            raise ArgError(f"{algo}.py needs a {needs} action space, {args.env_id} has {act_space}")
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise ArgError(f"{algo}.py needs a flat Box observation space, {args.env_id} has {obs_space}")
        self.discrete = isinstance(act_space, gym.spaces.Discrete)
        self.obs_dim = obs_space.shape[0]
        self.action_dim = int(act_space.n) if self.discrete else act_space.shape[0]
        self.action_low = None if self.discrete else act_space.low
        self.action_high = None if self.discrete else act_space.high
        if args.cuda and not torch.cuda.is_available():
            print("warning: --cuda given but no GPU is available: running on the CPU", file=sys.stderr)
        self.device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
        self.name = self.progress = self.wandb = self.metrics = self.metrics_file = None
        self.episode_returns, self.ep_return, self.ep_length = [], None, None
        self.num_iterations = self.planned_steps = 0
        self.interrupted, self.previous_handler = False, None

    def start(self, steps_per_iteration: int, **checkpoint) -> None:
        """Load `--model-path` into the `checkpoint` objects, then open the run folder, progress.csv and W&B."""
        args = self.args
        if 0 < args.total_timesteps < steps_per_iteration:
            raise ArgError(
                f"--total-timesteps {args.total_timesteps} is less than one update ({steps_per_iteration} steps)"
            )
        self.checkpoint = {key: part for key, part in checkpoint.items() if part is not None}
        if args.model_path is not None:
            self.load(args.model_path)
        self.num_iterations = args.total_timesteps // steps_per_iteration
        self.planned_steps = self.num_iterations * steps_per_iteration
        # A folder name any file system takes: `my_envs:Maze-v0` gives `my_envs-Maze-v0` (summary.json keeps the id).
        safe = re.sub(r"[^A-Za-z0-9._-]", "-", f"{args.env_id}__{args.exp_name}")
        prefix = f"{safe}__{args.seed}__{int(time.time())}"
        os.makedirs("runs", exist_ok=True)
        for k in itertools.count(1):  # mkdir fails if the folder exists: two runs never share one
            self.name = prefix if k == 1 else f"{prefix}_{k}"
            try:
                os.mkdir(f"runs/{self.name}")
                break
            except FileExistsError:
                continue
        print(f"run folder: runs/{self.name}", flush=True)
        if self.planned_steps != args.total_timesteps:
            print(f"training {self.planned_steps} of the {args.total_timesteps} steps asked: "
                  f"{self.num_iterations} whole updates of {steps_per_iteration} steps", flush=True)  # fmt: skip
        self.progress = open(f"runs/{self.name}/progress.csv", "w")
        self.progress.write("global_step,wall_time,episodic_return,episodic_length\n")
        if args.track:
            import wandb

            try:
                wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=self.name, config=vars(args))
            except Exception as e:  # a key W&B refuses, no network, ...: this run leaves nothing behind
                self.close()
                shutil.rmtree(f"runs/{self.name}")
                raise ArgError(f"--track: {first_line(e)}: run `wandb login`, or set WANDB_MODE=offline") from None
            self.wandb = wandb
        # Ctrl-C sets `interrupted`: the loop ends after the current iteration and the run is finished as usual.
        if threading.current_thread() is threading.main_thread():
            self.previous_handler = signal.signal(signal.SIGINT, self.on_ctrl_c)
        self.start_time = self.last_print = time.time()

    def on_ctrl_c(self, signum, frame) -> None:
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
        print("interrupted: finishing this iteration, then saving what was reached", file=sys.stderr)

    def iterations(self):
        """1, 2, ..., num_iterations, or fewer after a Ctrl-C."""
        for iteration in range(1, self.num_iterations + 1):
            if self.interrupted:
                break
            yield iteration

    def record(self, global_step: int, rewards, dones, active=None) -> None:
        """Add one step's rewards of every env (`active`: which envs count); log the episodes that ended."""
        rewards, dones = np.asarray(rewards, dtype=np.float64), np.asarray(dones, dtype=bool)
        active = np.ones(dones.shape, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        if self.ep_return is None:
            self.ep_return, self.ep_length = np.zeros(dones.shape), np.zeros(dones.shape, dtype=np.int64)
        self.ep_return += np.where(active, rewards, 0.0)
        self.ep_length += active
        for i in np.flatnonzero(dones & active):
            ret, length = float(self.ep_return[i]), int(self.ep_length[i])
            self.episode_returns.append(ret)
            self.progress.write(f"{global_step},{time.time() - self.start_time:.4f},{ret:.6g},{length}\n")
            self.progress.flush()
            if self.wandb:
                self.wandb.log({"charts/episodic_return": ret, "charts/episodic_length": length}, step=global_step)
            self.ep_return[i], self.ep_length[i] = 0.0, 0

    def log(self, global_step: int, metrics: dict) -> None:
        """After an update: stop on NaN/inf, log `metrics` to metrics.csv and W&B, print the status line every 2 s."""
        metrics = {key: value.item() if hasattr(value, "item") else value for key, value in metrics.items()}
        bad = [key for key, value in metrics.items() if not math.isfinite(value)]
        for key, part in self.checkpoint.items():
            state = state_of(part)
            if not all(
                torch.isfinite(t).all() for t in ([state] if isinstance(state, torch.Tensor) else state.values())
            ):
                bad.append(key)
        if bad:
            self.close()
            raise FloatingPointError(f"{', '.join(bad)} became NaN/inf at global_step={global_step}")
        now = time.time()
        sps = int(global_step / max(now - self.start_time, 1e-9))
        self.write_metrics({"global_step": global_step, "wall_time": round(now - self.start_time, 4), **metrics,
                            "charts/SPS": sps})  # fmt: skip
        if self.wandb:
            self.wandb.log({**metrics, "charts/SPS": sps}, step=global_step)
        if now - self.last_print >= 2.0:
            self.last_print = now
            recent = np.mean(self.episode_returns[-20:]) if self.episode_returns else float("nan")
            eta = max(self.planned_steps - global_step, 0) / max(sps, 1)
            print(f"step {global_step}/{self.planned_steps} | {sps} SPS | {now - self.start_time:.0f}s elapsed, "
                  f"{eta:.0f}s left | mean return (last 20) {recent:.1f}", flush=True)  # fmt: skip

    def write_metrics(self, row: dict) -> None:
        """One row of metrics.csv, flushed; a name the header lacks (a loss that starts later) widens the file."""
        path = f"runs/{self.name}/metrics.csv"
        names = list(self.metrics.fieldnames) if self.metrics else []
        if not set(row) <= set(names):
            rows = []
            if self.metrics:
                self.metrics_file.close()
                with open(path, newline="") as f:
                    rows = list(csv.DictReader(f))
            names += [key for key in row if key not in names]
            self.metrics_file = open(path, "w", newline="")
            self.metrics = csv.DictWriter(self.metrics_file, names, restval="")
            self.metrics.writeheader()
            self.metrics.writerows(rows)
        self.metrics.writerow(row)
        self.metrics_file.flush()

    def finish(self, global_step: int, policy) -> dict:
        """Save, evaluate `policy` (observation batch -> action batch), write summary.json, print the eval line.

        The model and the summary are written whatever the evaluation does: a Ctrl-C skips it, and a failure
        in it is recorded in the summary, then raised as `EvaluationError`.
        """
        wall_time = time.time() - self.start_time
        self.close()
        saved = f"runs/{self.name}/{self.args.exp_name}.pt" if self.args.save_model else None
        if saved:
            self.save(saved)
        returns, error = [], None
        if not self.interrupted:
            try:
                returns = evaluate(policy, self)
            except KeyboardInterrupt:  # Ctrl-C during the evaluation: as during training
                self.interrupted = True
            except Exception as e:
                error = first_line(e)
        args = {key: value if isinstance(value, (bool, int, float, str, type(None))) else str(value)
                for key, value in vars(self.args).items()}  # fmt: skip
        summary = {
            "algo": self.algo, "env_id": self.args.env_id, "seed": self.args.seed, "global_step": global_step,
            "wall_time_s": wall_time, "sps": global_step / wall_time if wall_time > 0 else 0.0,
            "eval_mean_return": float(np.mean(returns)) if returns else None,
            "eval_std_return": float(np.std(returns)) if returns else None,
            "eval_episodes": len(returns),
            "train_last_mean_return": float(np.mean(self.episode_returns[-20:])) if self.episode_returns else None,
            "interrupted": self.interrupted, "run_name": self.name, "model_path": self.args.model_path,
            "saved_model": saved, "error": error, "args": args,
        }  # fmt: skip
        with open(f"runs/{self.name}/summary.json", "w") as f:
            json.dump(summary, f, indent=2)
        if self.wandb:
            self.wandb.log({"eval/mean_return": summary["eval_mean_return"]}, step=global_step)
            self.wandb.finish()
        if error:
            raise EvaluationError(f"the evaluation failed ({error}); what training produced is in runs/{self.name}")
        if self.args.capture_video and returns:
            print(f"videos: videos/{self.name}/", flush=True)
        mean, std = (
            f"{x:.2f}" if x is not None else None for x in (summary["eval_mean_return"], summary["eval_std_return"])
        )
        print(f"eval: mean_return={mean} std_return={std} episodes={len(returns)}", flush=True)
        return summary

    def close(self) -> None:
        """Close progress.csv and metrics.csv, give Ctrl-C back to Python (also when training stops on an error)."""
        for file in (self.progress, self.metrics_file):
            if file is not None and not file.closed:
                file.close()
        if self.previous_handler is not None:
            signal.signal(signal.SIGINT, self.previous_handler)
            self.previous_handler = None

    def save(self, path: str) -> None:
        """One file: each checkpoint part's state under its name, and what the run was (algo, env, sizes, args)."""
        state = {key: state_of(part) for key, part in self.checkpoint.items()}
        torch.save({**state, "meta": {"algo": self.algo, "env_id": self.args.env_id, "spaces": self.spaces(),
                                      "args": vars(self.args)}}, path)  # fmt: skip
        print(f"model saved to {path}")

    def spaces(self) -> list:
        return [self.obs_dim, self.action_dim, self.discrete]

    def load(self, path: str) -> None:
        """Checkpoints hold only tensors and numbers: loaded with `weights_only=True`, no pickled code runs."""
        try:
            saved = torch.load(path, map_location=self.device, weights_only=True)
            meta = saved.pop("meta")
            algo, env_id, spaces, saved_args = meta["algo"], meta["env_id"], meta["spaces"], meta.get("args", {})
        except Exception:
            raise ArgError(f"--model-path {path} is not a checkpoint saved by {self.algo}.py") from None
        if algo != self.algo:
            raise ArgError(f"--model-path {path} was saved by {algo}.py, not {self.algo}.py")
        # The settings that shape the networks and the observations must be the checkpoint's (`main` takes
        # those the command line does not give from it).
        for name in MODEL_ARGS:
            if hasattr(self.args, name) and name in saved_args and saved_args[name] != getattr(self.args, name):
                raise ArgError(f"--model-path {path} was saved with {flag(name, saved_args[name])}, "
                               f"this run has {flag(name, getattr(self.args, name))}")  # fmt: skip
        if spaces != self.spaces():
            kind = {True: "discrete", False: "continuous"}
            (o, a, d), (o2, a2, d2) = spaces, self.spaces()
            raise ArgError(f"--model-path {path} was saved for {o} observations, {a} {kind[d]} actions ({env_id}); "
                           f"{self.args.env_id} has {o2}, {a2} {kind[d2]}")  # fmt: skip
        if set(saved) != set(self.checkpoint):
            raise ArgError(f"--model-path {path} holds {sorted(saved)}; this run needs {sorted(self.checkpoint)}")
        for key, part in self.checkpoint.items():
            try:
                load_into(part, saved[key])
            except (RuntimeError, KeyError, TypeError, ValueError):
                reason = misfit(part, saved[key])
                raise ArgError(f"--model-path {path}: its {key} does not fit this network ({reason})") from None


def state_of(part):
    """What a checkpoint keeps of a part: a module's state dict, a tensor, or an object's numbers and arrays."""
    if isinstance(part, nn.Module):
        return part.state_dict()
    if isinstance(part, torch.Tensor):
        return part.detach().cpu()
    return {key: torch.as_tensor(value) for key, value in vars(part).items()}


def first_line(e: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def misfit(part, state) -> str:
    """The first entry of a saved `state` that does not fit `part`, in a few words."""
    mine = state_of(part)
    if not isinstance(mine, dict) or not isinstance(state, dict):
        return f"shape {tuple(getattr(state, 'shape', ()))}, expected {tuple(getattr(mine, 'shape', ()))}"
    for key in sorted(set(mine) | set(state)):
        if key not in state or key not in mine:
            return f"{key} {'missing' if key not in state else 'not expected'}"
        saved, expected = tuple(getattr(state[key], "shape", ())), tuple(mine[key].shape)
        if saved != expected:
            return f"{key} of shape {saved}, expected {expected}"
    return "saved by other code"


def flag(name: str, value) -> str:
    """How a command line says `name = value`: `--hidden-size 32`, `--norm-obs`, `--no-norm-obs`."""
    option = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{option}" if value else f"--no-{option}"
    return f"--{option} {value}"


def load_into(part, state) -> None:
    if isinstance(part, nn.Module):
        part.load_state_dict(state)
    elif isinstance(part, torch.Tensor):
        with torch.no_grad():
            part.copy_(state)
    else:
        for key, value in vars(part).items():
            if np.shape(value) != tuple(state[key].shape):
                raise ValueError(f"{key} of shape {tuple(state[key].shape)}, expected {np.shape(value)}")
            setattr(part, key, state[key].cpu().numpy())


def recording_env(env_id: str) -> gym.Env:
    """`env_id` drawing its frames for the video. Gymnasium's MuJoCo walkers are filmed by their model's camera
    "track", which follows the body: gymnasium 1.x's default view stays where the episode began."""
    env = gym.make(env_id, render_mode="rgb_array")
    if str(env.spec.entry_point).startswith("gymnasium.envs.mujoco"):
        env.close()
        env = gym.make(env_id, render_mode="rgb_array", camera_name="track")
    return env


def evaluate(policy, run: Run) -> list[float]:
    """Returns of `eval_episodes` episodes of `policy` (most likely / mean action, no exploration)."""
    args = run.args
    # `render_mode` only when recording: a user's own env need not take one. SDL (pygame's drawing) gets its
    # off-screen driver meanwhile, so a machine without a display prints no complaint about XDG_RUNTIME_DIR.
    sdl_driver, env, returns = os.environ.get("SDL_VIDEODRIVER"), None, []
    try:
        if args.capture_video:
            os.environ["SDL_VIDEODRIVER"] = sdl_driver or "dummy"
            env = recording_env(args.env_id)
            env = gym.wrappers.RecordVideo(env, f"videos/{run.name}", episode_trigger=lambda e: True)
        else:
            env = gym.make(args.env_id)
        for episode in range(args.eval_episodes):
            obs, _ = env.reset(seed=args.seed + 10_000 + episode)
            done, total = False, 0.0
            while not done:
                with torch.inference_mode():
                    obs_batch = torch.as_tensor(obs, dtype=torch.float32, device=run.device).unsqueeze(0)
                    action = policy(obs_batch)[0].cpu().numpy()
                if not run.discrete:
                    action = np.clip(action, run.action_low, run.action_high)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        if env is not None:
            env.close()
        if sdl_driver is None:
            os.environ.pop("SDL_VIDEODRIVER", None)
    return returns


def check_common_args(args) -> None:
    """The checks of the fields every script shares."""
    if not 0 <= args.seed < 2**32:
        raise ArgError(f"--seed must lie in [0, 2**32), got {args.seed}")
    if args.total_timesteps < 0:
        raise ArgError(f"--total-timesteps must be >= 0, got {args.total_timesteps}")
    if args.total_timesteps == 0 and args.model_path is None:
        raise ArgError("--total-timesteps 0 only evaluates, and needs --model-path")
    if args.model_path is not None and not os.path.isfile(args.model_path):
        raise ArgError(f"--model-path {args.model_path}: no such file")
    if args.eval_episodes < 0:
        raise ArgError(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    if args.track and wandb_needs_login():
        raise ArgError("--track needs a W&B login: run `wandb login`, or set WANDB_MODE=offline")
    if args.capture_video and not all(importlib.util.find_spec(m) for m in ("moviepy", "pygame")):
        raise ArgError("--capture-video needs moviepy and pygame: pip install moviepy pygame")


def wandb_needs_login() -> bool:
    """Whether `wandb.init` would stop for a login: W&B online, with no API key in the environment, in W&B's
    settings files or in ~/.netrc (where `wandb login` puts it)."""
    settings = configparser.ConfigParser()
    config_dir = os.environ.get("WANDB_CONFIG_DIR", os.path.expanduser("~/.config/wandb"))
    local_dir = os.path.join(os.environ.get("WANDB_DIR", "."), "wandb")
    try:
        settings.read([os.path.join(config_dir, "settings"), os.path.join(local_dir, "settings")])
    except configparser.Error:
        return False  # a settings file W&B writes and we cannot read: let wandb judge it

    def setting(key: str, default=None):
        return os.environ.get(f"WANDB_{key.upper()}") or settings.get("default", key, fallback=default)

    if setting("mode", "online") in ("offline", "disabled", "dryrun") or setting("api_key"):
        return False
    if os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return False
    host = urlsplit(setting("base_url", "https://api.wandb.ai")).netloc
    found = [p for p in ("~/.netrc", "~/_netrc") if os.path.exists(os.path.expanduser(p))]
    path = os.path.expanduser(os.environ.get("NETRC") or (found or ["~/.netrc"])[0])
    try:
        return netrc.netrc(path).authenticators(host) is None
    except (OSError, netrc.NetrcParseError):
        return True


def with_checkpoint_args(args, argv: list[str]):
    """`args`, where the command line `argv` does not give the env id or a setting of `MODEL_ARGS`, with the
    one stored in the checkpoint at `--model-path`: then `--model-path P --total-timesteps 0` evaluates."""
    if args.model_path is None or not os.path.isfile(args.model_path):
        return args
    try:
        saved = torch.load(args.model_path, map_location="cpu", weights_only=True)["meta"].get("args", {})
    except Exception:
        return args  # not a checkpoint: `Run.load` says so
    given = {word[2:].split("=")[0].replace("_", "-").removeprefix("no-") for word in argv if word.startswith("--")}
    names = [name for name in ("env_id", *MODEL_ARGS) if hasattr(args, name) and name in saved]
    names = [name for name in names if name.replace("_", "-") not in given]
    return dataclasses.replace(args, **{name: saved[name] for name in names})


def main() -> None:
    """The command line: parse `Args`, fill in the checkpoint's settings, train, and turn an error into one
    line and an exit status."""
    # In Jupyter or Colab, sys.argv is the kernel's own (-f kernel.json): a pasted cell takes the defaults.
    in_notebook = "ipykernel" in sys.modules or os.path.basename(sys.argv[0]).endswith("kernel_launcher.py")
    argv = [] if in_notebook else sys.argv[1:]
    try:
        summary = train(with_checkpoint_args(tyro.cli(Args, args=argv), argv))
    except ArgError as e:  # bad input: exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (FloatingPointError, EvaluationError) as e:  # NaN/inf during training, a failed evaluation: exit 1
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # a second Ctrl-C
        sys.exit(130)
    if summary["interrupted"]:  # stopped by Ctrl-C, all that was reached saved: 130, so a shell loop stops too
        sys.exit(130)


if __name__ == "__main__":
    main()
