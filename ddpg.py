r"""Deep Deterministic Policy Gradient (DDPG), for Box actions.

Paper: Lillicrap, Hunt, Pritzel, Heess, Erez, Tassa, Silver, Wierstra. "Continuous control with
deep reinforcement learning", ICLR 2016 (arXiv:1509.02971), built on Silver et al.'s deterministic
policy gradient theorem (ICML 2014). Lecture: slides "Deterministic Policies", which recall DQN's
replay buffer $D$, minibatches $U(D)$ and target network $\theta^-$.

A deterministic actor $\pi(s;\theta)$ is moved along the gradient of the critic instead of
maximising $Q$ over $a$:

$\nabla_\theta J(\theta) = \mathbb{E}_{s \sim D}[\nabla_a Q(s, a; \phi)|_{a=\pi(s;\theta)} \nabla_\theta \pi(s;\theta)]$,

and the critic minimises DQN's loss with the target actor in place of the max:

$\mathcal{L}(\phi) = \mathbb{E}_{(s_t, a_t, r_t, s_{t+1}) \sim U(D)}[(r_t + \gamma Q(s_{t+1}, \pi(s_{t+1}; \theta^-); \phi^-) - Q(s_t, a_t; \phi))^2]$,

with the targets following slowly, $\theta^- \leftarrow \tau\theta + (1-\tau)\theta^-$.

Run: python ddpg.py --env-id Pendulum-v1
LunarLanderContinuous-v3:
    python ddpg.py --env-id LunarLanderContinuous-v3 --anneal-lr --total-timesteps 500000
"""

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
    """DDPG: trains a deterministic actor and a Q critic from a replay buffer, for Box actions."""

    # DDPG's own settings, under CleanRL's names (its `ddpg_continuous_action.py`); the defaults are for Pendulum-v1.
    learning_rate: float = 1e-3
    """Adam's step size alpha, for actor and critic"""
    anneal_lr: bool = False
    """decay both step sizes linearly to 0, for a steadier final policy (used on LunarLander)"""
    num_envs: int = 1
    """parallel environments (each env step is followed by one gradient step)"""
    buffer_size: int = 1_000_000
    """capacity of the replay buffer D (the oldest transitions are overwritten)"""
    gamma: float = 0.98
    """discount factor gamma"""
    tau: float = 0.005
    """Polyak coefficient tau of the target networks"""
    batch_size: int = 256
    """transitions per minibatch drawn from D"""
    exploration_noise: float = 0.1
    """std of the Gaussian exploration noise, as a fraction of each action dimension's half-range"""
    learning_starts: int = 1000
    """uniformly random actions for this many steps before the first update"""
    policy_frequency: int = 1
    """update the actor and the targets every this many critic updates"""
    hidden_size: int = 64
    """units in each of the two hidden layers of actor and critic"""
    num_threads: int = 1
    """torch CPU threads (1 is fastest for networks this small)"""

    # The fields every script shares (CONTRIBUTING.md), same names and meanings in all nine.
    exp_name: str = "ddpg"
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
    env_id: str = "Pendulum-v1"
    """the gymnasium environment id"""
    total_timesteps: int = 20_000
    """environment steps to train for, over all environments"""
    eval_episodes: int = 10
    """episodes of the final, deterministic policy to evaluate"""


# ## Environments
# Gymnasium 1.x vector envs with `SAME_STEP` autoreset: when an episode ends, `step` returns the first observation
# of the next one, and the true last one in `info["final_obs"]`: the $s_{t+1}$ the replay buffer must store.
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
# Two separate networks, as on the slides: the actor $\pi(s;\theta)$ and the critic $Q(s, a;\phi)$, each with
# two ReLU hidden layers of `hidden_size` (64) units and PyTorch's default initialisation,
# $U(\pm 1/\sqrt{\text{fan-in}})$ in every layer, as in CleanRL. The DDPG paper's networks differ: 400 and
# 300 units, batch normalisation, the last layers drawn from $U(\pm 3 \cdot 10^{-3})$ (so that the first
# actions and values are near 0), and the action entering the critic only at its second layer (here it
# enters at the first, beside $s$).
# The actor squashes its output with $\tanh$ into the box
# $[\text{low}, \text{high}]$: $a = b + c \tanh(f(s))$, $c = (\text{high}-\text{low})/2$, $b = (\text{high}+\text{low})/2$.
class Actor(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int, low, high):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, action_dim),
        )
        # $c$ and $b$ as buffers: they move with `.to(device)` and are saved with the weights, never trained
        self.register_buffer("action_scale", torch.tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # $b + c \tanh(f(s))$, the product and the sum in one op
        return torch.addcmul(self.action_bias, self.action_scale, torch.tanh(self.net(obs)))


# The critic $Q(s, a;\phi)$ takes the action as a second input, so $\nabla_a Q$ exists.
class Critic(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim + action_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], dim=-1)).squeeze(-1)


# ## Experience replay buffer $D$
# One preallocated array used as a ring, a row per transition
# $(s_t, a_t, r_t, s_{t+1}, \text{terminated}_t)$: the newest overwrites the oldest once `capacity`
# is reached. Sampling draws uniformly, with replacement, among the filled rows only. One array
# makes a minibatch a single indexing (on the CPU the torch view shares the numpy memory).
class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: torch.device):
        self.capacity = capacity
        self.device = device
        # `pos`: the row the next transition goes to; `size`: how many rows hold one
        self.pos = 0
        self.size = 0
        # the widths of the columns of $s_t, a_t, r_t, s_{t+1}, \text{terminated}_t$ in a row
        self.splits = [obs_dim, action_dim, 1, obs_dim, 1]
        self.data = np.zeros((capacity, sum(self.splits)), dtype=np.float32)
        # a numpy view of each field's columns, to store into; a torch view of the whole, to sample from
        columns = np.split(self.data, np.cumsum(self.splits)[:-1], axis=1)
        self.obs, self.actions, self.rewards, self.next_obs, self.terminated = columns
        self.tensor = torch.from_numpy(self.data)

    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        r"""Store one vector step: $(s_t, a_t, r_t, s_{t+1}, \text{terminated}_t)$ of each env."""
        idx = (self.pos + np.arange(len(obs))) % self.capacity
        self.obs[idx] = obs
        self.actions[idx] = actions
        self.rewards[idx, 0] = rewards
        self.next_obs[idx] = next_obs
        self.terminated[idx, 0] = terminated
        self.pos = int(idx[-1] + 1) % self.capacity
        self.size = min(self.size + len(obs), self.capacity)

    def sample(self, batch_size: int) -> list[torch.Tensor]:
        """A minibatch from $U(D)$: `[obs, actions, rewards, next_obs, terminated]`."""
        batch = self.tensor[torch.randint(0, self.size, (batch_size,))].to(self.device)
        obs, actions, rewards, next_obs, terminated = torch.split(batch, self.splits, dim=1)
        return [obs, actions, rewards.squeeze(1), next_obs, terminated.squeeze(1)]


# ## Exploration
# A deterministic policy explores only through added noise: $a_t = \text{clip}(\pi(s_t) + \epsilon_t)$
# with $\epsilon_{t,i} \sim \mathbb{N}(0, (\sigma c_i)^2)$ drawn independently for each action
# dimension $i$ and scaled by its half-range $c_i$. The DDPG paper uses temporally correlated
# Ornstein-Uhlenbeck noise instead; we use uncorrelated Gaussian noise, as TD3 (Fujimoto et al. 2018) and
# CleanRL do: it explores as well on these tasks and needs no state carried across steps and episode ends.
def explore(actions, noise_std, low, high, rng: np.random.Generator) -> np.ndarray:
    noise = noise_std * rng.standard_normal(actions.shape)
    return np.clip(actions + noise, low, high).astype(np.float32)


# ## The critic's target
# $y_t = r_t + \gamma (1 - \text{terminated}_t) Q(s_{t+1}, \pi(s_{t+1};\theta^-);\phi^-)$. A time limit
# (truncation) is not a terminal state: there $s_{t+1}$ is the true last observation and $y_t$ bootstraps.
# The rewards are used as they are: no reward clipping, unlike the DQN recipe the slides recall.
def td_target(rewards, terminated, next_q, gamma: float):
    return rewards + gamma * (1.0 - terminated) * next_q


# ## The deterministic policy gradient
# Minimising $-\hat{\mathbb{E}}[Q(s, \pi(s;\theta);\phi)]$ over $\theta$ gives, by the chain rule, the
# slide's $\nabla_\theta J = \mathbb{E}[\nabla_a Q(s,a)|_{a=\pi(s)} \nabla_\theta \pi(s;\theta)]$ (the slide's
# $\nabla_\theta Q$ is this $\nabla_a Q$, taken at $a = \pi(s;\theta)$ and with the critic's own weights $\phi$).
def actor_loss(actor: Actor, critic: Critic, obs: torch.Tensor) -> torch.Tensor:
    return -critic(obs, actor(obs)).mean()


# ## Target networks
# Polyak averaging, $\theta^- \leftarrow \tau\theta + (1-\tau)\theta^-$, one tensor at a time: `lerp_`
# computes $\theta^- + \tau(\theta - \theta^-)$, the same average.
@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    for target_param, param in zip(target.parameters(), online.parameters()):
        target_param.lerp_(param, tau)


# ## The checks of DDPG's own arguments
# A bad value is one `error:` line (the `ArgError` of the tail), before anything is built.
def check_args(args: Args) -> None:
    sizes = ("num_envs", "buffer_size", "batch_size", "policy_frequency", "hidden_size")
    for name in (*sizes, "num_threads", "learning_rate"):
        value = getattr(args, name)
        if not value > 0:
            flag = "--" + name.replace("_", "-")
            raise ArgError(f"{flag} must be positive, got {value}")
    # the discount and the Polyak coefficient in their ranges, the noise and the warm-up not negative
    if not (0 <= args.gamma <= 1 and 0 < args.tau <= 1):
        got = f"{args.gamma}, {args.tau}"
        raise ArgError(f"--gamma must lie in [0, 1] and --tau in (0, 1], got {got}")
    if not args.exploration_noise >= 0 or args.learning_starts < 0:
        raise ArgError("--exploration-noise and --learning-starts must be >= 0")
    # The first gradient step follows the first vector step that takes `global_step` past `learning_starts`.
    first_update = args.num_envs * (args.learning_starts // args.num_envs + 1)
    if 0 < args.total_timesteps < first_update:
        too_few = f"--total-timesteps {args.total_timesteps} is less than one update"
        raise ArgError(f"{too_few} ({first_update} steps)")
    if args.buffer_size < max(args.batch_size, args.num_envs):
        batch = f"--batch-size {args.batch_size}"
        holds = f"a minibatch ({batch}) and a step of every env (--num-envs {args.num_envs})"
        raise ArgError(f"--buffer-size {args.buffer_size} must hold {holds}")


# ## Training
def train(args: Args) -> dict:
    # The checks first: a bad argument, env id or action space is one error line before anything is built.
    # `Run` (the tail) also makes the run folder, progress.csv and the status line.
    check_args(args)
    run = Run(args, "ddpg", (gym.spaces.Box,))

    # Seed every generator the run draws from: `rng` (warm-up actions, noise), torch (weights, minibatches),
    # the envs at `reset`. `torch_deterministic` sets cuDNN's flag; one thread is fastest at this size.
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.num_threads)
    rng = np.random.default_rng(args.seed)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")

    # N envs in lockstep. Their spaces size the networks; the action box $[\text{low}, \text{high}]$ bounds
    # the actor's $\tanh$, the warm-up actions and the noise, so it must be flat and finite.
    envs = make_envs(args.env_id, args.num_envs)
    obs_dim = envs.single_observation_space.shape[0]
    action_dim = envs.single_action_space.shape[0]
    low = envs.single_action_space.low.astype(np.float32)
    high = envs.single_action_space.high.astype(np.float32)
    if low.ndim != 1 or not (np.isfinite(low).all() and np.isfinite(high).all()):
        envs.close()
        space = f"low={low}, high={high}"
        raise ArgError(f"ddpg.py needs a flat, bounded Box action space, {args.env_id} has {space}")

    # The online networks $\pi(s;\theta)$ and $Q(s, a;\phi)$, each with its own Adam, and the target
    # networks $\theta^-$ and $\phi^-$, which no optimizer steps.
    actor = Actor(obs_dim, action_dim, args.hidden_size, low, high).to(device)
    critic = Critic(obs_dim, action_dim, args.hidden_size).to(device)
    actor_target = Actor(obs_dim, action_dim, args.hidden_size, low, high).to(device)
    critic_target = Critic(obs_dim, action_dim, args.hidden_size).to(device)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate)
    # `run.start` loads `--model-path` and opens the run folder. The checkpoint holds $\theta$ and $\phi$, not
    # the targets (they start again as copies), the optimizers' moments or the replay buffer.
    run.start(args.num_envs, actor=actor, critic=critic)
    # $\theta^-, \phi^-$ start as copies of $\theta, \phi$ and follow them by Polyak averaging, not by gradients.
    actor_target.load_state_dict(actor.state_dict())
    critic_target.load_state_dict(critic.state_dict())
    actor_target.requires_grad_(False)
    critic_target.requires_grad_(False)
    # The exploration noise's std $\sigma c_i$ in each action dimension $i$
    noise_std = (args.exploration_noise * (high - low) / 2.0).astype(np.float32)

    # The replay buffer $D$, no larger than the run; the last losses, kept for the logs.
    N = args.num_envs
    capacity = min(args.buffer_size, max(args.total_timesteps, 1))
    rb = ReplayBuffer(capacity, obs_dim, action_dim, device)
    global_step = 0
    num_updates = 0
    pi_loss = None  # until the first actor step
    obs, _ = envs.reset(seed=args.seed)
    obs = obs.astype(np.float32)
    for iteration in run.iterations():  # one iteration: one step of each of the N envs
        # `--anneal-lr`: vector step $k$ of $K$ uses $\alpha (1 - (k-1)/K)$, to end on a settled policy
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1) / run.num_iterations
            for optimizer in (critic_optimizer, actor_optimizer):
                optimizer.param_groups[0]["lr"] = args.learning_rate * frac

        # ## Acting: uniform random actions first, then $\pi(s_t;\theta)$ plus noise
        if global_step < args.learning_starts:
            actions = rng.uniform(low, high, size=(N, action_dim)).astype(np.float32)
        else:
            with torch.inference_mode():
                obs_tensor = torch.from_numpy(obs).to(device)
                mu = actor(obs_tensor).cpu().numpy()
            actions = explore(mu, noise_std, low, high, rng)
        # Observe $r_t$, $s_{t+1}$; $D$ gets the true $s_{t+1}$ (where an episode ended, its last observation)
        next_obs, reward, terminated, truncated, info = envs.step(actions)
        next_obs = next_obs.astype(np.float32)
        global_step += N
        rb.add(obs, actions, reward, true_next_obs(next_obs, info), terminated)
        obs = next_obs
        run.record(global_step, reward, terminated | truncated)

        # ## Learning: one gradient step per env step, on a minibatch from $U(D)$
        # The actor and the targets move every `policy_frequency` critic steps (TD3's delay; 1: plain DDPG).
        if global_step > args.learning_starts:
            for _ in range(N):
                # The targets $y_t$ of a minibatch, from the target networks $\theta^-$ and $\phi^-$
                b_obs, b_actions, b_rewards, b_next_obs, b_terminated = rb.sample(args.batch_size)
                with torch.no_grad():
                    next_actions = actor_target(b_next_obs)
                    next_q = critic_target(b_next_obs, next_actions)
                    y = td_target(b_rewards, b_terminated, next_q, args.gamma)
                # Critic: one Adam step down $\mathcal{L}(\phi) = \hat{\mathbb{E}}[(y_t - Q(s_t, a_t;\phi))^2]$
                q_values = critic(b_obs, b_actions)
                qf_loss = nn.functional.mse_loss(q_values, y)
                critic_optimizer.zero_grad()
                qf_loss.backward()
                critic_optimizer.step()
                num_updates += 1
                # Actor: one Adam step up $Q(s_t, \pi(s_t;\theta);\phi)$, then $\theta^-$ and $\phi^-$ one
                # Polyak step toward $\theta$ and $\phi$. The backward pass also leaves gradients in the
                # critic's weights: its `zero_grad` clears them before its next step.
                if num_updates % args.policy_frequency == 0:
                    pi_loss = actor_loss(actor, critic, b_obs)
                    actor_optimizer.zero_grad()
                    pi_loss.backward()
                    actor_optimizer.step()
                    polyak_update(actor_target, actor, args.tau)
                    polyak_update(critic_target, critic, args.tau)

        # ## Logging: the last minibatch's losses, under CleanRL's names, every 100 vector steps (as
        # CleanRL logs) and after the last one: `run.log` also runs the NaN guard, which walks every weight.
        log_now = iteration % 100 == 0 or iteration == run.num_iterations or run.interrupted
        if num_updates > 0 and log_now:
            metrics = {"losses/qf1_loss": qf_loss, "losses/qf1_values": q_values.mean()}
            if pi_loss is not None:
                metrics["losses/actor_loss"] = pi_loss
            run.log(global_step, metrics)

    # ## The end: `run.finish` saves, evaluates $\pi(s;\theta)$ without noise and writes the summary
    envs.close()
    return run.finish(global_step, actor)


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
