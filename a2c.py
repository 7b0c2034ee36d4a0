r"""Advantage Actor-Critic (A2C), the synchronous variant of A3C, for Discrete and Box actions.

Paper: Mnih, Badia, Mirza, Graves, Lillicrap, Harley, Silver, Kavukcuoglu. "Asynchronous
Methods for Deep Reinforcement Learning", ICML 2016. Lecture: slides "Asynchronous Advantage
Actor Critic (A3C)" (policy and value function share their first layers; A2C is its
synchronous variant with a single learner) and "Actor-Critic Methods" (a critic $V$ learned
by bootstrapping).

N environments run in lockstep for T steps; then one gradient step on

$\mathcal{L}(\theta) = -\hat{\mathbb{E}}_t[\log \pi(a_t|s_t;\theta) \hat{A}_t] + c_1 \hat{\mathbb{E}}_t[(G_t - V(s_t))^2] - c_2 \hat{\mathbb{E}}_t[S[\pi](s_t)]$,

with the n-step return $G_t = \sum_{k=t}^{T-1} \gamma^{k-t} r_k + \gamma^{T-t} V(s_T)$ and
$\hat{A}_t = G_t - V(s_t)$ (or GAE($\lambda$) with `--gae-lambda` below 1).

Run: python a2c.py --env-id CartPole-v1
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
    total_timesteps: int = 100_000
    """environment steps to train for, over all environments"""
    eval_episodes: int = 10
    """episodes of the final, deterministic policy to evaluate"""

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
    norm_adv: bool = False
    """normalize the advantages of each batch"""
    ent_coef: float = 0.0
    """c2, weight of the entropy bonus S"""
    vf_coef: float = 0.25
    """c1, weight of the value loss"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this"""
    hidden_size: int = 64
    """units in each of the two shared hidden layers"""
    num_threads: int = 1
    """torch CPU threads (1 is fastest for networks this small)"""


class ArgError(ValueError):
    """Bad input: reported as one `error:` line and exit status 2."""


# ## Environments
# Gymnasium 1.x vector envs with `SAME_STEP` autoreset: when an episode ends, `step` returns
# the first observation of the next one and the true last observation in `info["final_obs"]`,
# which we need to bootstrap $V(s_{T})$ when the episode was cut by a time limit.
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


def true_next_obs(obs: np.ndarray, info: dict) -> np.ndarray:
    """$s_{t+1}$ of every env: `obs`, except where an episode ended, there `final_obs`."""
    if "final_obs" not in info:
        return obs
    real = obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        real[i] = info["final_obs"][i]
    return real


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
class Agent(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, discrete: bool, hidden: int):
        super().__init__()
        self.discrete = discrete
        self.trunk = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, hidden)), nn.Tanh()
        )
        self.actor = layer_init(nn.Linear(hidden, action_dim), std=0.01)
        self.critic = layer_init(nn.Linear(hidden, 1), std=1.0)
        if not discrete:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.trunk(obs)).squeeze(-1)

    def _policy_head(self, h: torch.Tensor, actions: torch.Tensor):
        out = self.actor(h)
        if self.discrete:
            return categorical_log_prob_entropy(out, actions)
        return gaussian_log_prob_entropy(out, self.log_std, actions)

    def log_prob_entropy(self, obs: torch.Tensor, actions: torch.Tensor):
        r"""$\log \pi(a|s)$ and the entropy $S[\pi](s)$."""
        return self._policy_head(self.trunk(obs), actions)

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor):
        r"""$\log \pi(a|s)$, the entropy $S[\pi](s)$ and $V(s)$, from one pass through the trunk."""
        h = self.trunk(obs)
        log_prob, entropy = self._policy_head(h, actions)
        return log_prob, entropy, self.critic(h).squeeze(-1)

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        # Drawing $a \sim \pi(\cdot|s)$ is the cost of every env step, so no
        # torch.distributions here. Softmax: Gumbel-max, $\arg\max_a (z_a + g_a)$ with
        # $g_a = -\log(-\log u_a)$, $u_a \sim U(0,1)$. Gaussian: $\mu + \sigma \xi$, $\xi \sim \mathbb{N}(0, I)$.
        out = self.actor(self.trunk(obs))
        if self.discrete:
            return torch.argmax(out - torch.log(-torch.log(torch.rand_like(out))), dim=-1)
        return out + torch.exp(self.log_std) * torch.randn_like(out)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """The most likely action: used for evaluation."""
        out = self.actor(self.trunk(obs))
        return torch.argmax(out, dim=-1) if self.discrete else out


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
def gae(rewards, values, next_values, terminated, dones, gamma: float, gae_lambda: float) -> np.ndarray:
    advantages = np.zeros_like(rewards)
    next_advantage = np.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminated[t]) - values[t]
        next_advantage = delta + gamma * gae_lambda * (1.0 - dones[t]) * next_advantage
        advantages[t] = next_advantage
    return advantages


# ## The A2C loss
# $-\hat{\mathbb{E}}[\log\pi(a_t|s_t)\hat{A}_t] + c_1 \frac{1}{2}\hat{\mathbb{E}}[(G_t - V(s_t))^2] - c_2 \hat{\mathbb{E}}[S]$.
# $\hat{A}_t$ and $G_t$ are constants (no gradient flows into the bootstrap target).
# Every $t$ of the rollout weighs the same: the $\gamma^t$ of the discounted policy gradient is dropped, as in A3C.
def a2c_loss(log_prob, entropy, values, advantages, returns, vf_coef: float, ent_coef: float):
    pg_loss = -(log_prob * advantages.detach()).mean()
    v_loss = 0.5 * (returns.detach() - values).pow(2).mean()
    entropy_mean = entropy.mean()
    return pg_loss + vf_coef * v_loss - ent_coef * entropy_mean, pg_loss, v_loss, entropy_mean


def check_args(args: Args) -> None:
    if not 0 <= args.seed < 2**32:
        raise ArgError(f"--seed must lie in [0, 2**32), got {args.seed}")
    for name in ("num_envs", "num_steps", "hidden_size", "num_threads"):
        if getattr(args, name) <= 0:
            raise ArgError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("learning_rate", "optimizer_eps", "max_grad_norm"):
        if not getattr(args, name) > 0:
            raise ArgError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not (0 <= args.gamma <= 1 and 0 <= args.gae_lambda <= 1):
        raise ArgError(f"--gamma and --gae-lambda must lie in [0, 1], got {args.gamma}, {args.gae_lambda}")
    if args.eval_episodes < 0:
        raise ArgError(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    batch_size = args.num_envs * args.num_steps
    if args.total_timesteps == 0 and args.model_path is None:
        raise ArgError("--total-timesteps 0 only evaluates, and needs --model-path")
    if args.total_timesteps != 0 and args.total_timesteps < batch_size:
        raise ArgError(
            f"--total-timesteps {args.total_timesteps} is less than one update (num_envs * num_steps = {batch_size})"
        )
    if args.model_path is not None and not os.path.isfile(args.model_path):
        raise ArgError(f"--model-path {args.model_path}: no such file")
    if args.capture_video:
        import importlib.util

        if importlib.util.find_spec("moviepy") is None:
            raise ArgError('--capture-video needs moviepy and pygame: pip install "gymnasium[classic-control,other]"')


def evaluate(agent: Agent, args: Args, run_name: str, device: torch.device) -> list[float]:
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
                action = agent.mode(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            if not agent.discrete:
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
        raise ArgError(f"a2c.py needs a Discrete or Box action space, {args.env_id} has {act_space}")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ArgError(f"a2c.py needs a flat Box observation space, {args.env_id} has {obs_space}")
    discrete = isinstance(act_space, gym.spaces.Discrete)
    obs_dim = obs_space.shape[0]
    action_dim = int(act_space.n) if discrete else act_space.shape[0]
    agent = Agent(obs_dim, action_dim, discrete, args.hidden_size).to(device)
    if args.optimizer == "rmsprop":
        optimizer = torch.optim.RMSprop(
            agent.parameters(), lr=args.learning_rate, alpha=args.rmsprop_alpha, eps=args.optimizer_eps
        )
    else:
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.optimizer_eps)
    if args.model_path is not None:
        try:
            agent.load_state_dict(torch.load(args.model_path, map_location=device, weights_only=True)["agent"])
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

    # Rollout storage, on the CPU as numpy: the env lives there. One batch of
    # `num_steps` x `num_envs` transitions $(s_t, a_t, r_t, s_{t+1})$.
    T, N = args.num_steps, args.num_envs
    batch_size = T * N
    num_iterations = args.total_timesteps // batch_size
    obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)
    next_obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)
    actions_buf = np.zeros((T, N) if discrete else (T, N, action_dim), dtype=np.int64 if discrete else np.float32)
    rewards_buf = np.zeros((T, N), dtype=np.float32)
    terminated_buf = np.zeros((T, N), dtype=np.float32)
    dones_buf = np.zeros((T, N), dtype=np.float32)

    global_step, episode_returns = 0, []
    ep_return, ep_length = np.zeros(N), np.zeros(N, dtype=np.int64)
    obs, _ = envs.reset(seed=args.seed)
    start_time = last_print = time.time()
    interrupted = False
    try:
        for iteration in range(1, num_iterations + 1):
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1) / num_iterations)

            # ## Rollout: T steps of $\pi_\theta$ in each of the N envs
            for step in range(T):
                obs_buf[step] = obs
                with torch.inference_mode():
                    action = agent.sample(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
                actions_buf[step] = action
                if not discrete:
                    action = np.clip(action, act_space.low, act_space.high)
                obs, reward, terminated, truncated, info = envs.step(action)
                global_step += N
                next_obs_buf[step] = true_next_obs(obs, info)
                done = terminated | truncated
                rewards_buf[step], terminated_buf[step], dones_buf[step] = reward, terminated, done
                ep_return += reward
                ep_length += 1
                for i in np.flatnonzero(done):
                    episode_returns.append(float(ep_return[i]))
                    wall = time.time() - start_time
                    progress.write(f"{global_step},{wall:.4f},{ep_return[i]:.6g},{ep_length[i]}\n")
                    progress.flush()
                    if writer:
                        writer.log(
                            {"charts/episodic_return": ep_return[i], "charts/episodic_length": ep_length[i]},
                            step=global_step,
                        )
                    ep_return[i], ep_length[i] = 0.0, 0

            # ## Update: one gradient step on the whole rollout
            b_obs = torch.from_numpy(obs_buf).to(device)
            log_prob, entropy, values = agent.evaluate(b_obs, torch.from_numpy(actions_buf).to(device))
            with torch.no_grad():
                next_values = agent.value(torch.from_numpy(next_obs_buf).to(device)).cpu().numpy()
            v = values.detach().cpu().numpy()
            if args.gae_lambda == 1.0:
                returns = nstep_returns(rewards_buf, next_values, terminated_buf, dones_buf, args.gamma)
                advantages = returns - v  # $\hat{A}_t = G_t - V(s_t)$
            else:
                advantages = gae(rewards_buf, v, next_values, terminated_buf, dones_buf, args.gamma, args.gae_lambda)
                returns = advantages + v
            if args.norm_adv:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            advantages, returns = torch.from_numpy(advantages).to(device), torch.from_numpy(returns).to(device)
            loss, pg_loss, v_loss, entropy_mean = a2c_loss(
                log_prob, entropy, values, advantages, returns, args.vf_coef, args.ent_coef
            )
            optimizer.zero_grad()
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            # A NaN/inf loss or gradient would leave the parameters NaN after this step.
            if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                raise FloatingPointError(f"loss or gradient became NaN/inf at global_step={global_step}")
            optimizer.step()

            now = time.time()
            sps = int(global_step / (now - start_time))
            if writer:
                writer.log({
                    "charts/learning_rate": optimizer.param_groups[0]["lr"], "charts/SPS": sps,
                    "losses/policy_loss": pg_loss.item(), "losses/value_loss": v_loss.item(),
                    "losses/entropy": entropy_mean.item(),
                }, step=global_step)  # fmt: skip
            if now - last_print >= 2.0 or iteration == num_iterations:
                last_print = now
                recent = np.mean(episode_returns[-20:]) if episode_returns else float("nan")
                eta = (args.total_timesteps - global_step) / max(sps, 1)
                print(f"step {global_step}/{args.total_timesteps} | {sps} SPS | {now - start_time:.0f}s elapsed, "
                      f"{eta:.0f}s left | mean return (last 20) {recent:.1f}", flush=True)  # fmt: skip
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: saving what was reached", file=sys.stderr)
    wall_time = time.time() - start_time
    envs.close()
    progress.close()

    if args.save_model:
        path = f"runs/{run_name}/{args.exp_name}.pt"
        torch.save({"agent": agent.state_dict(), "args": vars(args)}, path)
        print(f"model saved to {path}")

    eval_returns = [] if interrupted else evaluate(agent, args, run_name, device)
    summary = {
        "algo": "a2c", "env_id": args.env_id, "seed": args.seed, "global_step": global_step,
        "wall_time_s": wall_time, "sps": global_step / wall_time if wall_time > 0 else 0.0,
        "eval_mean_return": float(np.mean(eval_returns)) if eval_returns else None,
        "eval_std_return": float(np.std(eval_returns)) if eval_returns else None,
        "eval_episodes": len(eval_returns),
        "train_last_mean_return": float(np.mean(episode_returns[-20:])) if episode_returns else None,
        "interrupted": interrupted, "run_name": run_name,
    }  # fmt: skip
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
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
