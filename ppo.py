r"""Proximal Policy Optimization (PPO), clipped objective, for Discrete and Box actions.

Paper: Schulman, Wolski, Dhariwal, Radford, Klimov. "Proximal Policy Optimization
Algorithms", arXiv:1707.06347 (2017). Lecture: slide "Proximal Policy Optimization (PPO)",
with the output layers of slides "Policy Gradient Methods" (softmax for discrete actions,
a Gaussian $\mathbb{N}(f(s_t), \Sigma)$ for continuous ones).

The update maximises, over several epochs of shuffled minibatches of one rollout,

$\mathcal{L}_t(\theta) = \mathcal{L}_t^{CLIP}(\theta) - c_1 \mathcal{L}_t^{VF}(\theta) + c_2 S[\pi_\theta](s_t)$,
$\mathcal{L}_t^{CLIP} = \min(r_t(\theta)\hat{A}_t, \text{clip}(r_t(\theta), 1-\epsilon, 1+\epsilon)\hat{A}_t)$,
$r_t(\theta) = \pi(a_t|s_t;\theta) / \pi(a_t|s_t;\theta_{old})$,

with $\hat{A}_t$ from generalized advantage estimation, GAE($\lambda$).

Run: python ppo.py --env-id Pendulum-v1
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
    env_id: str = "CartPole-v1"
    """the gymnasium environment id"""
    total_timesteps: int = 200_000
    """environment steps to train for, over all environments"""
    eval_episodes: int = 10
    """episodes of the final, deterministic policy to evaluate"""

    learning_rate: float = 1e-3
    """Adam's step size alpha"""
    anneal_lr: bool = True
    """decay the step size linearly to 0 over training"""
    num_envs: int = 8
    """parallel environments"""
    num_steps: int = 64
    """steps per environment in each rollout"""
    gamma: float = 0.98
    """discount factor gamma"""
    gae_lambda: float = 0.9
    """lambda of GAE (1: Monte-Carlo returns, 0: one-step TD)"""
    num_minibatches: int = 4
    """minibatches per epoch"""
    update_epochs: int = 10
    """epochs over each rollout"""
    norm_adv: bool = True
    """normalize the advantages of each minibatch"""
    clip_coef: float = 0.2
    """the clip range epsilon of L^CLIP"""
    clip_vloss: bool = False
    """clip the value loss as in the PPO code release (often no help: Andrychowicz et al. 2021)"""
    ent_coef: float = 0.0
    """c2, weight of the entropy bonus S"""
    vf_coef: float = 0.5
    """c1, weight of the value loss L^VF"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this"""
    target_kl: float | None = None
    """stop the epochs of an update early once approx KL exceeds this"""
    scale_rewards: bool = True
    """divide rewards by the running std of the discounted return (keeps V's targets near 1)"""
    hidden_size: int = 64
    """units in each of the two hidden layers"""
    num_threads: int = 1
    """torch CPU threads (1 is fastest for networks this small)"""


class ArgError(ValueError):
    """Bad input: reported as one `error:` line and exit status 2."""


# ## Environments
# Gymnasium 1.x vector envs with `SAME_STEP` autoreset: when an episode ends, `step` returns
# the first observation of the next one and the true last observation in `info["final_obs"]`,
# which we need to bootstrap $V(s_{T})$ when the episode was cut by a time limit.
def make_envs(env_id: str, num_envs: int, seed: int) -> gym.vector.SyncVectorEnv:
    env_fns = [lambda: gym.make(env_id) for _ in range(num_envs)]
    envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.action_space.seed(seed)
    return envs


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


class Agent(nn.Module):
    r"""Actor $\pi(a|s;\theta)$ and critic $V(s)$ as two separate MLPs."""

    def __init__(self, obs_dim: int, action_dim: int, discrete: bool, hidden: int):
        super().__init__()
        self.discrete = discrete
        self.critic = mlp(obs_dim, hidden, 1, out_std=1.0)
        self.actor = mlp(obs_dim, hidden, action_dim, out_std=0.01)
        if not discrete:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def log_prob_entropy(self, obs: torch.Tensor, actions: torch.Tensor):
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


# ## Generalized advantage estimation
# $\delta_t = r_t + \gamma V(s_{t+1})(1 - \text{terminated}_t) - V(s_t)$ and
# $\hat{A}_t = \delta_t + \gamma\lambda (1 - \text{done}_t) \hat{A}_{t+1}$.
# `next_values[t]` is $V$ of the true next state, also when the episode was truncated there:
# a time limit is not a terminal state, so it still bootstraps. `dones[t]` (terminated or
# truncated) only stops the sum from running into the next episode. Arrays are (T, N) numpy:
# a loop over T small rows runs several times faster in numpy than in torch.
def gae(rewards, values, next_values, terminated, dones, gamma: float, gae_lambda: float) -> np.ndarray:
    advantages = np.zeros_like(rewards)
    next_advantage = np.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminated[t]) - values[t]
        next_advantage = delta + gamma * gae_lambda * (1.0 - dones[t]) * next_advantage
        advantages[t] = next_advantage
    return advantages


# ## The clipped surrogate
# $r_t(\theta) = \exp(\log\pi_\theta(a_t|s_t) - \log\pi_{\theta_{old}}(a_t|s_t))$;
# the loss is $-\hat{\mathbb{E}}_t[\min(r_t \hat{A}_t, \text{clip}(r_t, 1-\epsilon, 1+\epsilon)\hat{A}_t)]$.
# Also returned: approx KL $\hat{\mathbb{E}}[(r-1) - \log r]$ (Schulman's unbiased, non-negative
# estimator) and the fraction of samples where the clip is active.
def clipped_policy_loss(new_log_prob, old_log_prob, advantages, clip_coef: float):
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef) * advantages
    loss = -torch.min(unclipped, clipped).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_frac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    return loss, approx_kl, clip_frac


# $\mathcal{L}^{VF} = (V_\theta(s_t) - V_t^{targ})^2$ with $V_t^{targ} = \hat{A}_t + V_{\theta_{old}}(s_t)$;
# optionally clipped around $V_{\theta_{old}}$ like the policy.
def value_loss(new_values, old_values, returns, clip_coef: float | None):
    loss = (new_values - returns).pow(2)
    if clip_coef is not None:
        clipped = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
        loss = torch.max(loss, (clipped - returns).pow(2))
    return 0.5 * loss.mean()


class RunningMeanStd:
    """Mean and variance of a stream of batches (Chan et al.'s parallel update)."""

    def __init__(self, shape=()):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4

    def update(self, batch: np.ndarray):
        b_mean, b_var, b_count = batch.mean(0), batch.var(0), batch.shape[0]
        delta, total = b_mean - self.mean, self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var, self.count = m2 / total, total


def check_args(args: Args) -> None:
    if not 0 <= args.seed < 2**32:
        raise ArgError(f"--seed must lie in [0, 2**32), got {args.seed}")
    sizes = ("num_envs", "num_steps", "num_minibatches", "update_epochs", "hidden_size", "num_threads")
    for name in (*sizes, "learning_rate", "clip_coef"):
        if not getattr(args, name) > 0:
            raise ArgError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not (0 <= args.gamma <= 1 and 0 <= args.gae_lambda <= 1):
        raise ArgError(f"--gamma and --gae-lambda must lie in [0, 1], got {args.gamma}, {args.gae_lambda}")
    if args.eval_episodes < 0:
        raise ArgError(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches:
        raise ArgError(f"--num-minibatches {args.num_minibatches} must divide num_envs * num_steps = {batch_size}")
    if args.total_timesteps == 0 and args.model_path is None:
        raise ArgError("--total-timesteps 0 only evaluates, and needs --model-path")
    if 0 < args.total_timesteps < batch_size or args.total_timesteps < 0:
        raise ArgError(f"--total-timesteps {args.total_timesteps} is less than one update ({batch_size} steps)")
    if args.model_path is not None and not os.path.isfile(args.model_path):
        raise ArgError(f"--model-path {args.model_path}: no such file")
    if args.capture_video:
        import importlib.util

        if importlib.util.find_spec("moviepy") is None or importlib.util.find_spec("pygame") is None:
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
        raise ArgError(f"ppo.py needs a Discrete or Box action space, {args.env_id} has {act_space}")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ArgError(f"ppo.py needs a flat Box observation space, {args.env_id} has {obs_space}")
    discrete = isinstance(act_space, gym.spaces.Discrete)
    obs_dim = obs_space.shape[0]
    action_dim = int(act_space.n) if discrete else act_space.shape[0]
    agent = Agent(obs_dim, action_dim, discrete, args.hidden_size).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    reward_rms = RunningMeanStd()
    if args.model_path is not None:
        try:
            saved = torch.load(args.model_path, map_location=device, weights_only=True)
            agent.load_state_dict(saved["agent"])
        except Exception as e:  # not a model file, or one saved for another env or network
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            raise ArgError(f"--model-path {args.model_path} does not fit {args.env_id}: {reason}") from None
        reward_rms.mean, reward_rms.var, reward_rms.count = saved.get("reward_rms", (0.0, 1.0, 1e-4))

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
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = args.total_timesteps // batch_size
    obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)
    next_obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)
    actions_buf = np.zeros((T, N) if discrete else (T, N, action_dim), dtype=np.int64 if discrete else np.float32)
    rewards_buf = np.zeros((T, N), dtype=np.float32)
    terminated_buf = np.zeros((T, N), dtype=np.float32)
    dones_buf = np.zeros((T, N), dtype=np.float32)
    discounted_buf = np.zeros((T, N), dtype=np.float32)  # $\sum_k \gamma^k r_{t-k}$, for reward scaling

    global_step, episode_returns = 0, []
    ep_return, ep_length = np.zeros(N), np.zeros(N, dtype=np.int64)
    discounted_return = np.zeros(N)
    obs, _ = envs.reset(seed=args.seed)
    start_time = last_print = time.time()
    interrupted = False
    try:
        for iteration in range(1, num_iterations + 1):
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1) / num_iterations)

            # ## Rollout: run $\pi_{\theta_{old}}$ for T steps in each of the N envs
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
                discounted_return = discounted_return * args.gamma + reward
                discounted_buf[step] = discounted_return
                discounted_return[done] = 0.0
                ep_return += reward
                ep_length += 1
                for i in np.flatnonzero(done):
                    episode_returns.append(float(ep_return[i]))
                    wall = time.time() - start_time
                    progress.write(f"{global_step},{wall:.4f},{ep_return[i]:.6g},{ep_length[i]}\n")
                    progress.flush()
                    if writer:
                        metrics = {"charts/episodic_return": ep_return[i], "charts/episodic_length": ep_length[i]}
                        writer.log(metrics, step=global_step)
                    ep_return[i], ep_length[i] = 0.0, 0

            # ## Advantages: one batched forward of V over $s_t$ and the true $s_{t+1}$
            # Reward scaling: $r_t / \sigma$, $\sigma$ the running std of the discounted return.
            rewards = rewards_buf
            if args.scale_rewards:
                reward_rms.update(discounted_buf.reshape(-1))
                rewards = (rewards_buf / np.sqrt(reward_rms.var + 1e-8)).astype(np.float32)
            b_obs = torch.from_numpy(obs_buf).to(device)
            b_actions = torch.from_numpy(actions_buf).to(device)
            with torch.no_grad():
                values = agent.value(b_obs).cpu().numpy()
                next_values = agent.value(torch.from_numpy(next_obs_buf).to(device)).cpu().numpy()
                old_log_probs, _ = agent.log_prob_entropy(b_obs, b_actions)
            advantages = gae(rewards, values, next_values, terminated_buf, dones_buf, args.gamma, args.gae_lambda)
            returns = advantages + values  # $V^{targ}_t = \hat{A}_t + V(s_t)$

            # ## Update: `update_epochs` passes of shuffled minibatches over the rollout
            b_obs = b_obs.reshape(batch_size, obs_dim)
            b_actions = b_actions.reshape(batch_size, *actions_buf.shape[2:])
            b_log_probs = old_log_probs.reshape(-1)
            b_adv, b_returns, b_values = (
                torch.from_numpy(x).flatten().to(device) for x in (advantages, returns, values)
            )
            value_clip = args.clip_coef if args.clip_vloss else None
            for _epoch in range(args.update_epochs):
                perm = torch.randperm(batch_size, device=device)
                for start in range(0, batch_size, minibatch_size):
                    mb = perm[start : start + minibatch_size]
                    new_log_prob, entropy = agent.log_prob_entropy(b_obs[mb], b_actions[mb])
                    mb_adv = b_adv[mb]
                    if args.norm_adv:
                        mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                    pg_loss, approx_kl, clip_frac = clipped_policy_loss(
                        new_log_prob, b_log_probs[mb], mb_adv, args.clip_coef
                    )
                    v_loss = value_loss(agent.value(b_obs[mb]), b_values[mb], b_returns[mb], value_clip)
                    entropy_loss = entropy.mean()
                    # $-\mathcal{L} = -\mathcal{L}^{CLIP} + c_1 \mathcal{L}^{VF} - c_2 S$, minimised
                    loss = pg_loss + args.vf_coef * v_loss - args.ent_coef * entropy_loss
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()
                if args.target_kl is not None and approx_kl > args.target_kl:
                    break

            if not torch.isfinite(loss) or not all(torch.isfinite(p).all() for p in agent.parameters()):
                raise FloatingPointError(f"loss or parameters became NaN/inf at global_step={global_step}")

            now = time.time()
            sps = int(global_step / (now - start_time))
            if writer:
                var_y = b_returns.var()
                explained_var = float("nan") if var_y == 0 else float(1 - (b_returns - b_values).var() / var_y)
                writer.log({
                    "charts/learning_rate": optimizer.param_groups[0]["lr"], "charts/SPS": sps,
                    "losses/policy_loss": pg_loss.item(), "losses/value_loss": v_loss.item(),
                    "losses/entropy": entropy_loss.item(), "losses/approx_kl": approx_kl.item(),
                    "losses/clipfrac": clip_frac.item(), "losses/explained_variance": explained_var,
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
        rms = (float(reward_rms.mean), float(reward_rms.var), float(reward_rms.count))
        torch.save({"agent": agent.state_dict(), "reward_rms": rms, "args": vars(args)}, path)
        print(f"model saved to {path}")

    eval_returns = [] if interrupted else evaluate(agent, args, run_name, device)
    summary = {
        "algo": "ppo", "env_id": args.env_id, "seed": args.seed, "global_step": global_step,
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
    mean, std = summary["eval_mean_return"], summary["eval_std_return"]
    print(f"eval: mean_return={mean} std_return={std} episodes={len(eval_returns)}")
    return summary


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgError, FloatingPointError) as e:  # bad input: exit 2; NaN during training: exit 1
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ArgError) else 1)
    except KeyboardInterrupt:  # during evaluation; training itself stops cleanly on Ctrl-C
        sys.exit(130)
