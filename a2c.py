r"""Advantage Actor-Critic (A2C), the synchronous variant of A3C, for Discrete and Box actions.

Paper: Mnih, Badia, Mirza, Graves, Lillicrap, Harley, Silver, Kavukcuoglu. "Asynchronous
Methods for Deep Reinforcement Learning", ICML 2016. Lecture: slides "Asynchronous Advantage
Actor Critic (A3C)" (policy and value function share their first layers; A2C is its
synchronous variant with a single learner) and "Actor-Critic Methods" (a critic $V$ learned
by bootstrapping).

N environments run in lockstep for T steps; then one gradient step on

$\mathcal{L}(\theta) = -\hat{\mathbb{E}}_t[\log \pi(a_t|s_t;\theta) \hat{A}_t]
+ c_1 \hat{\mathbb{E}}_t[(G_t - V(s_t))^2] - c_2 \hat{\mathbb{E}}_t[S[\pi](s_t)]$,

with the n-step return $G_t = \sum_{k=t}^{T-1} \gamma^{k-t} r_k + \gamma^{T-t} V(s_T)$ and
$\hat{A}_t = G_t - V(s_t)$ (or GAE($\lambda$) with `--gae-lambda` below 1).

Run: python a2c.py --env-id CartPole-v1
"""

import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro


@dataclass
class Args:
    """A2C, synchronous A3C with shared first layers: a policy for Discrete or Box actions."""

    # A2C's own fields, with CleanRL's names and meanings.
    learning_rate: float = 2e-3
    """the optimizer's step size alpha"""
    anneal_lr: bool = True
    """decay the step size linearly to 0 over training"""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """RMSprop as in the paper, or Adam"""
    rmsprop_alpha: float = 0.99
    """RMSprop's smoothing constant of the squared gradients"""
    optimizer_eps: float = 1e-5
    """epsilon of RMSprop or Adam"""
    num_envs: int = 8
    """parallel environments (the paper's actor-learners, here in lockstep)"""
    num_steps: int = 5
    """steps per environment before each update (the n of the n-step return)"""
    gamma: float = 0.98
    """discount factor gamma"""
    gae_lambda: float = 1.0
    """lambda of GAE; 1 gives the paper's n-step returns"""
    norm_adv: bool = True
    """normalize the advantages of each batch"""
    ent_coef: float = 0.0
    """c2, weight of the entropy bonus S (0: off by default)"""
    scale_rewards: bool = True
    """divide rewards by the running std of the discounted return (keeps V's targets near 1)"""
    vf_coef: float = 0.25
    """c1, weight of the value loss (times the 1/2 of the squared error: 0.125 by default)"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this"""
    hidden_size: int = 64
    """units in each of the two shared hidden layers"""
    num_threads: int = 1
    """torch CPU threads (1 is fastest for networks this small)"""

    # The fields every script shares (CONTRIBUTING.md), same names and meanings in all nine.
    exp_name: str = "a2c"
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
    """save the weights to runs/<run_name>/<exp_name>.pt"""
    model_path: str | None = None
    """load weights from this file before training (with --total-timesteps 0: only evaluate)"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id"""
    total_timesteps: int = 100_000
    """environment steps to train for, over all environments"""
    eval_episodes: int = 10
    """episodes of the final, deterministic policy to evaluate"""


# ## Environments
# Gymnasium 1.x vector envs with `SAME_STEP` autoreset: when an episode ends, `step` returns the first observation
# of the next one, and the true last one in `info["final_obs"]`, which bootstraps $V(s_{t+1})$ after a time limit.
def make_envs(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
    env_fns = [lambda: gym.make(env_id) for _ in range(num_envs)]
    return gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def true_next_obs(obs: np.ndarray, info: dict) -> np.ndarray:
    """$s_{t+1}$ of every env: `obs`, but the true last observation where an episode just ended."""
    if "final_obs" not in info:
        return obs
    next_obs = obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        next_obs[i] = info["final_obs"][i]
    return next_obs


# ## Networks
# Orthogonal initialisation, as in the PPO code release: gain $\sqrt{2}$ for the tanh hidden layers,
# 0.01 for the policy's output (a nearly uniform / zero-mean first policy), 1 for $V$'s.
def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


# ## The policy's output layer
# Discrete actions: one logit $z_a$ per action and $\pi(a|s) = \text{softmax}(\mathbf{z})_a$.
def categorical_log_prob_entropy(logits: torch.Tensor, actions: torch.Tensor):
    log_p = torch.log_softmax(logits, dim=-1)
    log_prob = log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return log_prob, entropy


# Continuous actions: $\pi(a|s) = \mathbb{N}(f(s), \Sigma)$ with diagonal
# $\Sigma = \text{diag}(\sigma^2)$ and $\log \sigma$ a parameter that does not depend on $s$:
# $\log \pi(a|s) = -\sum_i \left[\frac{(a_i - \mu_i)^2}{2\sigma_i^2} + \log \sigma_i + \frac{1}{2}\log 2\pi\right]$,
# $S = \sum_i \left[\log \sigma_i + \frac{1}{2}(1 + \log 2\pi)\right]$.
def gaussian_log_prob_entropy(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor):
    log_2pi = float(np.log(2 * np.pi))
    z = (actions - mean) * torch.exp(-log_std)
    log_prob = -(0.5 * z.pow(2) + log_std + 0.5 * log_2pi).sum(-1)
    entropy = (log_std + 0.5 * (1.0 + log_2pi)).sum(-1).expand(mean.shape[:-1])
    return log_prob, entropy


# ## Shared first layers
# As on the A3C slide: one trunk $\phi(s)$ feeds both heads, the policy's $\mathbf{z} = W_\pi \phi(s)$
# and the critic's $V(s) = w_V^\top \phi(s)$, so the gradients of both losses shape $\phi$.
# The trunk is the two tanh hidden layers of the other scripts' `mlp`, without its output layer: two heads share it.
class Agent(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, discrete: bool, hidden: int):
        super().__init__()
        self.discrete = discrete
        self.trunk = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)),
            nn.Tanh(),
        )
        # the two heads on $\phi(s)$: logits or Gaussian mean, and $V(s)$
        self.actor = layer_init(nn.Linear(hidden, action_dim), std=0.01)
        self.critic = layer_init(nn.Linear(hidden, 1), std=1.0)
        if not discrete:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.trunk(obs)).squeeze(-1)

    def log_prob_entropy_value(self, obs: torch.Tensor, actions: torch.Tensor):
        r"""$\log\pi(a|s)$, $S[\pi](s)$ and $V(s)$ from one pass through the shared trunk."""
        phi = self.trunk(obs)
        out = self.actor(phi)
        if self.discrete:
            log_prob, entropy = categorical_log_prob_entropy(out, actions)
        else:
            log_prob, entropy = gaussian_log_prob_entropy(out, self.log_std, actions)
        value = self.critic(phi).squeeze(-1)
        return log_prob, entropy, value

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        # $a \sim \pi(\cdot|s)$ at every env step, by hand rather than with `torch.distributions`: with
        # `Categorical(logits=z).sample()` and the logging of every update, a default run (CartPole,
        # seed 1) takes 1.17x the CPU time (whole-process timing, 2 alternating pairs).
        # Gumbel-max: $\arg\max_a (z_a - \log(-\log u_a))$, $u_a \sim U(0,1)$, is $a$ with probability $\text{softmax}(\mathbf{z})_a$;
        # Gaussian: $\mu + \sigma \xi$, $\xi \sim \mathbb{N}(0, I)$, the very numbers `Normal(mu, sigma).sample()` draws.
        out = self.actor(self.trunk(obs))
        if self.discrete:
            return torch.argmax(out - torch.log(-torch.log(torch.rand_like(out))), dim=-1)
        return out + torch.exp(self.log_std) * torch.randn_like(out)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """The most likely action: used for evaluation."""
        out = self.actor(self.trunk(obs))
        if self.discrete:
            return torch.argmax(out, dim=-1)
        return out


# ## n-step returns
# $G_t = r_t + \gamma G_{t+1}$, started at the end of the rollout from $G_T = V(s_T)$.
# `next_values[t]` is $V$ of the true next state $s_{t+1}$; where an episode ended at $t$,
# the sum restarts there: from $V(s_{t+1})$ if it was cut by a time limit (truncation is not a
# terminal state), from 0 if it terminated.
# (numpy: for a T x N rollout this small, numpy's per-op cost is a fraction of torch's.)
def nstep_returns(rewards, next_values, terminated, dones, gamma: float) -> np.ndarray:
    returns = np.zeros_like(rewards)
    g = next_values[-1]
    for t in reversed(range(rewards.shape[0])):
        g = np.where(dones[t] > 0, next_values[t], g)
        g = rewards[t] + gamma * (1.0 - terminated[t]) * g
        returns[t] = g
    return returns


# ## Generalized advantage estimation (optional)
# $\delta_t = r_t + \gamma V(s_{t+1})(1 - \text{terminated}_t) - V(s_t)$ and
# $\hat{A}_t = \delta_t + \gamma\lambda (1 - \text{done}_t) \hat{A}_{t+1}$; $\lambda = 1$ gives $G_t - V(s_t)$.
# Why: the $k$-step advantage ($k$ rewards, then $V$) is $\hat{A}^{(k)}_t = \sum_{l<k} \gamma^l \delta_{t+l}$; GAE is their
# $\lambda$-weighted average $(1-\lambda)\sum_{k \ge 1} \lambda^{k-1} \hat{A}^{(k)}_t = \sum_{l \ge 0} (\gamma\lambda)^l \delta_{t+l}$
# ($\delta_{t+l}$ is in every $\hat{A}^{(k)}_t$ with $k > l$, total weight $\lambda^l$), which the loop sums from the end.
def gae(rewards, values, next_values, terminated, dones, gamma: float, gae_lambda: float):
    advantages = np.zeros_like(rewards)
    next_advantage = np.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminated[t]) - values[t]
        next_advantage = delta + gamma * gae_lambda * (1.0 - dones[t]) * next_advantage
        advantages[t] = next_advantage
    return advantages


# ## Advantages and value targets
# $\lambda = 1$: the n-step return $G_t$ and $\hat{A}_t = G_t - V(s_t)$, as in A3C.
# $\lambda < 1$: $\hat{A}_t$ = GAE($\lambda$), and the value target $G_t = \hat{A}_t + V(s_t)$.
def advantages_and_returns(rewards, values, next_values, terminated, dones, gamma, gae_lambda):
    if gae_lambda == 1.0:
        returns = nstep_returns(rewards, next_values, terminated, dones, gamma)
        return returns - values, returns
    advantages = gae(rewards, values, next_values, terminated, dones, gamma, gae_lambda)
    return advantages, advantages + values


# ## The A2C loss
# $-\hat{\mathbb{E}}[\log\pi(a_t|s_t)\hat{A}_t] + c_1 \frac{1}{2}\hat{\mathbb{E}}[(G_t - V(s_t))^2] - c_2 \hat{\mathbb{E}}[S]$.
# $\hat{A}_t$ and $G_t$ are constants (no gradient flows into the bootstrap target).
# The $\frac{1}{2}$ of the squared error departs from the formula above (CleanRL's form): the slide's $c_1$ is
# `vf_coef` / 2, 0.125 with the default `vf_coef` = 0.25. The entropy bonus is off by default
# (`ent_coef` = 0, where A3C used $c_2 = 0.01$).
# Every $t$ of the rollout weighs the same: the $\gamma^t$ of the discounted policy gradient is dropped, as in A3C.
def a2c_loss(log_prob, entropy, values, advantages, returns, vf_coef: float, ent_coef: float):
    pg_loss = -(log_prob * advantages.detach()).mean()
    v_loss = 0.5 * (returns.detach() - values).pow(2).mean()
    entropy_mean = entropy.mean()
    loss = pg_loss + vf_coef * v_loss - ent_coef * entropy_mean
    return loss, pg_loss, v_loss, entropy_mean


# ## Running statistics
# Mean and variance of a stream of batches, merged batch by batch (Chan et al.'s parallel update):
# $\mu \leftarrow \mu + \Delta \frac{n_b}{n}$, $\sigma^2 \leftarrow (\sigma^2 n_a + \sigma_b^2 n_b + \Delta^2 \frac{n_a n_b}{n}) / n$,
# $\Delta = \mu_b - \mu$, $n = n_a + n_b$. It starts as mean 0, variance 1 with a weight of $10^{-4}$.
class RunningMeanStd:
    def __init__(self, shape=()):
        self.mean = np.zeros(shape)
        self.var = np.ones(shape)
        self.count = 1e-4

    def update(self, batch: np.ndarray):
        batch_mean = batch.mean(0)
        batch_var = batch.var(0)
        batch_count = batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count
        m2 = m2 + delta**2 * self.count * batch_count / total
        self.var = m2 / total
        self.count = total


# ## Reward scaling
# $\tilde{r}_t = r_t / \sqrt{\text{Var}[G] + 10^{-8}}$, with $G_t = \gamma G_{t-1} + r_t$ the discounted
# sum of the running episode's past rewards (Engstrom et al. 2020), its variance taken over all
# rollouts so far. The mean is not subtracted: that would change which policy is optimal.
# Not in the A3C paper; on by default: without it a2c ends Acrobot-v1 at its worst return (-500).
class RewardScaler:
    def __init__(self, num_envs: int, gamma: float):
        self.rms = RunningMeanStd()
        self.gamma = gamma
        self.G = np.zeros(num_envs)

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        # $G_t$ of every step of the rollout, restarted from 0 after an episode ends
        G = np.zeros_like(rewards)
        for t in range(len(rewards)):
            self.G = self.G * self.gamma + rewards[t]
            G[t] = self.G
            self.G = self.G * (1.0 - dones[t])
        # the variance over all rollouts so far, this one's $G_t$ included
        self.rms.update(G.reshape(-1))
        return (rewards / np.sqrt(self.rms.var + 1e-8)).astype(np.float32)


# ## The checks of A2C's own arguments
# A bad value is one `error:` line (the `ArgError` of the tail), before anything is built.
def check_args(args: Args) -> None:
    sizes = ("num_envs", "num_steps", "hidden_size", "num_threads")
    for name in (*sizes, "learning_rate", "optimizer_eps", "max_grad_norm"):
        value = getattr(args, name)
        if not value > 0:
            raise ArgError(f"--{name.replace('_', '-')} must be positive, got {value}")
    # $\gamma$ and $\lambda$ are weights of a discounted sum: in [0, 1]
    if not (0 <= args.gamma <= 1 and 0 <= args.gae_lambda <= 1):
        got = f"{args.gamma}, {args.gae_lambda}"
        raise ArgError(f"--gamma and --gae-lambda must lie in [0, 1], got {got}")
    if args.norm_adv and args.num_envs * args.num_steps < 2:  # one advantage has no std
        raise ArgError("--norm-adv needs num_envs * num_steps >= 2 advantages in each update")


# ## Training
def train(args: Args) -> dict:
    # The checks first: a bad argument, env id or action space is one error line before anything is built.
    # `Run` (the bookkeeping, below) then keeps the run folder, progress.csv, W&B and the status line.
    check_args(args)
    run = Run(args, "a2c", (gym.spaces.Discrete, gym.spaces.Box))

    # Seed every random number generator the run draws from; the envs are seeded at their first `reset`.
    # `torch_deterministic` sets cuDNN's flag (CleanRL's); one CPU thread is fastest for networks this small.
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.num_threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")

    # N envs in lockstep. Their spaces size the networks: the observation's length, and the number of actions
    # (Discrete, softmax output) or the action's length (Box, Gaussian output, its bounds clip what the env gets).
    envs = make_envs(args.env_id, args.num_envs)
    obs_dim = envs.single_observation_space.shape[0]
    action_space = envs.single_action_space
    discrete = isinstance(action_space, gym.spaces.Discrete)
    action_dim = int(action_space.n) if discrete else action_space.shape[0]
    action_low = None if discrete else action_space.low
    action_high = None if discrete else action_space.high

    # The agent: one trunk, a policy head and a value head (slide "Asynchronous Advantage Actor Critic")
    agent = Agent(obs_dim, action_dim, discrete, args.hidden_size).to(device)
    # RMSprop as in the A3C paper, or Adam, with the same step size and epsilon
    lr, eps, alpha = args.learning_rate, args.optimizer_eps, args.rmsprop_alpha
    if args.optimizer == "rmsprop":
        optimizer = torch.optim.RMSprop(agent.parameters(), lr=lr, alpha=alpha, eps=eps)
    else:
        optimizer = torch.optim.Adam(agent.parameters(), lr=lr, eps=eps)
    # The rewards' scaler; updates of T steps in each of the N envs; `run.start` loads `--model-path`, opens the run.
    reward_scaler = RewardScaler(args.num_envs, args.gamma)
    T = args.num_steps
    N = args.num_envs
    run.start(T * N, agent=agent, reward_rms=reward_scaler.rms)

    # Rollout storage, numpy on the CPU where the env lives: T x N $(s_t, a_t, r_t, s_{t+1})$ and how episodes ended.
    obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)
    next_obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)
    action_shape = (T, N) if discrete else (T, N, action_dim)
    actions_buf = np.zeros(action_shape, dtype=np.int64 if discrete else np.float32)
    rewards_buf = np.zeros((T, N), dtype=np.float32)
    terminated_buf = np.zeros((T, N), dtype=np.float32)
    dones_buf = np.zeros((T, N), dtype=np.float32)
    # $s_0$ of every env (seeded here, once); then, per iteration, one rollout and its update
    global_step = 0
    obs, _ = envs.reset(seed=args.seed)
    for iteration in run.iterations():
        # Update $k$ of $K$ steps with $\alpha (1 - (k-1)/K)$: the step size decays linearly toward 0.
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1) / run.num_iterations
            optimizer.param_groups[0]["lr"] = args.learning_rate * frac

        # ## Rollout: T steps of $\pi_\theta$ in each of the N envs
        for step in range(T):
            obs_buf[step] = obs
            # $a_t \sim \pi(\cdot|s_t;\theta)$: acting needs no gradient
            with torch.inference_mode():
                obs_tensor = torch.as_tensor(obs, dtype=torch.float32, device=device)
                action = agent.sample(obs_tensor).cpu().numpy()
            actions_buf[step] = action
            # The env gets a Gaussian $a_t$ clipped to its bounds; the loss gets $\log\pi$ of $a_t$ as drawn.
            if not discrete:
                action = np.clip(action, action_low, action_high)
            obs, reward, terminated, truncated, info = envs.step(action)
            global_step += N
            # $s_{t+1}$: the true next state, also where the episode ended (`obs` is then the next one's first)
            next_obs_buf[step] = true_next_obs(obs, info)
            done = terminated | truncated
            rewards_buf[step] = reward
            terminated_buf[step] = terminated
            dones_buf[step] = done
            run.record(global_step, reward, done)

        # ## Update: one gradient step on the whole rollout
        # $r_t$ divided by the running std of the discounted return (`RewardScaler`), unless switched off.
        rewards = reward_scaler(rewards_buf, dones_buf) if args.scale_rewards else rewards_buf
        # $\log\pi(a_t|s_t)$, $S[\pi](s_t)$ and $V(s_t)$ in one pass through the trunk, with their gradients;
        # $V$ of the true $s_{t+1}$ without: it is part of the target.
        b_obs = torch.from_numpy(obs_buf).to(device)
        b_actions = torch.from_numpy(actions_buf).to(device)
        log_prob, entropy, values = agent.log_prob_entropy_value(b_obs, b_actions)
        with torch.no_grad():
            next_values = agent.value(torch.from_numpy(next_obs_buf).to(device)).cpu().numpy()
        v = values.detach().cpu().numpy()
        # $\hat{A}_t$ and the value target $G_t$: n-step ($\lambda = 1$, A3C's) or GAE($\lambda$)
        advantages, returns = advantages_and_returns(
            rewards, v, next_values, terminated_buf, dones_buf, args.gamma, args.gae_lambda
        )
        # Advantages normalized over the batch: not in the paper; with the reward scaling it keeps CartPole learning.
        if args.norm_adv:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        advantages = torch.from_numpy(advantages).to(device)
        returns = torch.from_numpy(returns).to(device)
        # One step down the gradient of the A2C loss, its global norm clipped to `max_grad_norm` first
        loss, pg_loss, v_loss, entropy_mean = a2c_loss(
            log_prob, entropy, values, advantages, returns, args.vf_coef, args.ent_coef
        )
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
        optimizer.step()

        # ## Logging: the NaN guard, W&B and the status line every 10 updates (and after the last):
        # each checks every parameter (part of the 1.17x of `Agent.sample`'s note).
        if iteration % 10 == 0 or iteration == run.num_iterations or run.interrupted:
            metrics = {
                "charts/learning_rate": optimizer.param_groups[0]["lr"],
                "losses/policy_loss": pg_loss,
                "losses/value_loss": v_loss,
                "losses/entropy": entropy_mean,
            }
            run.log(global_step, metrics)

    # The final policy's most likely action is evaluated; `finish` writes summary.json and returns it.
    envs.close()
    return run.finish(global_step, agent.mode)


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
