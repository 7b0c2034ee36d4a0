r"""Finite-difference policy gradient with a linear policy, for Discrete and Box actions.

Lecture: slide "Finite Differences" (then gradient ascent,
$\theta_{t+1} = \theta_t + \alpha \nabla_\theta J(\theta_t)$, from "Policy Gradient Methods").
See also Peters and Schaal, "Reinforcement learning of motor skills with policy gradients",
Neural Networks 21 (2008), section 3.1.

The partial derivative along each of the n coordinates of $\theta$ is estimated from rollouts,

$\frac{\partial J(\theta)}{\partial \theta_k} \approx \frac{J(\theta + \epsilon e_k) - J(\theta)}{\epsilon}$
(or, with `--central`, $\frac{J(\theta + \epsilon e_k) - J(\theta - \epsilon e_k)}{2\epsilon}$),

with $J$ the mean undiscounted return of `num_envs` episodes, so one gradient costs n+1 policy
evaluations (with `--central` 2n+1: the 2n of the formula, and $\theta$ itself, the policy that is
reported): the policy is linear to keep n small. No $\nabla \log \pi$ is needed.

Common random numbers (on by default): every $J(\theta + \epsilon e_k)$ runs on the same env seeds
and the same action noise as $J(\theta)$. The difference of two noisy estimates has variance
$\text{Var}[\hat{J}_1] + \text{Var}[\hat{J}_2] - 2\text{Cov}[\hat{J}_1, \hat{J}_2]$; with independent rollouts the
covariance is 0 and the rollout noise, divided by a small $\epsilon$, swamps the signal. With the
same randomness the two rollouts differ only where the perturbation changes an action, the
covariance is large, and the difference measures the effect of $\epsilon e_k$ itself.

Run: python finite_diff.py --env-id CartPole-v1
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
    """Finite-difference policy gradient with a linear policy, for Discrete or Box actions."""

    # The method's own fields: the step size, the $\epsilon$ of each perturbation and the rollouts behind each $J$.
    learning_rate: float = 0.1
    """Adam's step size alpha"""
    num_envs: int = 4
    """M, episodes per estimate of J (the K = n+1, or 2n+1, estimates run in K * M envs)"""
    epsilon: float = 0.1
    """the perturbation epsilon of each coordinate"""
    central: bool = False
    """central differences (2n+1 estimates of J, error O(eps^2)), not forward (n+1, O(eps))"""
    common_random_numbers: bool = True
    """the same env seeds and action noise for J(theta) and every J(theta + eps e_k)"""
    num_threads: int = 1
    """torch CPU threads (1 is fastest for a policy this small)"""

    # The fields every script shares (CONTRIBUTING.md), same names and meanings in all nine.
    exp_name: str = "finite_diff"
    """the name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of random, numpy, torch and the environments"""
    torch_deterministic: bool = True
    """set torch.backends.cudnn.deterministic (only cuDNN reads it; this policy never uses cuDNN)"""
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
    total_timesteps: int = 400_000
    """environment steps to train for, over all environments"""
    eval_episodes: int = 10
    """episodes of the final, deterministic policy to evaluate"""


# ## Environments
# Gymnasium 1.x vector envs with `SAME_STEP` autoreset. An estimate of $J$ needs whole episodes, so each batch
# resets every env, runs it until its episode ends, and masks out the steps after that (a new episode, unused, uncounted).
def make_envs(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
    env_fns = [lambda: gym.make(env_id) for _ in range(num_envs)]
    return gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


# ## The linear policy, for K parameter vectors at once
# $\theta = (W, c[, \log\sigma])$ flattened, $f(s) = W s + c$. Discrete: $\pi(a|s) = \text{softmax}(f(s))_a$;
# continuous: $\pi(a|s) = \mathbb{N}(f(s), \text{diag}(\sigma^2))$. `thetas` (K, n), `obs` (K, M, obs_dim).
def num_params(obs_dim: int, action_dim: int, discrete: bool) -> int:
    return action_dim * obs_dim + action_dim + (0 if discrete else action_dim)


def linear_policy(thetas: torch.Tensor, obs: torch.Tensor, action_dim: int):
    K, _, obs_dim = obs.shape
    W = thetas[:, : action_dim * obs_dim].view(K, action_dim, obs_dim)
    c = thetas[:, action_dim * obs_dim : action_dim * (obs_dim + 1)]
    log_std = thetas[:, action_dim * (obs_dim + 1) :]
    return torch.einsum("kai,kmi->kma", W, obs) + c[:, None], log_std[:, None]


# ## The K parameter vectors to evaluate (K = n+1, or 2n+1 central)
# Forward: $\theta$, then $\theta + \epsilon e_k$ for k = 1..n. Central: $\theta \pm \epsilon e_k$, then $\theta$
# (not needed for the gradient, it is the policy we report). Rows of a (K, n) matrix.
def perturbed_parameters(theta: torch.Tensor, epsilon: float, central: bool) -> torch.Tensor:
    steps = epsilon * torch.eye(theta.shape[0], dtype=theta.dtype, device=theta.device)
    zero = torch.zeros_like(steps[:1])
    offsets = torch.cat([steps, -steps, zero]) if central else torch.cat([zero, steps])
    return theta + offsets


# ## The finite-difference gradient
# $\hat{g}_k = (J(\theta + \epsilon e_k) - J(\theta)) / \epsilon$, or $(J(\theta + \epsilon e_k) - J(\theta - \epsilon e_k)) / 2\epsilon$,
# from the K estimates of $J$ in the order of `perturbed_parameters`.
def finite_difference_gradient(J: torch.Tensor, epsilon: float, central: bool) -> torch.Tensor:
    if central:
        n = (J.shape[0] - 1) // 2
        return (J[:n] - J[n : 2 * n]) / (2 * epsilon)
    return (J[1:] - J[0]) / epsilon


# The evaluation's policy: the most likely action of $\pi_\theta$, for a batch of observations.
def greedy_policy(theta: torch.Tensor, action_dim: int, discrete: bool):
    def policy(obs: torch.Tensor) -> torch.Tensor:
        obs = obs.to(theta.device, theta.dtype)
        f, _ = linear_policy(theta.detach()[None], obs[None], action_dim)
        return f[0].argmax(-1) if discrete else f[0]

    return policy


def check_args(args: Args) -> None:
    for name in ("num_envs", "num_threads", "learning_rate", "epsilon"):
        value = getattr(args, name)
        if not value > 0:
            raise ArgError(f"--{name.replace('_', '-')} must be positive, got {value}")


# ## Training: gradient ascent along the finite-difference gradient of the slide "Finite Differences"
def train(args: Args) -> dict:
    # A bad argument, env id or space is one error line before anything is written (`Run` checks)
    check_args(args)
    run = Run(args, "finite_diff", (gym.spaces.Discrete, gym.spaces.Box))

    # ### Seeds and device: same seed, same machine, same run
    # `rng` draws the env seeds of every batch.
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.num_threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(args.seed)

    # ### The sizes of the spaces, and the n parameters of the linear policy
    # One env, made and closed, tells them: how many envs run side by side depends on n.
    probe = make_envs(args.env_id, 1)
    obs_dim = probe.single_observation_space.shape[0]
    action_space = probe.single_action_space
    probe.close()
    discrete = isinstance(action_space, gym.spaces.Discrete)
    action_dim = int(action_space.n) if discrete else action_space.shape[0]
    action_low = None if discrete else action_space.low
    action_high = None if discrete else action_space.high
    n = num_params(obs_dim, action_dim, discrete)

    # K estimates of $J$ per gradient (n+1 forward, 2n+1 central), each the mean of M episodes.
    # One update runs K * M whole episodes, of at least one step each.
    K = 2 * n + 1 if args.central else n + 1
    M = args.num_envs
    if 0 < args.total_timesteps < K * M:
        budget = args.total_timesteps
        raise ArgError(f"--total-timesteps {budget} is less than one update ({K * M} steps)")

    # ### Initialize $\theta = 0$: the uniform policy (discrete) or $\mathbb{N}(0, I)$ (continuous)
    theta = torch.zeros(n, dtype=torch.float64, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=args.learning_rate)
    envs = make_envs(args.env_id, K * M)
    run.start(1, theta=theta)  # loads --model-path, opens the run folder
    print(f"policy parameters n = {n}: each gradient costs {K} estimates of J, {K * M} episodes")

    # ### Until the budget is spent: one batch of K * M episodes, then one step
    global_step = 0
    while global_step < args.total_timesteps and not run.interrupted:
        # ### Estimate $J$ at all K parameter vectors, side by side (env k * M + m runs vector k)
        # Common random numbers: one set of M env seeds and one stream of action noise, shared by
        # the K groups; otherwise every one of the K * M environments gets its own.
        thetas = perturbed_parameters(theta.detach(), args.epsilon, args.central)
        crn = args.common_random_numbers
        seeds = rng.integers(0, 2**31 - 1, size=M if crn else K * M)
        env_seeds = np.tile(seeds, K if crn else 1)
        obs, _ = envs.reset(seed=[int(x) for x in env_seeds])
        active = np.ones(K * M, dtype=bool)
        ep_return = np.zeros(K * M)
        # progress.csv gets every one of these K * M episodes, those of the perturbed policies
        # $\theta + \epsilon e_k$ included: its returns are not those of $\pi_\theta$ alone
        # (`charts/J_theta` is, for W&B).
        while active.any() and global_step + active.sum() <= args.total_timesteps:
            # $f(s) = W s + c$ of each group's $\theta$, on its M envs' observations
            s = torch.from_numpy(obs).to(device, thetas.dtype).view(K, M, obs_dim)
            f, log_std = linear_policy(thetas, s, action_dim)
            # The noise $u \sim U(0, 1)$ is drawn here, not inside `torch.distributions`, so the
            # groups can share it; on the CPU, also with --cuda, so either device draws the same.
            noise_groups = 1 if crn else K
            noise = torch.rand(noise_groups, M, action_dim, dtype=thetas.dtype).to(device)
            if discrete:
                # Gumbel-max: $\arg\max_a (f_a(s) - \log(-\log u_a))$ samples the softmax
                gumbel = -torch.log(-torch.log(noise))
                action = torch.argmax(f + gumbel, dim=-1).view(-1).cpu().numpy()
            else:
                # $f(s) + \sigma \xi$, with $\xi = \Phi^{-1}(u)$ standard normal, clipped to the bounds
                xi = torch.special.ndtri(noise)
                action = (f + torch.exp(log_std) * xi).view(K * M, action_dim).cpu().numpy()
                action = np.clip(action, action_low, action_high).astype(np.float32)

            # $J$ sums each episode's rewards until its end; the steps after it count for nothing
            obs, reward, terminated, truncated, _ = envs.step(action)
            global_step += int(active.sum())
            ep_return += np.where(active, reward, 0.0)
            run.record(global_step, reward, terminated | truncated, active=active)
            active &= ~(terminated | truncated)
        if active.any():
            break  # the budget ran out inside this batch: no update from half the estimates

        # ### Gradient ascent $\theta \leftarrow \theta + \alpha \hat{\nabla}_\theta J(\theta)$ (through Adam)
        # $J$ of group k: the mean return of its M episodes; Adam descends, so it gets $-\hat{g}$
        J = torch.from_numpy(ep_return).to(device).view(K, M).mean(1)
        grad = finite_difference_gradient(J, args.epsilon, args.central)
        theta.grad = -grad
        optimizer.step()
        J_theta = float(J[-1] if args.central else J[0])
        run.log(global_step, {"charts/J_theta": J_theta, "losses/grad_norm": grad.norm()})
    envs.close()
    return run.finish(global_step, greedy_policy(theta, action_dim, discrete))


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
