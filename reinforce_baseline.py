r"""REINFORCE with a baseline: the mean return, a learned V(s), or the variance-minimizing b.

Paper: Williams. "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", Machine Learning 8, 229-256 (1992); the optimal baseline as in
Peters and Schaal, "Reinforcement learning of motor skills with policy gradients", Neural
Networks 21 (2008). Lecture: slides "REINFORCE with Baseline" (the mean baseline, $V(s)$ as a
baseline, the optimal baseline), on top of "The REINFORCE Algorithm" (Algorithm 1, rewards-to-go).

Each iteration runs N episodes with $\pi_{\theta_k}$ (one per environment) and steps along

$\hat{\nabla}_\theta J(\theta) = \frac{1}{N} \sum_{i=1}^N \sum_t \nabla_\theta \log \pi(a_t|s_t;\theta) (G_t - b_t)$,

which has the same mean as without $b$ whenever $b_t$ does not depend on $a_t$ or later
(slide: $\mathbb{E}[\nabla_\theta \log p_\theta(\tau) b] = b \nabla_\theta 1 = 0$), and a lower variance.
Every batch logs that variance (`losses/grad_variance`), so the effect of `--baseline` shows.

Run: python reinforce_baseline.py --env-id CartPole-v1 --baseline optimal
"""

import json
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
    total_timesteps: int = 300_000
    """environment steps to train for, over all environments"""
    eval_episodes: int = 10
    """episodes of the final, deterministic policy to evaluate"""

    learning_rate: float = 1e-2
    """Adam's step size alpha"""
    anneal_lr: bool = True
    r"""Algorithm 1's step-size sequence $\alpha_k$: decay the step size linearly to 0 over training"""
    num_envs: int = 8
    """N, episodes per batch (one in each of N parallel environments)"""
    gamma: float = 0.99
    """discount factor gamma (the lecture's finite-horizon sum is gamma = 1)"""
    baseline: Literal["mean", "value", "optimal"] = "value"
    """b: the mean return of the other episodes, a learned V(s_t), or the variance-minimizing b per parameter"""
    reward_to_go: bool = True
    """weight by the rewards from t on (causality); the optimal baseline is derived for, and always uses, G(tau)"""
    hidden_size: int = 32
    """units in each of the two hidden layers of the policy (and of V)"""
    vf_learning_rate: float = 1e-2
    """Adam's step size for V(s) (--baseline value)"""
    vf_epochs: int = 20
    """full-batch regression steps of V(s) on each batch's returns (--baseline value)"""
    num_threads: int = 1
    """torch CPU threads (1 is fastest for networks this small)"""


class ArgError(ValueError):
    """Bad input: reported as one `error:` line and exit status 2."""


# ## Environments
# Gymnasium 1.x vector envs with `SAME_STEP` autoreset. REINFORCE needs whole episodes, so each
# batch resets the N environments, runs each one until its episode ends, and masks out the steps
# an environment takes after that (they restart a new episode we do not use, and do not count).
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


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


# ## The policy $\pi(a|s;\theta)$
# Discrete actions: logits $\mathbf{z} = f(s)$ and $\pi(a|s) = \text{softmax}(\mathbf{z})_a$.
# Continuous actions: $\pi(a|s) = \mathbb{N}(f(s), \text{diag}(\sigma^2))$ with $\log\sigma$ a parameter.
class Policy(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, discrete: bool, hidden: int):
        super().__init__()
        self.discrete = discrete
        self.net = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, action_dim), std=0.01),
        )
        if not discrete:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.log_prob(obs, actions)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        out = self.net(obs)
        if self.discrete:
            return torch.log_softmax(out, -1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        z = (actions - out) * torch.exp(-self.log_std)
        return -(0.5 * z.pow(2) + self.log_std + 0.5 * float(np.log(2 * np.pi))).sum(-1)

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        # $a \sim \pi(\cdot|s)$ without torch.distributions: Gumbel-max $\arg\max_a (z_a - \log(-\log u_a))$
        # for the softmax, $\mu + \sigma\xi$ with $\xi \sim \mathbb{N}(0, I)$ for the Gaussian.
        out = self.net(obs)
        if self.discrete:
            return torch.argmax(out - torch.log(-torch.log(torch.rand_like(out))), dim=-1)
        return out + torch.exp(self.log_std) * torch.randn_like(out)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """The most likely action: used for evaluation."""
        out = self.net(obs)
        return torch.argmax(out, dim=-1) if self.discrete else out


# ## The learned baseline $V(s) \approx \mathbb{E}[G_t | s_t = s]$, fit by regression on the observed $G_t$
def value_net(obs_dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        layer_init(nn.Linear(obs_dim, hidden)),
        nn.Tanh(),
        layer_init(nn.Linear(hidden, hidden)),
        nn.Tanh(),
        layer_init(nn.Linear(hidden, 1), std=1.0),
    )


# $\frac{1}{2}\text{mean}_{\text{valid } (t,i)} (V(s_t) - G_t)^2$
def value_loss(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((values - returns).pow(2) * mask).sum() / mask.sum()


# ## Returns
# Rewards are stored (T, N): time down, one episode per column, zero after the episode ended.
# Rewards-to-go $G_t = \sum_{t'=t}^T \gamma^{t'-t} r_{t'}$, so $G_1 = G(\tau)$ is the whole return.
def rewards_to_go(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


# ## Baselines
# The mean baseline of the slide, $b = \frac{1}{N}\sum_j G(\tau_j)$, includes episode i's own return,
# which correlates it with episode i's actions and shrinks the estimate by $(N-1)/N$. So episode i
# gets the mean over the *other* episodes (leave-one-out), and, per step t, over those still running
# at t: $b_t^{(i)} = \text{mean}_{j \ne i} G_t^{(j)}$, unbiased for any N >= 2.
def mean_baseline(returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    total = (returns * mask).sum(1, keepdim=True)
    others = mask.sum(1, keepdim=True) - mask
    return (total - returns * mask) / others.clamp(min=1)


# The baseline that minimises the variance of the whole-trajectory estimate, per parameter k:
# $b_k = \frac{\mathbb{E}[(\nabla_{\theta_k} \log p_\theta(\tau))^2 G(\tau)]}{\mathbb{E}[(\nabla_{\theta_k} \log p_\theta(\tau))^2]}$
# with $\nabla_\theta \log p_\theta(\tau) = \sum_t \nabla_\theta \log \pi(a_t|s_t;\theta)$. The expectations are
# taken over the other episodes of the batch (leave-one-out, as above). `scores`: (N, P), `G`: (N,).
def optimal_baseline(scores: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    sq = scores.pow(2)
    num, den = (sq * G[:, None]).sum(0), sq.sum(0)
    return (num - sq * G[:, None]) / (den - sq).clamp(min=1e-12)


# ## Automatic policy differentiation, one episode at a time
# $\mathcal{L}_i(\theta) = -\sum_t \log \pi(a_t|s_t;\theta) \Psi_t$ for episode i (a column of the
# (T, N) batch); `torch.func.vmap` of its gradient gives all N per-episode gradients (N, P) in
# one pass. Their mean is $-\hat{\nabla}_\theta J$; their spread is the variance the baseline fights.
def per_episode_gradients(policy: nn.Module, obs: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor):
    params = {k: v.detach() for k, v in policy.named_parameters()}

    def episode_loss(p, obs_i, actions_i, weights_i):
        return -(torch.func.functional_call(policy, p, (obs_i, actions_i)) * weights_i).sum()

    grads = torch.func.vmap(torch.func.grad(episode_loss), in_dims=(None, 1, 1, 1))(params, obs, actions, weights)
    return torch.cat([g.flatten(1) for g in grads.values()], dim=1)


# The variance of the estimate $\frac{1}{N}\sum_i g_i$: $\frac{1}{N}\sum_k \widehat{\text{Var}}(g_{ik})$, summed over
# all P parameters (the trace of its covariance).
def gradient_variance(per_episode: torch.Tensor) -> torch.Tensor:
    return per_episode.var(0).sum() / per_episode.shape[0]


def check_args(args: Args) -> None:
    if not 0 <= args.seed < 2**32:
        raise ArgError(f"--seed must lie in [0, 2**32), got {args.seed}")
    for name in ("num_envs", "hidden_size", "num_threads", "vf_epochs"):
        if getattr(args, name) <= 0:
            raise ArgError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("learning_rate", "vf_learning_rate"):
        if not getattr(args, name) > 0:
            raise ArgError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.num_envs < 2 and args.baseline != "value":
        raise ArgError(f"--num-envs must be >= 2 for --baseline {args.baseline} (it averages over other episodes)")
    if not 0 <= args.gamma <= 1:
        raise ArgError(f"--gamma must lie in [0, 1], got {args.gamma}")
    if args.eval_episodes < 0:
        raise ArgError(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    if args.total_timesteps == 0 and args.model_path is None:
        raise ArgError("--total-timesteps 0 only evaluates, and needs --model-path")
    if args.total_timesteps < 0 or 0 < args.total_timesteps < args.num_envs:
        raise ArgError(
            f"--total-timesteps {args.total_timesteps} is less than one update (num_envs = {args.num_envs} episodes)"
        )
    if args.model_path is not None and not os.path.isfile(args.model_path):
        raise ArgError(f"--model-path {args.model_path}: no such file")
    if args.capture_video:
        import importlib.util

        if importlib.util.find_spec("moviepy") is None:
            raise ArgError('--capture-video needs moviepy and pygame: pip install "gymnasium[classic-control,other]"')


def evaluate(policy: Policy, args: Args, run_name: str, device: torch.device) -> list[float]:
    """Returns of `eval_episodes` episodes of the most likely action, no exploration."""
    env = gym.make(args.env_id, render_mode="rgb_array" if args.capture_video else None)
    if args.capture_video:
        env = gym.wrappers.RecordVideo(env, f"videos/{run_name}", episode_trigger=lambda e: True)
    returns = []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 + episode)
        done, total = False, 0.0
        while not done:
            with torch.inference_mode():
                action = policy.mode(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            if not policy.discrete:
                action = np.clip(action, env.action_space.low, env.action_space.high)
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
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")

    try:
        envs = make_envs(args.env_id, args.num_envs, args.seed)
    except (gym.error.Error, ImportError) as e:  # unknown id, missing extra (MuJoCo, Box2D), ...
        raise ArgError(f"cannot make env {args.env_id!r}: {str(e).splitlines()[0]}") from None
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    if not isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise ArgError(f"reinforce_baseline.py needs a Discrete or Box action space, {args.env_id} has {act_space}")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ArgError(f"reinforce_baseline.py needs a flat Box observation space, {args.env_id} has {obs_space}")
    discrete = isinstance(act_space, gym.spaces.Discrete)
    obs_dim = obs_space.shape[0]
    action_dim = int(act_space.n) if discrete else act_space.shape[0]
    policy = Policy(obs_dim, action_dim, discrete, args.hidden_size).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.learning_rate)
    critic = value_net(obs_dim, args.hidden_size).to(device)
    vf_optimizer = torch.optim.Adam(critic.parameters(), lr=args.vf_learning_rate)
    if args.model_path is not None:
        try:
            saved = torch.load(args.model_path, map_location=device, weights_only=False)
            policy.load_state_dict(saved["policy"])
            critic.load_state_dict(saved["critic"])
        except Exception as e:  # not a model file, or one saved for another env or network
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            raise ArgError(f"--model-path {args.model_path} does not fit {args.env_id}: {reason}") from None

    os.makedirs(f"runs/{run_name}", exist_ok=True)
    writer = None
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name, config=vars(args))
        writer = wandb
    progress = open(f"runs/{run_name}/progress.csv", "w")
    progress.write("global_step,wall_time,episodic_return,episodic_length\n")

    N = args.num_envs
    global_step, episode_returns = 0, []
    start_time = last_print = time.time()
    interrupted = False
    try:
        iteration = 0
        while global_step < args.total_timesteps:
            iteration += 1
            # The step-size sequence $\alpha_k$ of Algorithm 1, decaying linearly to 0 over the budget
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - global_step / args.total_timesteps)
            # ## Generate N trajectories $\tau_i \sim p_\theta(\tau)$ (dataset $D_k$)
            # Stored (T, N) with a mask of the steps that belong to each episode. A batch that
            # would overrun `total_timesteps` is dropped unfinished.
            obs, _ = envs.reset(seed=args.seed if iteration == 1 else None)
            active = np.ones(N, dtype=bool)
            ep_return, ep_length = np.zeros(N), np.zeros(N, dtype=np.int64)
            obs_list, act_list, rew_list, mask_list = [], [], [], []
            while active.any() and global_step + active.sum() <= args.total_timesteps:
                with torch.inference_mode():
                    action = policy.sample(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
                obs_list.append(obs)
                act_list.append(action)
                mask_list.append(active.copy())
                env_action = action if discrete else np.clip(action, act_space.low, act_space.high)
                obs, reward, terminated, truncated, _ = envs.step(env_action)
                rew_list.append(np.where(active, reward, 0.0))
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
                break

            # ## Update: $\theta_{k+1} = \theta_k + \alpha \hat{\nabla}_\theta J(\theta_k, D_k)$ (through Adam)
            b_obs = torch.from_numpy(np.stack(obs_list)).float().to(device)
            b_actions = torch.from_numpy(np.stack(act_list)).to(device)
            rewards = torch.from_numpy(np.stack(rew_list)).float().to(device)
            mask = torch.from_numpy(np.stack(mask_list)).float().to(device)
            returns = rewards_to_go(rewards, args.gamma)
            G = returns[0]
            if args.baseline == "optimal":
                # $g_i = \nabla_\theta \log p_\theta(\tau_i)$ (weights 1), then $g_i \odot (G(\tau_i) - b)$
                scores = -per_episode_gradients(policy, b_obs, b_actions, mask)
                per_episode = -scores * (G[:, None] - optimal_baseline(scores, G))
            else:
                # $\Psi_t = G_t$ (causality) or $G(\tau)$. With $\gamma < 1$, $G(\tau) - b_t$ estimates $\nabla_\theta J$, while
                # $G_t - b_t$ drops its factor $\gamma^{t-1}$, as nearly every implementation does (the optimal
                # baseline, on $G(\tau)$, keeps it).
                psi = returns if args.reward_to_go else G.expand_as(returns)
                if args.baseline == "mean":
                    b = mean_baseline(psi, mask)
                else:
                    # $V(s_t)$ of the critic fit on earlier batches: it knows nothing of this batch's actions
                    with torch.no_grad():
                        b = critic(b_obs).squeeze(-1)
                per_episode = per_episode_gradients(policy, b_obs, b_actions, (psi - b) * mask)
            grad_variance = gradient_variance(per_episode)

            # ## Update: $\theta_{k+1} = \theta_k + \alpha \hat{\nabla}_\theta J(\theta_k, D_k)$ (through Adam)
            # `per_episode` holds $\nabla_\theta \mathcal{L}_i$; their mean is $\nabla_\theta \mathcal{L} = -\hat{\nabla}_\theta J$.
            grad = per_episode.mean(0)
            offset = 0
            for p in policy.parameters():
                p.grad = grad[offset : offset + p.numel()].view_as(p).clone()
                offset += p.numel()
            optimizer.step()
            if args.baseline == "value":
                for _ in range(args.vf_epochs):
                    v_loss = value_loss(critic(b_obs).squeeze(-1), returns, mask)
                    vf_optimizer.zero_grad()
                    v_loss.backward()
                    vf_optimizer.step()

            if not torch.isfinite(grad).all() or not all(torch.isfinite(p).all() for p in policy.parameters()):
                raise FloatingPointError(f"gradient or parameters became NaN/inf at global_step={global_step}")

            now = time.time()
            sps = int(global_step / (now - start_time))
            if writer:
                log = {
                    "charts/SPS": sps,
                    "losses/grad_variance": grad_variance.item(),
                    "losses/grad_norm": grad.norm().item(),
                }
                if args.baseline == "value":
                    log["losses/value_loss"] = v_loss.item()
                writer.log(log, step=global_step)
            if now - last_print >= 2.0:
                last_print = now
                recent = np.mean(episode_returns[-20:]) if episode_returns else float("nan")
                eta = (args.total_timesteps - global_step) / max(sps, 1)
                print(f"step {global_step}/{args.total_timesteps} | {sps} SPS | {now - start_time:.0f}s elapsed, "
                      f"{eta:.0f}s left | mean return (last 20) {recent:.1f} | grad variance {grad_variance:.3g}", flush=True)  # fmt: skip
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: saving what was reached", file=sys.stderr)
    wall_time = time.time() - start_time
    envs.close()
    progress.close()

    if args.save_model:
        path = f"runs/{run_name}/{args.exp_name}.pt"
        torch.save({"policy": policy.state_dict(), "critic": critic.state_dict(), "args": vars(args)}, path)
        print(f"model saved to {path}")

    eval_returns = [] if interrupted else evaluate(policy, args, run_name, device)
    summary = {
        "algo": "reinforce_baseline",
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
