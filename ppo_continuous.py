r"""Proximal Policy Optimization (PPO) tuned for continuous control (Box actions only).

Paper: Schulman, Wolski, Dhariwal, Radford, Klimov. "Proximal Policy Optimization
Algorithms", arXiv:1707.06347 (2017); the details that make it work on continuous control
follow Engstrom et al. (2020) and Andrychowicz et al. (2021), "What Matters in On-Policy RL".
Lecture: slide "Proximal Policy Optimization (PPO)", with the Gaussian output layer of slide
"Policy Gradient Methods", $\pi(a_t|s_t;\theta) = \mathbb{N}(f(s_t), \Sigma)$.

The update maximises, over several epochs of shuffled minibatches of one rollout,

$\mathcal{L}_t(\theta) = \mathcal{L}_t^{CLIP}(\theta) - c_1 \mathcal{L}_t^{VF}(\theta) + c_2 S[\pi_\theta](s_t)$,
$\mathcal{L}_t^{CLIP} = \min(r_t(\theta)\hat{A}_t, \text{clip}(r_t(\theta), 1-\epsilon, 1+\epsilon)\hat{A}_t)$,
$r_t(\theta) = \pi(a_t|s_t;\theta) / \pi(a_t|s_t;\theta_{old})$,

with $\hat{A}_t$ from GAE($\lambda$). What differs from ppo.py: observations are normalized
with running statistics (saved with the model, frozen at evaluation), rewards are scaled by
the running std of the discounted return, and $a_t$ is clipped to the bounds only for the env:
$\pi(a_t|s_t)$ in $r_t$ is the density of the unclipped sample.

Run: python ppo_continuous.py --env-id Pendulum-v1
"""

import importlib.util
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
    """save the weights and the normalization statistics to runs/<run_name>/<exp_name>.pt"""
    model_path: str | None = None
    """load weights and statistics from this file before training (with --total-timesteps 0: only evaluate)"""
    env_id: str = "Pendulum-v1"
    """the gymnasium environment id (Box actions)"""
    total_timesteps: int = 100_000
    """environment steps to train for, over all environments"""
    eval_episodes: int = 10
    """episodes of the final, deterministic policy (the Gaussian's mean) to evaluate"""

    # Defaults tuned on Pendulum-v1 (few short rollouts, many epochs over each); for MuJoCo use
    # CleanRL's: --num-envs 1 --num-steps 2048 --num-minibatches 32 --update-epochs 10
    # --learning-rate 3e-4 --gamma 0.99 --total-timesteps 1000000.
    learning_rate: float = 2e-3
    """Adam's step size alpha"""
    anneal_lr: bool = True
    """decay the step size linearly to 0 over training"""
    num_envs: int = 4
    """parallel environments"""
    num_steps: int = 256
    """steps per environment in each rollout"""
    gamma: float = 0.95
    """discount factor gamma"""
    gae_lambda: float = 0.95
    """lambda of GAE (1: Monte-Carlo returns, 0: one-step TD)"""
    num_minibatches: int = 4
    """minibatches per epoch"""
    update_epochs: int = 20
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
    norm_obs: bool = True
    """normalize observations with running mean and std (saved with the model, frozen at evaluation)"""
    clip_obs: float = 10.0
    """clip normalized observations to [-clip_obs, clip_obs]"""
    scale_rewards: bool = True
    """divide rewards by the running std of the discounted return (keeps V's targets near 1)"""
    init_log_std: float = 0.0
    """initial log sigma of the Gaussian policy, in action units"""
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


# ## Observation normalization
# $\tilde{s} = \text{clip}((s - \mu_s) / \sqrt{\sigma_s^2 + 10^{-8}}, -c, c)$ with $\mu_s, \sigma_s^2$
# the mean and variance of every observation seen so far, merged batch by batch (Chan et al.):
# $\mu \leftarrow \mu + \delta \frac{m}{n+m}$, $M_2 \leftarrow n\sigma^2 + m\sigma_b^2 + \delta^2 \frac{nm}{n+m}$,
# $\delta = \mu_b - \mu$. They belong to the policy: they are saved with it and only read at evaluation.
class RunningMeanStd:
    """Mean and variance of a stream of batches."""

    def __init__(self, shape=()):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4

    def update(self, batch: np.ndarray):
        b_mean, b_var, b_count = batch.mean(0), batch.var(0), batch.shape[0]
        delta, total = b_mean - self.mean, self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var, self.count = m2 / total, total

    def state(self) -> tuple:
        return torch.as_tensor(self.mean), torch.as_tensor(self.var), float(self.count)

    def load(self, state: tuple):
        mean, var, count = state
        if np.shape(mean) != np.shape(self.mean):
            raise ValueError(f"statistics of shape {tuple(np.shape(mean))}, expected {np.shape(self.mean)}")
        self.mean, self.var, self.count = np.asarray(mean, np.float64), np.asarray(var, np.float64), float(count)


def normalize_obs(obs: np.ndarray, rms: RunningMeanStd | None, clip: float) -> np.ndarray:
    if rms is None:
        return obs.astype(np.float32)
    return np.clip((obs - rms.mean) / np.sqrt(rms.var + 1e-8), -clip, clip).astype(np.float32)


# ## Reward scaling
# $\tilde{r}_t = r_t / \sqrt{\text{Var}[G] + 10^{-8}}$ with $G_t = \gamma G_{t-1} + r_t$ the discounted
# sum of past rewards of the running episode (Engstrom et al. 2020). The mean is not subtracted:
# that would change which policy is optimal.
class RewardScaler:
    def __init__(self, num_envs: int, gamma: float):
        self.rms, self.gamma, self.G = RunningMeanStd(), gamma, np.zeros(num_envs)

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.G = self.G * self.gamma + reward
        self.rms.update(self.G)
        self.G[done] = 0.0
        return reward / np.sqrt(self.rms.var + 1e-8)


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(n_in: int, n_hidden: int, n_out: int, out_std: float) -> nn.Sequential:
    hidden = [layer_init(nn.Linear(n_in, n_hidden)), nn.Tanh(), layer_init(nn.Linear(n_hidden, n_hidden)), nn.Tanh()]
    return nn.Sequential(*hidden, layer_init(nn.Linear(n_hidden, n_out), std=out_std))


# ## The Gaussian policy
# $\pi(a|s) = \mathbb{N}(f(s), \Sigma)$ with diagonal $\Sigma = \text{diag}(\sigma^2)$ and $\log \sigma$
# a parameter that does not depend on $s$:
# $\log \pi(a|s) = -\sum_i \left[\frac{(a_i - \mu_i)^2}{2\sigma_i^2} + \log \sigma_i + \frac{1}{2}\log 2\pi\right]$,
# $S = \sum_i \left[\log \sigma_i + \frac{1}{2}(1 + \log 2\pi)\right]$.
def gaussian_log_prob_entropy(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor):
    log_2pi = float(np.log(2 * np.pi))
    z = (actions - mean) * torch.exp(-log_std)
    log_prob = -(0.5 * z.pow(2) + log_std + 0.5 * log_2pi).sum(-1)
    entropy = (log_std + 0.5 * (1.0 + log_2pi)).sum(-1).expand(mean.shape[:-1])
    return log_prob, entropy


class Agent(nn.Module):
    r"""Actor $f(s;\theta)$, $\log\sigma$, and critic $V(s)$ as two separate MLPs."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, init_log_std: float = 0.0):
        super().__init__()
        self.critic = mlp(obs_dim, hidden, 1, out_std=1.0)
        self.actor = mlp(obs_dim, hidden, action_dim, out_std=0.01)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def log_prob_entropy(self, obs: torch.Tensor, actions: torch.Tensor):
        return gaussian_log_prob_entropy(self.actor(obs), self.log_std, actions)

    # $a = \mu + \sigma \xi$, $\xi \sim \mathbb{N}(0, I)$: no torch.distributions in the env loop.
    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        mean = self.actor(obs)
        return mean + torch.exp(self.log_std) * torch.randn_like(mean)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """The most likely action, the mean: used for evaluation."""
        return self.actor(obs)


# ## Generalized advantage estimation
# $\delta_t = r_t + \gamma V(s_{t+1})(1 - \text{terminated}_t) - V(s_t)$ and
# $\hat{A}_t = \delta_t + \gamma\lambda (1 - \text{done}_t) \hat{A}_{t+1}$.
# `next_values[t]` is $V$ of the true next state, also when the episode was truncated there:
# a time limit is not a terminal state, so it still bootstraps. `dones[t]` (terminated or
# truncated) only stops the sum from running into the next episode.
def gae(rewards, values, next_values, terminated, dones, gamma: float, gae_lambda: float):
    advantages, next_advantage = torch.zeros_like(rewards), torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminated[t]) - values[t]
        next_advantage = delta + gamma * gae_lambda * (1.0 - dones[t]) * next_advantage
        advantages[t] = next_advantage
    return advantages


# ## The clipped surrogate
# $r_t(\theta) = \exp(\log\pi_\theta(a_t|s_t) - \log\pi_{\theta_{old}}(a_t|s_t))$;
# the loss is $-\hat{\mathbb{E}}_t[\min(r_t \hat{A}_t, \text{clip}(r_t, 1-\epsilon, 1+\epsilon)\hat{A}_t)]$.
# Also returned: approx KL $\hat{\mathbb{E}}[(r-1) - \log r]$ and the fraction of clipped samples.
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


def check_args(args: Args) -> None:
    if not 0 <= args.seed < 2**32:
        raise ArgError(f"--seed must lie in [0, 2**32), got {args.seed}")
    sizes = ("num_envs", "num_steps", "num_minibatches", "update_epochs", "hidden_size", "num_threads")
    for name in (*sizes, "learning_rate", "clip_coef", "clip_obs"):
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
    if args.total_timesteps != 0 and args.total_timesteps < batch_size:
        raise ArgError(f"--total-timesteps {args.total_timesteps} is less than one update ({batch_size} steps)")
    if args.model_path is not None and not os.path.isfile(args.model_path):
        raise ArgError(f"--model-path {args.model_path}: no such file")
    if args.capture_video and importlib.util.find_spec("moviepy") is None:
        raise ArgError('--capture-video needs moviepy and pygame: pip install "gymnasium[classic-control,other]"')


def evaluate(agent: Agent, obs_rms: RunningMeanStd | None, args: Args, run_name: str, device) -> list[float]:
    """Returns of `eval_episodes` episodes of the mean action, with the statistics frozen."""
    env = gym.make(args.env_id, render_mode="rgb_array" if args.capture_video else None)
    if args.capture_video:
        env = gym.wrappers.RecordVideo(env, f"videos/{run_name}", episode_trigger=lambda e: True)
    returns = []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 + episode)
        done, total = False, 0.0
        while not done:
            x = torch.from_numpy(normalize_obs(obs[None], obs_rms, args.clip_obs)).to(device)
            with torch.inference_mode():
                action = np.clip(agent.mode(x)[0].cpu().numpy(), env.action_space.low, env.action_space.high)
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
    if not isinstance(act_space, gym.spaces.Box):
        envs.close()
        raise ArgError(f"ppo_continuous.py needs a Box action space, {args.env_id} has {act_space} (use ppo.py)")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        envs.close()
        raise ArgError(f"ppo_continuous.py needs a flat Box observation space, {args.env_id} has {obs_space}")
    obs_dim, action_dim = obs_space.shape[0], act_space.shape[0]
    agent = Agent(obs_dim, action_dim, args.hidden_size, args.init_log_std).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    obs_rms = RunningMeanStd((obs_dim,)) if args.norm_obs else None
    scaler = RewardScaler(args.num_envs, args.gamma)
    if args.model_path is not None:
        try:
            saved = torch.load(args.model_path, map_location="cpu", weights_only=True)
            agent.load_state_dict(saved["agent"])
            if (saved["obs_rms"] is None) == args.norm_obs:
                raise ValueError(f"it was saved {'without' if args.norm_obs else 'with'} --norm-obs")
            if obs_rms is not None:
                obs_rms.load(saved["obs_rms"])
            scaler.rms.load(saved["reward_rms"])
        except Exception as e:  # not a model file, or one saved for another env or network
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            raise ArgError(f"--model-path {args.model_path} does not fit {args.env_id}: {reason}") from None
    os.makedirs(f"runs/{run_name}", exist_ok=True)
    writer = importlib.import_module("wandb") if args.track else None  # imported only when asked for
    if writer:
        writer.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name, config=vars(args))
    progress = open(f"runs/{run_name}/progress.csv", "w")
    progress.write("global_step,wall_time,episodic_return,episodic_length\n")

    # Rollout storage as numpy. Observations are stored normalized, with the statistics of the
    # moment they were seen: the inputs $\pi_{\theta_{old}}$ acted on. Actions are stored unclipped.
    T, N = args.num_steps, args.num_envs
    batch_size = T * N
    minibatch_size, num_iterations = batch_size // args.num_minibatches, args.total_timesteps // batch_size
    obs_buf, next_obs_buf = np.zeros((2, T, N, obs_dim), dtype=np.float32)
    actions_buf = np.zeros((T, N, action_dim), dtype=np.float32)
    rewards_buf, terminated_buf, dones_buf = step_buf = np.zeros((3, T, N), dtype=np.float32)
    global_step, episode_returns, interrupted = 0, [], False
    ep_return, ep_length = np.zeros(N), np.zeros(N, dtype=np.int64)
    raw_obs, _ = envs.reset(seed=args.seed)
    if obs_rms is not None and num_iterations > 0:
        obs_rms.update(raw_obs)
    obs = normalize_obs(raw_obs, obs_rms, args.clip_obs)
    start_time = last_print = time.time()
    try:
        for iteration in range(1, num_iterations + 1):
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1) / num_iterations)

            # ## Rollout: run $\pi_{\theta_{old}}$ for T steps in each of the N envs
            for step in range(T):
                obs_buf[step] = obs
                # The env gets $\text{clip}(a_t, low, high)$; the buffer keeps $a_t$, whose density
                # $\pi(a_t|s_t;\theta_{old})$ is the denominator of $r_t(\theta)$.
                with torch.inference_mode():
                    actions_buf[step] = action = agent.sample(torch.from_numpy(obs).to(device)).cpu().numpy()
                raw_obs, reward, terminated, truncated, info = envs.step(np.clip(action, act_space.low, act_space.high))
                global_step += N
                if obs_rms is not None:
                    obs_rms.update(raw_obs)
                obs = normalize_obs(raw_obs, obs_rms, args.clip_obs)
                next_obs_buf[step] = normalize_obs(true_next_obs(raw_obs, info), obs_rms, args.clip_obs)
                done = terminated | truncated
                rewards_buf[step] = scaler(reward, done) if args.scale_rewards else reward
                terminated_buf[step], dones_buf[step] = terminated, done
                ep_return += reward
                ep_length += 1
                for i in np.flatnonzero(done):
                    episode_returns.append(float(ep_return[i]))
                    progress.write(f"{global_step},{time.time() - start_time:.4f},{ep_return[i]:.6g},{ep_length[i]}\n")
                    progress.flush()
                    if writer:
                        metrics = {"charts/episodic_return": ep_return[i], "charts/episodic_length": ep_length[i]}
                        writer.log(metrics, step=global_step)
                    ep_return[i], ep_length[i] = 0.0, 0

            # ## Advantages: one batched forward of V over $s_t$ and the true $s_{t+1}$
            b_obs, b_actions = torch.from_numpy(obs_buf).to(device), torch.from_numpy(actions_buf).to(device)
            rewards, terminated, dones = torch.from_numpy(step_buf).to(device)
            with torch.no_grad():
                values = agent.value(b_obs)
                next_values = agent.value(torch.from_numpy(next_obs_buf).to(device))
                old_log_probs, _ = agent.log_prob_entropy(b_obs, b_actions)
                advantages = gae(rewards, values, next_values, terminated, dones, args.gamma, args.gae_lambda)
                returns = advantages + values

            # ## Update: `update_epochs` passes of shuffled minibatches over the rollout
            b_obs, b_actions = b_obs.reshape(batch_size, obs_dim), b_actions.reshape(batch_size, action_dim)
            b_log_probs, b_adv = old_log_probs.reshape(-1), advantages.reshape(-1)
            b_returns, b_values = returns.reshape(-1), values.reshape(-1)
            value_clip = args.clip_coef if args.clip_vloss else None
            for _epoch in range(args.update_epochs):
                perm = torch.randperm(batch_size, device=device)
                for start in range(0, batch_size, minibatch_size):
                    mb = perm[start : start + minibatch_size]
                    log_prob, entropy = agent.log_prob_entropy(b_obs[mb], b_actions[mb])
                    adv = b_adv[mb]
                    if args.norm_adv:
                        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                    pg_loss, approx_kl, clip_frac = clipped_policy_loss(log_prob, b_log_probs[mb], adv, args.clip_coef)
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
        torch.save({"agent": agent.state_dict(), "obs_rms": obs_rms.state() if obs_rms is not None else None,
                    "reward_rms": scaler.rms.state(), "args": vars(args)}, path)  # fmt: skip
        print(f"model saved to {path}")
    eval_returns = [] if interrupted else evaluate(agent, obs_rms, args, run_name, device)
    mean, std = (float(np.mean(eval_returns)), float(np.std(eval_returns))) if eval_returns else (None, None)
    summary = {
        "algo": "ppo_continuous", "env_id": args.env_id, "seed": args.seed, "global_step": global_step,
        "wall_time_s": wall_time, "sps": global_step / wall_time if wall_time > 0 else 0.0,
        "eval_mean_return": mean, "eval_std_return": std, "eval_episodes": len(eval_returns),
        "train_last_mean_return": float(np.mean(episode_returns[-20:])) if episode_returns else None,
        "interrupted": interrupted, "run_name": run_name,
    }  # fmt: skip
    with open(f"runs/{run_name}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    if writer:
        writer.log({"eval/mean_return": mean}, step=global_step)
        writer.finish()
    print(f"eval: mean_return={mean} std_return={std} episodes={len(eval_returns)}")
    return summary


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except ArgError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
