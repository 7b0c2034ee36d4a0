"""The floor under any DDPG at CleanRL's MuJoCo settings: only the forward and backward passes of one update.

Batch 256, two hidden layers of 256 units, HalfCheetah's sizes (17 observations, 6 actions): the target actor
and critic, the critic's step, and the actor's step every second update (policy_frequency 2), its backward
reaching the actor's weights only. No optimizer, env, replay buffer or logging: every real run is slower.
Run it on one core (`taskset -c 1 python benchmarks/ddpg_floor.py`); benchmarks/cleanrl_speed.md quotes it.
"""

import time

import torch

torch.set_num_threads(1)
OBS, ACT, HIDDEN, BATCH = 17, 6, 256, 256


def mlp(n_in: int, n_out: int) -> torch.nn.Sequential:
    layers = [torch.nn.Linear(n_in, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(HIDDEN, n_out))


actor, actor_target = mlp(OBS, ACT), mlp(OBS, ACT)
critic, critic_target = mlp(OBS + ACT, 1), mlp(OBS + ACT, 1)
obs, actions, next_obs = torch.randn(BATCH, OBS), torch.randn(BATCH, ACT), torch.randn(BATCH, OBS)


def update(k: int) -> None:
    with torch.no_grad():
        next_q = critic_target(torch.cat([next_obs, actor_target(next_obs)], 1))
    (critic(torch.cat([obs, actions], 1)) - next_q).pow(2).mean().backward()
    if k % 2 == 0:
        critic(torch.cat([obs, actor(obs)], 1)).mean().backward(inputs=list(actor.parameters()))


if __name__ == "__main__":
    for k in range(200):  # warm-up
        update(k)
    n, start = 3000, time.perf_counter()
    for k in range(n):
        update(k)
    per_update = (time.perf_counter() - start) / n
    print(f"forward + backward only: {per_update * 1e6:.0f} us per update, so at most {1 / per_update:.0f} SPS")
