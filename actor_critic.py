r"""Online Actor-Critic (the lecture's Algorithm 2), for Discrete and Box actions.

Paper: Konda and Tsitsiklis, "Actor-Critic Algorithms", NeurIPS 1999; Sutton and Barto,
"Reinforcement Learning: An Introduction" (2nd ed., 2018), section 13.5. Lecture: slides
"Actor-Critic Methods", Algorithm 2 (Actor-Critic Algorithm): the critic is learned by
temporal differences inside the policy-gradient loop, and both are updated at every step.

At every step $t$: $a_t \sim \pi(\cdot|s_t;\theta)$, observe $r_t, s_{t+1}$,
draw $a_{t+1} \sim \pi(\cdot|s_{t+1};\theta)$,

$\delta = r_t + \gamma Q_\omega(s_{t+1}, a_{t+1}) - Q_\omega(s_t, a_t)$,
$\omega \leftarrow \omega + \alpha_\omega \delta \nabla_\omega Q_\omega(s_t, a_t)$,
$\theta \leftarrow \theta + \alpha_\theta \nabla_\theta \log \pi(a_t|s_t;\theta) Q_\omega(s_t, a_t)$.

With `--critic v` the critic is $V_\omega(s)$,
$\delta = r_t + \gamma V_\omega(s_{t+1}) - V_\omega(s_t)$, and the actor's weight is $\delta$, an
estimate of the advantage $A(s_t, a_t)$ (slide: $V$, $Q$ or $A$ as critic).

Run: python actor_critic.py --env-id CartPole-v1
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
from torch.distributions import Normal


@dataclass
class Args:
    """Online actor-critic (Algorithm 2, slides "Actor-Critic Methods"), with a Q or a V critic."""

    # The method's own fields.
    critic: Literal["q", "v"] = "v"
    """Q(s,a) as in Algorithm 2 (learns with --learning-rate 1e-4), or V(s) with the TD error"""
    learning_rate: float = 5e-4
    """the actor's step size alpha_theta (Adam)"""
    critic_learning_rate: float = 1e-3
    """the critic's step size alpha_omega (Adam)"""
    anneal_lr: bool = True
    """decay both step sizes linearly to 0 over training"""
    num_envs: int = 1
    """parallel environments; each step updates on the mean over them (1: the online algorithm)"""
    gamma: float = 0.99
    """discount factor gamma"""
    ent_coef: float = 0.0
    """weight of an entropy bonus S[pi](s_t) added to the actor's objective (0: off by default)"""
    hidden_size: int = 64
    """units in each of the two hidden layers of both networks"""
    num_threads: int = 1
    """torch CPU threads (1 is fastest for networks this small)"""

    # The fields every script shares (CONTRIBUTING.md), same names and meanings in all nine.
    exp_name: str = "actor_critic"
    """the name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of random, numpy, torch and the environments"""
    torch_deterministic: bool = True
    """set torch.backends.cudnn.deterministic (only cuDNN reads it: no effect on these MLPs)"""
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
    total_timesteps: int = 200_000
    """environment steps to train for, over all environments"""
    eval_episodes: int = 10
    """episodes of the final, deterministic policy to evaluate"""


# ## Environments
# Gymnasium 1.x vector envs with `SAME_STEP` autoreset: when an episode ends, `step` returns the first observation
# of the next one, and the true last one in `info["final_obs"]`, which bootstraps from $s_{t+1}$ after a time limit.
def make_envs(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
    env_fns = [lambda: gym.make(env_id) for _ in range(num_envs)]
    return gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def true_next_obs(obs: np.ndarray, info: dict) -> np.ndarray:
    """$s_{t+1}$ of every env: `obs`, but where an episode just ended its true last observation."""
    if "final_obs" not in info:
        return obs
    next_obs = obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        next_obs[i] = info["final_obs"][i]
    return next_obs


# ## Networks
# Orthogonal initialisation, as in CleanRL: gain $\sqrt{2}$ for the tanh hidden layers, 0.01 for the
# policy's output (a nearly uniform / zero-mean first policy), 1 for the critic's.
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


# ## Actor $\pi(a|s;\theta)$ and critic $Q_\omega(s,a)$ or $V_\omega(s)$, two separate networks
# For Discrete actions $Q_\omega$ outputs one value per action, $Q_\omega(s, \cdot) \in \mathbb{R}^{|A|}$;
# for Box actions it takes the pair, $Q_\omega([s, a]) \in \mathbb{R}$.
class Agent(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, discrete: bool, hidden: int, critic: str):
        super().__init__()
        self.discrete = discrete
        self.critic_kind = critic
        # $\theta$: a logit per action, or the Gaussian's mean and a $\log\sigma$ that starts at 0
        self.actor = mlp(obs_dim, hidden, action_dim, out_std=0.01)
        if not discrete:
            self.log_std = nn.Parameter(torch.zeros(action_dim))
        # $\omega$: $V_\omega(s)$, $Q_\omega(s, \cdot)$ with one output per action, or $Q_\omega([s, a])$
        if critic == "v":
            self.critic = mlp(obs_dim, hidden, 1, out_std=1.0)
        elif discrete:
            self.critic = mlp(obs_dim, hidden, action_dim, out_std=1.0)
        else:
            self.critic = mlp(obs_dim + action_dim, hidden, 1, out_std=1.0)

    def actor_parameters(self) -> list[nn.Parameter]:
        r"""$\theta$: the actor network's weights, and $\log\sigma$ for Box actions."""
        if self.discrete:
            return list(self.actor.parameters())
        return list(self.actor.parameters()) + [self.log_std]

    def critic_value(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        r"""$V_\omega(s)$ (critic v, `actions` unused) or $Q_\omega(s, a)$ (critic q)."""
        if self.critic_kind == "v":
            return self.critic(obs).squeeze(-1)
        if self.discrete:
            return self.critic(obs).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        return self.critic(torch.cat([obs, actions], dim=-1)).squeeze(-1)

    def critic_pair(self, obs, actions, next_obs, next_actions):
        r"""$Q_\omega(s_t, a_t)$ and $Q_\omega(s_{t+1}, a_{t+1})$ (or $V$) in one forward pass;
        the second without gradient."""
        n = obs.shape[0]
        both = self.critic_value(torch.cat([obs, next_obs]), torch.cat([actions, next_actions]))
        return both[:n], both[n:].detach()

    def log_prob_entropy(self, obs: torch.Tensor, actions: torch.Tensor):
        out = self.actor(obs)
        if self.discrete:
            return categorical_log_prob_entropy(out, actions)
        return gaussian_log_prob_entropy(out, self.log_std, actions)

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        # $a \sim \pi(\cdot|s)$: the softmax over the logits by the Gumbel-max trick,
        # $\arg\max_a (z_a - \log(-\log u_a))$, $u_a \sim U(0,1)$: a 20k-step CartPole run (a tenth of
        # the default) took 0.90 times the CPU time of `Categorical(logits=out).sample()` (median of 5
        # alternating pairs). Box: $\mathbb{N}(\mu, \sigma^2)$ from `torch.distributions`.
        out = self.actor(obs)
        if self.discrete:
            u = torch.rand_like(out)
            return torch.argmax(out - torch.log(-torch.log(u)), dim=-1)
        return Normal(out, torch.exp(self.log_std)).sample()

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """The most likely action, for evaluation."""
        out = self.actor(obs)
        if self.discrete:
            return torch.argmax(out, dim=-1)
        return out


# ## The TD target and error
# $y_t = r_t + \gamma (1 - \text{terminated}_t) Q_\omega(s_{t+1}, a_{t+1})$ (or $V_\omega(s_{t+1})$) and $\delta = y_t - Q_\omega(s_t, a_t)$.
# A terminal state has value 0; a time limit (truncation) is not terminal, so there
# $s_{t+1}$ is the true last observation and the target still bootstraps from it.
def td_target(rewards, next_values, terminated, gamma: float):
    return rewards + gamma * (1.0 - terminated) * next_values


# ## The two losses, whose gradients are Algorithm 2's updates
# Critic: $\frac{1}{2}(y_t - Q_\omega(s_t,a_t))^2$ with $y_t$ held constant (semi-gradient TD), whose
# gradient is $-\delta \nabla_\omega Q_\omega(s_t,a_t)$: a descent step is $\omega \leftarrow \omega + \alpha_\omega \delta \nabla_\omega Q_\omega$.
def critic_loss(values, targets):
    return 0.5 * (targets.detach() - values).pow(2).mean()


# Actor: $-\log\pi(a_t|s_t;\theta)\,\Psi_t$ with the critic's weight $\Psi_t$ held constant:
# $\Psi_t = Q_\omega(s_t,a_t)$ (critic q) or $\Psi_t = \delta$ (critic v). A descent step is
# $\theta \leftarrow \theta + \alpha_\theta \nabla_\theta \log\pi(a_t|s_t;\theta) \Psi_t$, whose expectation is
# $\nabla_\theta J(\theta)$ when $\Psi$ is exact (the policy gradient theorem).
# As in Algorithm 2, step $t$ of an episode is weighted by $\Psi_t$, not by $\gamma^t \Psi_t$: the $\gamma^t$
# of the discounted policy gradient (Sutton and Barto's $I \leftarrow \gamma I$) is dropped, as in practice,
# so a late step counts as much as the first. The entropy bonus is not on the slide: off by default
# (`ent_coef` = 0).
def actor_loss(log_prob, weights, entropy, ent_coef: float):
    return -(log_prob * weights.detach()).mean() - ent_coef * entropy.mean()


# ## The checks of the method's own arguments
# A bad value is one `error:` line (the `ArgError` of the tail), before anything is built.
def check_args(args: Args) -> None:
    for name in ("num_envs", "hidden_size", "num_threads", "learning_rate", "critic_learning_rate"):
        value = getattr(args, name)
        if not value > 0:
            flag = "--" + name.replace("_", "-")
            raise ArgError(f"{flag} must be positive, got {value}")
    if not 0 <= args.gamma <= 1:
        raise ArgError(f"--gamma must lie in [0, 1], got {args.gamma}")


# ## Training
def train(args: Args) -> dict:
    # The checks first: a bad argument, env id or action space is one error line before anything is built.
    # `Run` (the tail) also makes the run folder, progress.csv and the status line.
    check_args(args)
    run = Run(args, "actor_critic", (gym.spaces.Discrete, gym.spaces.Box))

    # Seed every generator the run draws from (torch's: the initial weights and every action); the envs
    # are seeded at their first `reset`. `torch_deterministic` sets cuDNN's flag; one thread is fastest here.
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.num_threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")

    # N envs in lockstep. Their spaces size the networks: the observation's length, and the number of
    # actions (Discrete, softmax output) or the action's length (Box, Gaussian output), whose bounds
    # clip what the env gets.
    envs = make_envs(args.env_id, args.num_envs)
    obs_dim = envs.single_observation_space.shape[0]
    action_space = envs.single_action_space
    discrete = isinstance(action_space, gym.spaces.Discrete)
    if discrete:
        action_dim = int(action_space.n)
    else:
        action_dim = action_space.shape[0]
        action_low = action_space.low
        action_high = action_space.high

    # Actor and critic, and one Adam with two step sizes, as in Algorithm 2: $\alpha_\theta$ for the
    # actor's $\theta$, $\alpha_\omega$ for the critic's $\omega$. `run.start` loads `--model-path` and
    # opens the run folder.
    N = args.num_envs
    agent = Agent(obs_dim, action_dim, discrete, args.hidden_size, args.critic).to(device)
    param_groups = [
        {"params": agent.actor_parameters(), "lr": args.learning_rate},
        {"params": agent.critic.parameters(), "lr": args.critic_learning_rate},
    ]
    # `fused=True`: one kernel updates every parameter, where plain Adam loops over them once per env
    # step; a 20k-step CartPole run (a tenth of the default) took 0.74 times the CPU time of plain Adam's
    # (median of 5 alternating pairs).
    optimizer = torch.optim.Adam(param_groups, fused=True)
    run.start(N, agent=agent)

    # $s_0$ of every env: the envs are seeded here, at their first `reset`
    global_step = 0
    obs, _ = envs.reset(seed=args.seed)
    for iteration in run.iterations():
        # `--anneal-lr`: step $k$ of $K$ uses $\alpha (1 - (k-1)/K)$, for actor and critic alike
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1) / run.num_iterations
            optimizer.param_groups[0]["lr"] = args.learning_rate * frac
            optimizer.param_groups[1]["lr"] = args.critic_learning_rate * frac

        # ## Act: $a_t \sim \pi(\cdot|s_t;\theta)$, observe $r_t$ and $s_{t+1}$
        s = torch.as_tensor(obs, dtype=torch.float32, device=device)
        with torch.no_grad():
            action = agent.sample(s)
        # The env gets a Gaussian $a_t$ clipped to its bounds; the update uses $a_t$ as drawn.
        env_action = action.cpu().numpy()
        if not discrete:
            env_action = np.clip(env_action, action_low, action_high)
        obs, reward, terminated, truncated, info = envs.step(env_action)
        global_step += N
        run.record(global_step, reward, terminated | truncated)
        # $s_{t+1}$: where an episode ended, its true last observation, not the reset one
        s_next = torch.as_tensor(true_next_obs(obs, info), dtype=torch.float32, device=device)
        r = torch.as_tensor(reward, dtype=torch.float32, device=device)
        term = torch.as_tensor(terminated, dtype=torch.float32, device=device)

        # ## Update, Algorithm 2: draw $a_{t+1} \sim \pi(\cdot|s_{t+1};\theta)$ for the Q critic
        # Algorithm 2 leaves $a_{t+1}$ implicit: read as SARSA, it is the action taken at the next step.
        # Here it is a fresh draw in the true $s_{t+1}$, used only in the target: an unbiased sample of
        # $\mathbb{E}_{a' \sim \pi}[Q_\omega(s_{t+1}, a')]$ as well, it exists also where an episode ends (the next
        # action is taken in the reset state), and it comes from $\theta_t$, not from the updated $\theta_{t+1}$.
        next_action = action  # unused by a V critic
        if args.critic == "q":
            with torch.no_grad():
                next_action = agent.sample(s_next)
        # $Q_{\omega_t}(s_t, a_t)$ and $Q_{\omega_t}(s_{t+1}, a_{t+1})$ (or $V$) in one forward pass, the target $y_t$ and $\delta$
        values, next_values = agent.critic_pair(s, action, s_next, next_action)
        targets = td_target(r, next_values, term, args.gamma)
        delta = (targets - values).detach()
        # The order departs from the slide on purpose. Algorithm 2 first moves $\omega_t \to \omega_{t+1}$, then
        # weighs the actor's step by $Q_\omega(s_t, a_t)$. Here both gradients are taken at $(\theta_t, \omega_t)$
        # and applied in one optimizer step: the actor's weight is the critic before this step's update,
        # $Q_{\omega_t}(s_t, a_t)$ (or $\delta$ from $V_{\omega_t}$), as in Sutton and Barto's one-step actor-critic.
        # One forward and one backward pass per env step instead of two; the two updates touch disjoint
        # parameters, so summing the losses changes nothing else.
        log_prob, entropy = agent.log_prob_entropy(s, action)
        weights = values if args.critic == "q" else delta
        loss = actor_loss(log_prob, weights, entropy, args.ent_coef) + critic_loss(values, targets)
        # No gradient clipping: it would cap the rare large $\delta$ of a terminal step while the many
        # small ones pass, moving the critic's fixed point (on CartPole $V$ drifts to $1/(1-\gamma)$).
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        # ## Logging, under CleanRL's names, every 100 updates and after the last: `run.log` also runs the
        # NaN guard, which walks every weight.
        log_now = iteration % 100 == 0 or iteration == run.num_iterations or run.interrupted
        # A NaN loss is logged at once: the guard stops the run before a NaN policy is sampled from.
        if log_now or not torch.isfinite(loss):
            metrics = {
                "charts/learning_rate": optimizer.param_groups[0]["lr"],
                "losses/td_error": delta.abs().mean(),
                "losses/critic_value": values.mean(),
                "losses/entropy": entropy.mean(),
                "losses/loss": loss,
            }
            run.log(global_step, metrics)

    # ## The end: `run.finish` saves, evaluates the most likely action and writes the summary
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
