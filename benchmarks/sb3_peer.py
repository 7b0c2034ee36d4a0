"""Train a Stable-Baselines3 / sb3-contrib peer with rl-zoo's hyperparameters, writing the same
runs/<run_name>/progress.csv and summary.json as our scripts, so benchmarks/run.py reads both alike.

    python benchmarks/sb3_peer.py --algo ppo --env-id CartPole-v1 --seed 1

The hyperparameters are rl-zoo's (hyperparams/<algo>.yml) for the env; A2C uses SB3's defaults with
8 envs. Peers run with one torch thread, like our scripts, so two seeds can share two cores.
"""

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch

# rl-zoo hyperparameters (DLR-RM/rl-baselines3-zoo, hyperparams/*.yml), as keyword arguments.
TRPO_MUJOCO = dict(  # trpo.yml's pybullet and MuJoCo defaults
    normalize=True, n_envs=2, n_timesteps=1_000_000, batch_size=128, n_steps=1024, gamma=0.99, gae_lambda=0.95,
    sub_sampling_factor=1, cg_max_steps=25, cg_damping=0.1, n_critic_updates=20, learning_rate=1e-3,
)  # fmt: skip
ZOO = {
    ("ppo", "CartPole-v1"): dict(
        n_envs=8, n_timesteps=100_000, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
        ent_coef=0.0, learning_rate="lin_0.001", clip_range="lin_0.2",
    ),
    ("ppo", "Pendulum-v1"): dict(
        n_envs=4, n_timesteps=100_000, n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10, ent_coef=0.0,
        learning_rate=1e-3, clip_range=0.2, use_sde=True, sde_sample_freq=4,
    ),
    ("a2c", "CartPole-v1"): dict(n_envs=8, n_timesteps=100_000, ent_coef=0.0),
    ("trpo", "CartPole-v1"): dict(
        n_envs=2, n_timesteps=100_000, n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98,
        gamma=0.99, learning_rate=1e-3, n_critic_updates=20,
    ),
    ("trpo", "Pendulum-v1"): dict(
        n_envs=2, n_timesteps=100_000, n_steps=1024, gamma=0.9, n_critic_updates=15, use_sde=True, sde_sample_freq=4,
    ),
    ("ddpg", "Pendulum-v1"): dict(
        n_envs=1, n_timesteps=20_000, gamma=0.98, buffer_size=200_000, learning_starts=10_000, noise_std=0.1,
        gradient_steps=-1, train_freq=(1, "episode"), learning_rate=1e-3, policy_kwargs=dict(net_arch=[400, 300]),
    ),
    # Beyond CartPole and Pendulum (issue 15). rl-zoo lists LunarLander as -v2 for PPO, A2C and DDPG and as -v3
    # for TRPO; the hyperparameters are the same task's. A2C on Pendulum: rl-zoo's "almost tuned" Pendulum-v0
    # entry, the env's earlier version.
    ("ppo", "LunarLander-v3"): dict(
        n_envs=16, n_timesteps=1_000_000, n_steps=1024, batch_size=64, gae_lambda=0.98, gamma=0.999, n_epochs=4,
        ent_coef=0.01,
    ),
    ("ppo", "LunarLanderContinuous-v3"): dict(
        n_envs=16, n_timesteps=1_000_000, n_steps=1024, batch_size=64, gae_lambda=0.98, gamma=0.999, n_epochs=4,
        ent_coef=0.01,
    ),
    ("trpo", "LunarLander-v3"): dict(
        n_envs=2, n_timesteps=200_000, n_steps=512, cg_damping=0.01, gae_lambda=0.98, gamma=0.99,
        learning_rate=1e-3, n_critic_updates=15,
    ),
    ("a2c", "LunarLander-v3"): dict(
        n_envs=8, n_timesteps=200_000, gamma=0.995, n_steps=5, learning_rate="lin_0.00083", ent_coef=1e-5,
    ),
    ("a2c", "Pendulum-v1"): dict(
        normalize=True, n_envs=8, n_timesteps=1_000_000, ent_coef=0.0, max_grad_norm=0.5, n_steps=8, gae_lambda=0.9,
        vf_coef=0.4, gamma=0.99, use_rms_prop=True, normalize_advantage=False, learning_rate="lin_7e-4",
        use_sde=True, policy_kwargs=dict(log_std_init=-2, ortho_init=False),
    ),
    # MuJoCo (issue 33): rl-zoo's trpo.yml lists the v4 envs (its figures are from v3); ours run v5, the same tasks.
    ("trpo", "Hopper-v5"): dict(**TRPO_MUJOCO),
    ("trpo", "HalfCheetah-v5"): dict(**TRPO_MUJOCO, target_kl=0.04),
    ("trpo", "Walker2d-v5"): dict(**TRPO_MUJOCO),
    ("ddpg", "LunarLanderContinuous-v3"): dict(
        n_envs=1, n_timesteps=300_000, gamma=0.98, buffer_size=200_000, learning_starts=10_000, noise_std=0.1,
        gradient_steps=-1, train_freq=(1, "episode"), learning_rate=1e-3, policy_kwargs=dict(net_arch=[400, 300]),
    ),
}  # fmt: skip


def linear(start: float):
    return lambda progress_remaining: progress_remaining * start


def build(algo: str, env_id: str, seed: int, total_timesteps: int | None):
    from stable_baselines3 import A2C, DDPG, PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise

    params = dict(ZOO[(algo, env_id)])
    n_envs, n_timesteps = params.pop("n_envs"), params.pop("n_timesteps")
    for key in ("learning_rate", "clip_range"):
        if isinstance(params.get(key), str):
            params[key] = linear(float(params[key][4:]))
    if "noise_std" in params:
        n_actions = gym.make(env_id).action_space.shape[0]
        std = params.pop("noise_std")
        params["action_noise"] = NormalActionNoise(np.zeros(n_actions), std * np.ones(n_actions))
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    if params.pop("normalize", False):  # rl-zoo's `normalize: true`: running mean/std of obs and of returns
        from stable_baselines3.common.vec_env import VecNormalize

        env = VecNormalize(env, gamma=params.get("gamma", 0.99))
    if algo == "trpo":
        from sb3_contrib import TRPO as cls
    else:
        cls = {"ppo": PPO, "a2c": A2C, "ddpg": DDPG}[algo]
    model = cls("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **params)
    return model, total_timesteps or n_timesteps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", required=True, choices=sorted({a for a, _ in ZOO}))
    parser.add_argument("--env-id", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--total-timesteps", type=int, default=None)
    parser.add_argument("--eval-episodes", type=int, default=10)
    args = parser.parse_args()
    if (args.algo, args.env_id) not in ZOO:
        parser.exit(2, f"error: no rl-zoo hyperparameters here for {args.algo} on {args.env_id}\n")
    torch.set_num_threads(1)
    from stable_baselines3.common.callbacks import BaseCallback

    run_name = f"{args.env_id}__sb3_{args.algo}__{args.seed}__{int(time.time())}"
    import os

    os.makedirs(f"runs/{run_name}", exist_ok=True)
    progress = open(f"runs/{run_name}/progress.csv", "w")
    progress.write("global_step,wall_time,episodic_return,episodic_length\n")
    returns = []

    class Progress(BaseCallback):
        def _on_training_start(self):
            self.start = time.time()

        def _on_step(self):
            for info in self.locals["infos"]:
                if "episode" in info:
                    ep = info["episode"]
                    returns.append(ep["r"])
                    progress.write(f"{self.num_timesteps},{time.time() - self.start:.4f},{ep['r']:.6g},{ep['l']}\n")
                    progress.flush()
            return True

    model, total = build(args.algo, args.env_id, args.seed, args.total_timesteps)
    callback = Progress()
    model.learn(total_timesteps=total, callback=callback)
    wall = time.time() - callback.start
    progress.close()

    env = gym.make(args.env_id)
    normalizer = model.get_vec_normalize_env()  # evaluate on the obs statistics frozen at the end of training
    eval_returns = []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 + episode)
        done, total_reward = False, 0.0
        while not done:
            action, _ = model.predict(obs if normalizer is None else normalizer.normalize_obs(obs), deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total_reward += float(reward)
            done = terminated or truncated
        eval_returns.append(total_reward)
    summary = {
        "algo": f"sb3_{args.algo}", "env_id": args.env_id, "seed": args.seed, "global_step": model.num_timesteps,
        "wall_time_s": wall, "sps": model.num_timesteps / wall, "eval_mean_return": float(np.mean(eval_returns)),
        "eval_std_return": float(np.std(eval_returns)), "eval_episodes": len(eval_returns),
        "train_last_mean_return": float(np.mean(returns[-20:])) if returns else None, "run_name": run_name,
    }  # fmt: skip
    with open(f"runs/{run_name}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(f"eval: mean_return={summary['eval_mean_return']} std_return={summary['eval_std_return']} "
          f"episodes={len(eval_returns)}")  # fmt: skip


if __name__ == "__main__":
    main()
