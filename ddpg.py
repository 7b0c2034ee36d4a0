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
    env_id: str = "Pendulum-v1"
    """the gymnasium environment id"""
    total_timesteps: int = 20_000
    """environment steps to train for, over all environments"""
    eval_episodes: int = 10
    """episodes of the final, deterministic policy to evaluate"""

    learning_rate: float = 1e-3
    """Adam's step size alpha, for actor and critic"""
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


class ArgError(ValueError):
    """Bad input: reported as one `error:` line and exit status 2."""


# ## Environments
# Gymnasium 1.x vector envs with `SAME_STEP` autoreset: when an episode ends, `step` returns
# the first observation of the next one and the true last observation in `info["final_obs"]`,
# which is the $s_{t+1}$ the replay buffer must store.
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
    """$s_{t+1}$ of every env: `obs` (what `step` returned), except where an episode ended, there `final_obs`."""
    if "final_obs" not in info:
        return obs
    real = obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        real[i] = info["final_obs"][i]
    return real


# ## Networks
# The actor $\pi(s;\theta)$ squashes its output with $\tanh$ into the box
# $[\text{low}, \text{high}]$: $a = b + c \tanh(f(s))$, $c = (\text{high}-\text{low})/2$, $b = (\text{high}+\text{low})/2$.
class Actor(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int, low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, action_dim)
        )  # fmt: skip
        self.register_buffer("action_scale", torch.tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.action_bias, self.action_scale, torch.tanh(self.net(obs)))


# The critic $Q(s, a;\phi)$ takes the action as a second input, so $\nabla_a Q$ exists.
class Critic(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim + action_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )  # fmt: skip

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], dim=-1)).squeeze(-1)


# ## Experience replay buffer $D$
# One preallocated array used as a ring, a row per transition
# $(s_t, a_t, r_t, s_{t+1}, \text{terminated}_t)$: the newest overwrites the oldest once `capacity`
# is reached. Sampling draws uniformly, with replacement, among the filled rows only. One array
# makes a minibatch a single indexing (on the CPU the torch view shares the numpy memory).
class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: torch.device):
        self.capacity, self.pos, self.size, self.device = capacity, 0, 0, device
        # column ranges of obs, actions, reward, next_obs, terminated in a row
        o, a = obs_dim, action_dim
        self.splits = [o, a, 1, o, 1]
        self.data = np.zeros((capacity, sum(self.splits)), dtype=np.float32)
        self.obs, self.actions, self.rewards, self.next_obs, self.terminated = np.split(
            self.data, np.cumsum(self.splits)[:-1], axis=1
        )
        self.tensor = torch.from_numpy(self.data)

    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        r"""Store one vector step: $(s_t, a_t, r_t, s_{t+1}, \text{terminated}_t)$ of each env."""
        idx = (self.pos + np.arange(len(obs))) % self.capacity
        self.obs[idx], self.actions[idx], self.rewards[idx, 0] = obs, actions, rewards
        self.next_obs[idx], self.terminated[idx, 0] = next_obs, terminated
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
# dimension $i$ and scaled by its half-range $c_i$.
def explore(actions: np.ndarray, noise_std: np.ndarray, low, high, rng: np.random.Generator) -> np.ndarray:
    return np.clip(actions + noise_std * rng.standard_normal(actions.shape), low, high).astype(np.float32)


# ## The critic's target
# $y_t = r_t + \gamma (1 - \text{terminated}_t) Q(s_{t+1}, \pi(s_{t+1};\theta^-);\phi^-)$. A time limit
# (truncation) is not a terminal state: there $s_{t+1}$ is the true last observation and $y_t$ bootstraps.
def td_target(rewards, terminated, next_q, gamma: float):
    return rewards + gamma * (1.0 - terminated) * next_q


# ## The deterministic policy gradient
# Minimising $-\hat{\mathbb{E}}[Q(s, \pi(s;\theta);\phi)]$ over $\theta$ gives, by the chain rule, the
# slide's $\nabla_\theta J = \mathbb{E}[\nabla_a Q(s,a)|_{a=\pi(s)} \nabla_\theta \pi(s;\theta)]$.
def actor_loss(actor: Actor, critic: Critic, obs: torch.Tensor) -> torch.Tensor:
    return -critic(obs, actor(obs)).mean()


# ## Target networks
# Polyak averaging, $\theta^- \leftarrow \tau\theta + (1-\tau)\theta^-$, for all tensors at once.
@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


def check_args(args: Args) -> None:
    if not 0 <= args.seed < 2**32:
        raise ArgError(f"--seed must lie in [0, 2**32), got {args.seed}")
    for name in ("num_envs", "buffer_size", "batch_size", "policy_frequency", "hidden_size", "num_threads"):
        if getattr(args, name) <= 0:
            raise ArgError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not args.learning_rate > 0:
        raise ArgError(f"--learning-rate must be positive, got {args.learning_rate}")
    if not (0 <= args.gamma <= 1 and 0 < args.tau <= 1):
        raise ArgError(f"--gamma must lie in [0, 1] and --tau in (0, 1], got {args.gamma}, {args.tau}")
    if not args.exploration_noise >= 0 or args.learning_starts < 0 or args.eval_episodes < 0:
        raise ArgError("--exploration-noise, --learning-starts and --eval-episodes must be >= 0")
    if args.total_timesteps == 0 and args.model_path is None:
        raise ArgError("--total-timesteps 0 only evaluates, and needs --model-path")
    if args.total_timesteps != 0 and args.total_timesteps <= args.learning_starts:
        raise ArgError(
            f"--total-timesteps {args.total_timesteps} leaves no update after --learning-starts {args.learning_starts}"
        )
    if args.model_path is not None and not os.path.isfile(args.model_path):
        raise ArgError(f"--model-path {args.model_path}: no such file")
    if args.capture_video:
        import importlib.util

        if importlib.util.find_spec("moviepy") is None:
            raise ArgError('--capture-video needs moviepy and pygame: pip install "gymnasium[classic-control,other]"')


def evaluate(actor: Actor, args: Args, run_name: str, device: torch.device) -> list[float]:
    r"""Returns of `eval_episodes` episodes of $\pi(s;\theta)$ itself: no exploration noise."""
    env = gym.make(args.env_id, render_mode="rgb_array" if args.capture_video else None)
    if args.capture_video:
        env = gym.wrappers.RecordVideo(env, f"videos/{run_name}", episode_trigger=lambda e: True)
    returns = []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 + episode)
        done, total = False, 0.0
        while not done:
            with torch.inference_mode():
                action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
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
    rng = np.random.default_rng(args.seed)

    try:
        envs = make_envs(args.env_id, args.num_envs, args.seed)
    except (gym.error.Error, ImportError) as e:  # unknown id, missing extra (MuJoCo, Box2D), ...
        raise ArgError(f"cannot make env {args.env_id!r}: {str(e).splitlines()[0]}") from None
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
        raise ArgError(f"ddpg.py needs a flat Box action space (continuous actions), {args.env_id} has {act_space}")
    if not (np.isfinite(act_space.low).all() and np.isfinite(act_space.high).all()):
        raise ArgError(f"ddpg.py needs a bounded Box action space, {args.env_id} has {act_space}")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ArgError(f"ddpg.py needs a flat Box observation space, {args.env_id} has {obs_space}")
    obs_dim, action_dim = obs_space.shape[0], act_space.shape[0]
    low, high = act_space.low.astype(np.float32), act_space.high.astype(np.float32)
    actor = Actor(obs_dim, action_dim, args.hidden_size, low, high).to(device)
    critic = Critic(obs_dim, action_dim, args.hidden_size).to(device)
    if args.model_path is not None:
        try:
            saved = torch.load(args.model_path, map_location=device, weights_only=True)
            actor.load_state_dict(saved["actor"])
            critic.load_state_dict(saved["critic"])
        except Exception as e:  # not a model file, or one saved for another env or network
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            raise ArgError(f"--model-path {args.model_path} does not fit {args.env_id}: {reason}") from None
    # The target networks $\theta^-, \phi^-$ start as copies of $\theta, \phi$.
    actor_target = Actor(obs_dim, action_dim, args.hidden_size, low, high).to(device)
    critic_target = Critic(obs_dim, action_dim, args.hidden_size).to(device)
    actor_target.load_state_dict(actor.state_dict())
    critic_target.load_state_dict(critic.state_dict())
    actor_target.requires_grad_(False), critic_target.requires_grad_(False)
    # `fused`: one kernel per optimizer step instead of a dozen ops per tensor (2x faster at this size)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, fused=True)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=True)
    critic_params, actor_params = list(critic.parameters()), list(actor.parameters())
    noise_std = (args.exploration_noise * (high - low) / 2.0).astype(np.float32)

    os.makedirs(f"runs/{run_name}", exist_ok=True)
    writer = None
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name, config=vars(args))
        writer = wandb
    progress = open(f"runs/{run_name}/progress.csv", "w")
    progress.write("global_step,wall_time,episodic_return,episodic_length\n")

    N = args.num_envs
    rb = ReplayBuffer(min(args.buffer_size, max(args.total_timesteps, 1)), obs_dim, action_dim, device)
    global_step, num_updates, episode_returns = 0, 0, []
    ep_return, ep_length = np.zeros(N), np.zeros(N, dtype=np.int64)
    obs, _ = envs.reset(seed=args.seed)
    obs = obs.astype(np.float32)
    start_time = last_print = time.time()
    update_start, update_start_step = None, 0
    qf_loss = pi_loss = q_values = None
    interrupted = False
    try:
        while global_step < args.total_timesteps:
            # ## Acting: uniform random actions first, then $\pi(s_t;\theta)$ plus noise
            if global_step < args.learning_starts:
                actions = rng.uniform(low, high, size=(N, action_dim)).astype(np.float32)
            else:
                with torch.inference_mode():
                    mu = actor(torch.from_numpy(obs).to(device)).cpu().numpy()
                actions = explore(mu, noise_std, low, high, rng)
            next_obs, reward, terminated, truncated, info = envs.step(actions)
            next_obs = next_obs.astype(np.float32)
            global_step += N
            rb.add(obs, actions, reward, true_next_obs(next_obs, info), terminated)
            obs = next_obs

            ep_return += reward
            ep_length += 1
            for i in np.flatnonzero(terminated | truncated):
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

            # ## Learning: one gradient step per env step, on a minibatch from $U(D)$
            if global_step > args.learning_starts:
                if update_start is None:
                    update_start, update_start_step = time.time(), global_step
                for _ in range(N):
                    b_obs, b_actions, b_rewards, b_next_obs, b_terminated = rb.sample(args.batch_size)
                    with torch.no_grad():
                        next_q = critic_target(b_next_obs, actor_target(b_next_obs))
                        y = td_target(b_rewards, b_terminated, next_q, args.gamma)
                    # Critic: descend $(y_t - Q(s_t, a_t;\phi))^2$
                    q_values = critic(b_obs, b_actions)
                    qf_loss = nn.functional.mse_loss(q_values, y)
                    critic_optimizer.zero_grad(set_to_none=False)
                    qf_loss.backward()
                    critic_optimizer.step()
                    num_updates += 1
                    if num_updates % args.policy_frequency == 0:
                        # Actor: ascend $Q(s, \pi(s;\theta))$; `inputs=` skips the critic's weight gradients.
                        pi_loss = actor_loss(actor, critic, b_obs)
                        actor_optimizer.zero_grad(set_to_none=False)
                        pi_loss.backward(inputs=actor_params)
                        actor_optimizer.step()
                        polyak_update(actor_target, actor, args.tau)
                        polyak_update(critic_target, critic, args.tau)

            now = time.time()
            if now - last_print >= 2.0 or global_step >= args.total_timesteps:
                last_print = now
                if qf_loss is not None and not all(torch.isfinite(p).all() for p in critic_params + actor_params):
                    raise FloatingPointError(f"loss or parameters became NaN/inf at global_step={global_step}")
                sps = int(global_step / (now - start_time))
                if writer and qf_loss is not None:
                    writer.log({
                        "charts/SPS": sps, "losses/qf1_loss": qf_loss.item(), "losses/qf1_values": q_values.mean().item(),
                        "losses/actor_loss": pi_loss.item() if pi_loss is not None else float("nan"),
                    }, step=global_step)  # fmt: skip
                recent = np.mean(episode_returns[-20:]) if episode_returns else float("nan")
                eta = (args.total_timesteps - global_step) / max(sps, 1)
                print(f"step {global_step}/{args.total_timesteps} | {sps} SPS | {now - start_time:.0f}s elapsed, "
                      f"{eta:.0f}s left | mean return (last 20) {recent:.1f}", flush=True)  # fmt: skip
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: saving what was reached", file=sys.stderr)
    end_time = time.time()
    wall_time = end_time - start_time
    envs.close()
    progress.close()

    if args.save_model:
        path = f"runs/{run_name}/{args.exp_name}.pt"
        weights = {"actor": actor.state_dict(), "critic": critic.state_dict()}
        torch.save({**weights, "args": vars(args)}, path)
        print(f"model saved to {path}")

    eval_returns = [] if interrupted else evaluate(actor, args, run_name, device)
    updating_s = end_time - update_start if update_start is not None else 0.0
    summary = {
        "algo": "ddpg",
        "env_id": args.env_id,
        "seed": args.seed,
        "global_step": global_step,
        "wall_time_s": wall_time,
        "sps": global_step / wall_time if wall_time > 0 else 0.0,
        "sps_updating": (global_step - update_start_step) / updating_s if updating_s > 0 else None,
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
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
