r"""Online Actor-Critic (the lecture's Algorithm 2), for Discrete and Box actions.

Paper: Konda and Tsitsiklis, "Actor-Critic Algorithms", NeurIPS 1999; Sutton and Barto,
"Reinforcement Learning: An Introduction" (2nd ed., 2018), section 13.5. Lecture: slides
"Actor-Critic Methods", Algorithm 2 (Actor-Critic Algorithm): the critic is learned by
temporal differences inside the policy-gradient loop, and both are updated at every step.

At every step $t$: $a_t \sim \pi(\cdot|s_t;\theta)$, observe $r_t, s_{t+1}$, draw $a_{t+1} \sim \pi(\cdot|s_{t+1};\theta)$,

$\delta = r_t + \gamma Q_\omega(s_{t+1}, a_{t+1}) - Q_\omega(s_t, a_t)$,
$\omega \leftarrow \omega + \alpha_\omega \delta \nabla_\omega Q_\omega(s_t, a_t)$,
$\theta \leftarrow \theta + \alpha_\theta \nabla_\theta \log \pi(a_t|s_t;\theta) Q_\omega(s_t, a_t)$.

With `--critic v` the critic is $V_\omega(s)$, $\delta = r_t + \gamma V_\omega(s_{t+1}) - V_\omega(s_t)$, and the
actor's weight is $\delta$, an estimate of the advantage $A(s_t, a_t)$ (slide: $V$, $Q$ or $A$ as critic).

Run: python actor_critic.py --env-id CartPole-v1
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
    total_timesteps: int = 200_000
    """environment steps to train for, over all environments"""
    eval_episodes: int = 10
    """episodes of the final, deterministic policy to evaluate"""

    critic: Literal["q", "v"] = "v"
    """the critic: Q(s,a) with the actor weighted by Q (Algorithm 2), or V(s) with the TD error as advantage"""
    learning_rate: float = 5e-4
    """the actor's step size alpha_theta (Adam)"""
    critic_learning_rate: float = 1e-3
    """the critic's step size alpha_omega (Adam)"""
    anneal_lr: bool = True
    """decay both step sizes linearly to 0 over training"""
    num_envs: int = 1
    """parallel environments; each step updates on the mean over them (1: the online algorithm as on the slide)"""
    gamma: float = 0.99
    """discount factor gamma"""
    ent_coef: float = 0.0
    """weight of an entropy bonus S[pi](s_t) added to the actor's objective"""
    hidden_size: int = 64
    """units in each of the two hidden layers of both networks"""
    num_threads: int = 1
    """torch CPU threads (1 is fastest for networks this small)"""


class ArgError(ValueError):
    """Bad input: reported as one `error:` line and exit status 2."""


# ## Environments
# Gymnasium 1.x vector envs with `SAME_STEP` autoreset: when an episode ends, `step` returns
# the first observation of the next one and the true last observation in `info["final_obs"]`,
# which we need to bootstrap from $s_{t+1}$ when the episode was cut by a time limit.
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
        self.discrete, self.critic_kind = discrete, critic
        self.actor = mlp(obs_dim, hidden, action_dim, out_std=0.01)
        if not discrete:
            self.log_std = nn.Parameter(torch.zeros(action_dim))
        if critic == "v":
            self.critic = mlp(obs_dim, hidden, 1, out_std=1.0)
        elif discrete:
            self.critic = mlp(obs_dim, hidden, action_dim, out_std=1.0)
        else:
            self.critic = mlp(obs_dim + action_dim, hidden, 1, out_std=1.0)

    def actor_parameters(self) -> list[nn.Parameter]:
        return list(self.actor.parameters()) + ([] if self.discrete else [self.log_std])

    def critic_value(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        r"""$V_\omega(s)$ (critic v, `actions` unused) or $Q_\omega(s, a)$ (critic q)."""
        if self.critic_kind == "v":
            return self.critic(obs).squeeze(-1)
        if self.discrete:
            return self.critic(obs).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        return self.critic(torch.cat([obs, actions], dim=-1)).squeeze(-1)

    def critic_pair(self, obs, actions, next_obs, next_actions):
        r"""$Q_\omega(s_t, a_t)$ and $Q_\omega(s_{t+1}, a_{t+1})$ (or $V$) in one forward pass; the second without gradient."""
        n = obs.shape[0]
        both = self.critic_value(torch.cat([obs, next_obs]), torch.cat([actions, next_actions]))
        return both[:n], both[n:].detach()

    def log_prob_entropy(self, obs: torch.Tensor, actions: torch.Tensor):
        r"""$\log \pi(a|s;\theta)$ and the entropy $S[\pi](s)$."""
        out = self.actor(obs)
        if self.discrete:
            return categorical_log_prob_entropy(out, actions)
        return gaussian_log_prob_entropy(out, self.log_std, actions)

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        # Drawing $a \sim \pi(\cdot|s)$ is the cost of every env step, so no
        # torch.distributions here. Softmax: Gumbel-max, $\arg\max_a (z_a + g_a)$ with
        # $g_a = -\log(-\log u_a)$, $u_a \sim U(0,1)$. Gaussian: $\mu + \sigma \xi$, $\xi \sim \mathbb{N}(0, I)$.
        out = self.actor(obs)
        if self.discrete:
            return torch.argmax(out - torch.log(-torch.log(torch.rand_like(out))), dim=-1)
        return out + torch.exp(self.log_std) * torch.randn_like(out)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """The most likely action: used for evaluation."""
        out = self.actor(obs)
        return torch.argmax(out, dim=-1) if self.discrete else out


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
# so a late step counts as much as the first.
def actor_loss(log_prob, weights, entropy, ent_coef: float):
    return -(log_prob * weights.detach()).mean() - ent_coef * entropy.mean()


def check_args(args: Args) -> None:
    if not 0 <= args.seed < 2**32:
        raise ArgError(f"--seed must lie in [0, 2**32), got {args.seed}")
    for name in ("num_envs", "hidden_size", "num_threads"):
        if getattr(args, name) <= 0:
            raise ArgError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("learning_rate", "critic_learning_rate"):
        if not getattr(args, name) > 0:
            raise ArgError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.gamma <= 1:
        raise ArgError(f"--gamma must lie in [0, 1], got {args.gamma}")
    if args.eval_episodes < 0:
        raise ArgError(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    if args.total_timesteps == 0 and args.model_path is None:
        raise ArgError("--total-timesteps 0 only evaluates, and needs --model-path")
    if args.total_timesteps != 0 and args.total_timesteps < args.num_envs:
        raise ArgError(f"--total-timesteps {args.total_timesteps} is less than one update (num_envs = {args.num_envs})")
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
        raise ArgError(f"actor_critic.py needs a Discrete or Box action space, {args.env_id} has {act_space}")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ArgError(f"actor_critic.py needs a flat Box observation space, {args.env_id} has {obs_space}")
    discrete = isinstance(act_space, gym.spaces.Discrete)
    obs_dim = obs_space.shape[0]
    action_dim = int(act_space.n) if discrete else act_space.shape[0]
    agent = Agent(obs_dim, action_dim, discrete, args.hidden_size, args.critic).to(device)
    # Two step sizes, $\alpha_\theta$ for the actor and $\alpha_\omega$ for the critic, as in Algorithm 2.
    # One update per env step: the fused Adam kernel keeps the optimizer's share of the step small.
    optimizer = torch.optim.Adam([
        {"params": agent.actor_parameters(), "lr": args.learning_rate},
        {"params": agent.critic.parameters(), "lr": args.critic_learning_rate},
    ], fused=True)  # fmt: skip
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

    N = args.num_envs
    num_iterations = args.total_timesteps // N
    global_step, episode_returns = 0, []
    ep_return, ep_length = np.zeros(N), np.zeros(N, dtype=np.int64)
    obs, _ = envs.reset(seed=args.seed)
    start_time = last_print = time.time()
    interrupted = False
    try:
        for iteration in range(1, num_iterations + 1):
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1) / num_iterations
                optimizer.param_groups[0]["lr"] = args.learning_rate * frac
                optimizer.param_groups[1]["lr"] = args.critic_learning_rate * frac

            # ## Act: $a_t \sim \pi(\cdot|s_t;\theta)$, observe $r_t$ and $s_{t+1}$
            s = torch.as_tensor(obs, dtype=torch.float32, device=device)
            with torch.no_grad():
                action = agent.sample(s)
            env_action = action.cpu().numpy()
            if not discrete:
                env_action = np.clip(env_action, act_space.low, act_space.high)
            obs, reward, terminated, truncated, info = envs.step(env_action)
            global_step += N
            # $s_{t+1}$: where an episode ended, its true last observation, not the reset one
            s_next = torch.as_tensor(true_next_obs(obs, info), dtype=torch.float32, device=device)
            r = torch.as_tensor(reward, dtype=torch.float32, device=device)
            term = torch.as_tensor(terminated, dtype=torch.float32, device=device)

            # ## Update, Algorithm 2: draw $a_{t+1} \sim \pi(\cdot|s_{t+1};\theta)$ for the Q critic
            next_action = action  # unused by a V critic
            if args.critic == "q":
                with torch.no_grad():
                    next_action = agent.sample(s_next)
            values, next_values = agent.critic_pair(s, action, s_next, next_action)
            targets = td_target(r, next_values, term, args.gamma)
            delta = (targets - values).detach()
            log_prob, entropy = agent.log_prob_entropy(s, action)
            weights = values if args.critic == "q" else delta
            loss = actor_loss(log_prob, weights, entropy, args.ent_coef) + critic_loss(values, targets)
            optimizer.zero_grad()
            loss.backward()
            # No gradient clipping: it would cap the rare large $\delta$ of a terminal step while the many
            # small ones pass, moving the critic's fixed point (on CartPole $V$ drifts to $1/(1-\gamma)$).
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became NaN/inf at global_step={global_step}")
            optimizer.step()

            done = terminated | truncated
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

            now = time.time()
            if now - last_print >= 2.0 or iteration == num_iterations:
                last_print = now
                if not all(torch.isfinite(p).all() for p in agent.parameters()):
                    raise FloatingPointError(f"parameters became NaN/inf by global_step={global_step}")
                sps = int(global_step / (now - start_time))
                recent = np.mean(episode_returns[-20:]) if episode_returns else float("nan")
                eta = (args.total_timesteps - global_step) / max(sps, 1)
                print(f"step {global_step}/{args.total_timesteps} | {sps} SPS | {now - start_time:.0f}s elapsed, "
                      f"{eta:.0f}s left | mean return (last 20) {recent:.1f}", flush=True)  # fmt: skip
                if writer:
                    writer.log({
                        "charts/learning_rate": optimizer.param_groups[0]["lr"], "charts/SPS": sps,
                        "losses/td_error": delta.abs().mean().item(), "losses/critic_value": values.mean().item(),
                        "losses/entropy": entropy.mean().item(),
                    }, step=global_step)  # fmt: skip
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
        "algo": "actor_critic", "env_id": args.env_id, "seed": args.seed, "global_step": global_step,
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
