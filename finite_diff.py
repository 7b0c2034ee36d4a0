r"""Finite-difference policy gradient with a linear policy, for Discrete and Box actions.

Lecture: slide "Finite Differences" (then gradient ascent, $\theta_{t+1} = \theta_t + \alpha \nabla_\theta J(\theta_t)$,
from "Policy Gradient Methods"). See also Peters and Schaal, "Reinforcement learning of motor
skills with policy gradients", Neural Networks 21 (2008), section 3.1.

The partial derivative along each of the n coordinates of $\theta$ is estimated from rollouts,

$\frac{\partial J(\theta)}{\partial \theta_k} \approx \frac{J(\theta + \epsilon e_k) - J(\theta)}{\epsilon}$
(or, with `--central`, $\frac{J(\theta + \epsilon e_k) - J(\theta - \epsilon e_k)}{2\epsilon}$),

with $J$ the mean undiscounted return of `num_envs` episodes, so one gradient costs n+1 (2n)
policy evaluations: the policy is linear to keep n small. No $\nabla \log \pi$ is needed.

Common random numbers (on by default): every $J(\theta + \epsilon e_k)$ runs on the same env seeds
and the same action noise as $J(\theta)$. The difference of two noisy estimates has variance
$\text{Var}[\hat{J}_1] + \text{Var}[\hat{J}_2] - 2\text{Cov}[\hat{J}_1, \hat{J}_2]$; with independent rollouts the
covariance is 0 and the rollout noise, divided by a small $\epsilon$, swamps the signal. With the
same randomness the two rollouts differ only where the perturbation changes an action, the
covariance is large, and the difference measures the effect of $\epsilon e_k$ itself.

Run: python finite_diff.py --env-id CartPole-v1
"""

import json
import os
import random
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
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
    """load weights from this file before training (with --total-timesteps 0: only evaluate)"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id"""
    total_timesteps: int = 400_000
    """environment steps to train for, over all environments"""
    eval_episodes: int = 10
    """episodes of the final, deterministic policy to evaluate"""

    learning_rate: float = 0.1
    """Adam's step size alpha"""
    num_envs: int = 4
    """episodes per estimate of J (all n+1 estimates run side by side: (n+1) * num_envs environments)"""
    epsilon: float = 0.1
    """the perturbation epsilon of each coordinate"""
    central: bool = False
    """central differences (2n evaluations, error O(eps^2)) instead of forward ones (n+1, error O(eps))"""
    common_random_numbers: bool = True
    """the same env seeds and action noise for J(theta) and every J(theta + eps e_k)"""
    num_threads: int = 1
    """torch CPU threads (1 is fastest for a policy this small)"""


class ArgError(ValueError):
    """Bad input: reported as one `error:` line and exit status 2."""


# ## Environments
# Gymnasium 1.x vector envs with `SAME_STEP` autoreset. An estimate of $J$ needs whole episodes,
# so each batch resets every environment, runs it until its episode ends, and masks out the steps
# it takes after that (they start an episode we do not use, and do not count).
def make_env(env_id: str, seed: int, render_mode: str | None = None):
    def thunk():
        env = gym.make(env_id, render_mode=render_mode)
        env.action_space.seed(seed)
        return env

    return thunk


def make_envs(env_id: str, num_envs: int, seed: int) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv(
        [make_env(env_id, seed + i) for i in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


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


# ## The n+1 parameter vectors to evaluate
# Forward: $\theta$, then $\theta + \epsilon e_k$ for k = 1..n. Central: $\theta \pm \epsilon e_k$, then $\theta$
# (not needed for the gradient, it is the policy we report). Rows of a (K, n) matrix.
def perturbed_parameters(theta: torch.Tensor, epsilon: float, central: bool) -> torch.Tensor:
    steps = epsilon * torch.eye(theta.shape[0], dtype=theta.dtype)
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


def check_args(args: Args) -> None:
    if not 0 <= args.seed < 2**32:
        raise ArgError(f"--seed must lie in [0, 2**32), got {args.seed}")
    for name in ("num_envs", "num_threads"):
        if getattr(args, name) <= 0:
            raise ArgError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("learning_rate", "epsilon"):
        if not getattr(args, name) > 0:
            raise ArgError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.eval_episodes < 0:
        raise ArgError(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    if args.total_timesteps == 0 and args.model_path is None:
        raise ArgError("--total-timesteps 0 only evaluates, and needs --model-path")
    if args.total_timesteps < 0:
        raise ArgError(f"--total-timesteps must be >= 0, got {args.total_timesteps}")
    if args.model_path is not None and not os.path.isfile(args.model_path):
        raise ArgError(f"--model-path {args.model_path}: no such file")
    if args.capture_video:
        import importlib.util

        if importlib.util.find_spec("moviepy") is None:
            raise ArgError('--capture-video needs moviepy and pygame: pip install "gymnasium[classic-control,other]"')


def evaluate(theta: torch.Tensor, discrete: bool, args: Args, run_name: str) -> list[float]:
    """Returns of `eval_episodes` episodes of the most likely action, no exploration."""
    env = gym.make(args.env_id, render_mode="rgb_array" if args.capture_video else None)
    if args.capture_video:
        env = gym.wrappers.RecordVideo(env, f"videos/{run_name}", episode_trigger=lambda e: True)
    action_dim = int(env.action_space.n) if discrete else env.action_space.shape[0]
    returns = []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 + episode)
        done, total = False, 0.0
        while not done:
            f, _ = linear_policy(theta[None], torch.as_tensor(obs, dtype=theta.dtype).view(1, 1, -1), action_dim)
            action = (
                int(f.argmax())
                if discrete
                else np.clip(f.view(-1).numpy(), env.action_space.low, env.action_space.high)
            )
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
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
    rng = np.random.default_rng(args.seed)

    try:
        probe = gym.make(args.env_id)
    except (gym.error.Error, ImportError) as e:  # unknown id, missing extra (MuJoCo, Box2D), ...
        raise ArgError(f"cannot make env {args.env_id!r}: {str(e).splitlines()[0]}") from None
    obs_space, act_space = probe.observation_space, probe.action_space
    probe.close()
    if not isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise ArgError(f"finite_diff.py needs a Discrete or Box action space, {args.env_id} has {act_space}")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ArgError(f"finite_diff.py needs a flat Box observation space, {args.env_id} has {obs_space}")
    discrete = isinstance(act_space, gym.spaces.Discrete)
    obs_dim = obs_space.shape[0]
    action_dim = int(act_space.n) if discrete else act_space.shape[0]
    n = num_params(obs_dim, action_dim, discrete)
    K = 2 * n + 1 if args.central else n + 1
    M = args.num_envs
    if 0 < args.total_timesteps < K * M:
        raise ArgError(
            f"--total-timesteps {args.total_timesteps} is less than one update ({K} estimates of J x {M} episodes)"
        )
    # $\theta = 0$: the uniform policy (discrete) or $\mathbb{N}(0, I)$ (continuous)
    theta = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=args.learning_rate)
    if args.model_path is not None:
        try:
            saved = torch.load(args.model_path, map_location="cpu", weights_only=False)
        except Exception as e:  # not a model file
            raise ArgError(f"--model-path {args.model_path} is not a saved model: {type(e).__name__}") from None
        if not isinstance(saved, dict) or getattr(saved.get("theta"), "shape", None) != (n,):
            raise ArgError(f"--model-path {args.model_path} does not fit {args.env_id}: it needs {n} parameters")
        with torch.no_grad():
            theta.copy_(saved["theta"])
    envs = make_envs(args.env_id, K * M, args.seed)
    print(f"policy parameters n = {n}: each gradient costs {K} estimates of J, {K * M} episodes")

    os.makedirs(f"runs/{run_name}", exist_ok=True)
    writer = None
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name, config=vars(args))
        writer = wandb
    progress = open(f"runs/{run_name}/progress.csv", "w")
    progress.write("global_step,wall_time,episodic_return,episodic_length\n")

    global_step, episode_returns = 0, []
    start_time = last_print = time.time()
    interrupted = False
    try:
        while global_step < args.total_timesteps:
            # ## Estimate $J$ at all K parameter vectors, side by side (env k * M + m runs vector k)
            # Common random numbers: one set of M env seeds and one stream of action noise, shared by
            # the K groups; otherwise every one of the K * M environments gets its own.
            thetas = perturbed_parameters(theta.detach(), args.epsilon, args.central)
            n_seeds = M if args.common_random_numbers else K * M
            seeds = rng.integers(0, 2**31 - 1, size=n_seeds)
            obs, _ = envs.reset(seed=[int(x) for x in np.tile(seeds, K if args.common_random_numbers else 1)])
            active = np.ones(K * M, dtype=bool)
            ep_return, ep_length = np.zeros(K * M), np.zeros(K * M, dtype=np.int64)
            while active.any() and global_step + active.sum() <= args.total_timesteps:
                f, log_std = linear_policy(
                    thetas, torch.from_numpy(obs).to(thetas.dtype).view(K, M, obs_dim), action_dim
                )
                noise = torch.rand(1 if args.common_random_numbers else K, M, action_dim, dtype=thetas.dtype)
                if discrete:
                    # Gumbel-max: $\arg\max_a (f_a(s) - \log(-\log u_a))$ samples the softmax
                    action = torch.argmax(f - torch.log(-torch.log(noise)), dim=-1).view(-1).numpy()
                else:
                    # $f(s) + \sigma \xi$, with $\xi = \Phi^{-1}(u)$ standard normal
                    xi = torch.special.ndtri(noise)
                    action = (f + torch.exp(log_std) * xi).view(K * M, action_dim).numpy()
                    action = np.clip(action, act_space.low, act_space.high).astype(np.float32)
                obs, reward, terminated, truncated, _ = envs.step(action)
                global_step += int(active.sum())
                ep_return += np.where(active, reward, 0.0)
                ep_length += active
                finished = active & (terminated | truncated)
                for i in np.flatnonzero(finished):
                    episode_returns.append(float(ep_return[i]))
                    wall = time.time() - start_time
                    progress.write(f"{global_step},{wall:.4f},{ep_return[i]:.6g},{ep_length[i]}\n")
                    progress.flush()
                    if writer:
                        writer.log(
                            {"charts/episodic_return": ep_return[i], "charts/episodic_length": ep_length[i]},
                            step=global_step,
                        )
                active &= ~finished
            if active.any():
                break  # the budget ran out inside this batch: no update from half the estimates

            # ## Gradient ascent $\theta \leftarrow \theta + \alpha \hat{\nabla}_\theta J(\theta)$ (through Adam)
            J = torch.from_numpy(ep_return).view(K, M).mean(1)
            grad = finite_difference_gradient(J, args.epsilon, args.central)
            theta.grad = -grad
            optimizer.step()
            if not torch.isfinite(theta).all():
                raise FloatingPointError(f"parameters became NaN/inf at global_step={global_step}")

            now = time.time()
            sps = int(global_step / (now - start_time))
            J_theta = float(J[-1] if args.central else J[0])
            if writer:
                writer.log(
                    {"charts/SPS": sps, "charts/J_theta": J_theta, "losses/grad_norm": float(grad.norm())},
                    step=global_step,
                )
            if now - last_print >= 2.0:
                last_print = now
                eta = (args.total_timesteps - global_step) / max(sps, 1)
                print(f"step {global_step}/{args.total_timesteps} | {sps} SPS | {now - start_time:.0f}s elapsed, "
                      f"{eta:.0f}s left | J(theta) {J_theta:.1f}", flush=True)  # fmt: skip
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: saving what was reached", file=sys.stderr)
    wall_time = time.time() - start_time
    envs.close()
    progress.close()

    if args.save_model:
        path = f"runs/{run_name}/{args.exp_name}.pt"
        torch.save({"theta": theta.detach(), "args": vars(args)}, path)
        print(f"model saved to {path}")

    eval_returns = [] if interrupted else evaluate(theta.detach(), discrete, args, run_name)
    summary = {
        "algo": "finite_diff",
        "env_id": args.env_id,
        "seed": args.seed,
        "global_step": global_step,
        "wall_time_s": wall_time,
        "sps": global_step / wall_time if wall_time > 0 else 0.0,
        "eval_mean_return": float(np.mean(eval_returns)) if eval_returns else None,
        "eval_std_return": float(np.std(eval_returns)) if eval_returns else None,
        "eval_episodes": len(eval_returns),
        "train_last_mean_return": float(np.mean(episode_returns[-20:])) if episode_returns else None,
        "interrupted": interrupted,
        "run_name": run_name,
    }
    with open(f"runs/{run_name}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    if writer:
        writer.log({"eval/mean_return": summary["eval_mean_return"]}, step=global_step)
        writer.finish()
    print(
        f"eval: mean_return={summary['eval_mean_return']} std_return={summary['eval_std_return']} episodes={len(eval_returns)}"
    )
    return summary


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except ArgError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
