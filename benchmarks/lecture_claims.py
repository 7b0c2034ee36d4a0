"""The lecture's claims as numbers: what benchmarks/lecture_figures.py draws and tests/test_lecture_figures.py checks.

One function per figure. Each measures a slide's claim with the scripts' own functions, loaded with
tests/helpers.py's `load_script` (imported, never copied: a figure that shows the wrong thing points at a
bug in a script), on the exact tabular MDP of tests/tabular_mdp.py where the truth is known, or in a short
`train` run of the script itself. Sizes are arguments: the figures use large ones, the tests small ones.
Everything returned is plain lists and floats, so the page can print it and json can keep it.
"""

import contextlib
import inspect
import math
import os
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from tests.helpers import load_script, train_in
from tests.tabular_mdp import (
    TabularMDP,
    exact_gradient,
    exact_J,
    exact_Q,
    exact_V,
    sample_episodes,
    score,
)


# ## Shared pieces
def tabular_problem(horizon: int = 5, seed: int = 1, n_states: int = 4, n_actions: int = 2):
    """The exact MDP of the figures (gamma = 1, the lecture's finite-horizon sum) and a fixed softmax policy."""
    mdp = TabularMDP.random(n_states=n_states, n_actions=n_actions, horizon=horizon, seed=seed, gamma=1.0)
    logits = torch.randn(n_states, n_actions, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)
    return mdp, logits


def episodes(mdp: TabularMDP, logits: torch.Tensor, n: int, seed: int) -> dict:
    """n episodes with their closed-form scores $\\nabla_\\theta \\log \\pi(a_t|s_t)$, flattened to (n, H, P)."""
    ep = sample_episodes(mdp, logits, n, torch.Generator().manual_seed(seed))
    ep["scores"] = score(logits, ep["states"], ep["actions"]).flatten(-2)
    return ep


def estimate_stats(per_batch: torch.Tensor, target: torch.Tensor) -> dict:
    """Bias and variance of an estimator from R independent draws (R, P) of it, against the exact `target` (P,).

    `variance` is the trace of the covariance; `noise` is the norm the bias would have from sampling alone,
    $\\sqrt{\\text{tr Cov} / R}$; `z` is the largest per-parameter |bias| in standard errors."""
    R = per_batch.shape[0]
    var = per_batch.var(0)
    bias = per_batch.mean(0) - target
    se = (var / R).sqrt().clamp(min=1e-300)
    return {
        "variance": float(var.sum()),
        "bias": float(bias.norm()),
        "noise": float((var.sum() / R).sqrt()),
        "z": float((bias.abs() / se).max()),
    }


@contextlib.contextmanager
def around(module, name: str, hook):
    """While inside, calls to `module.name` go through `hook(original, arguments)`, `arguments` the call's
    arguments by parameter name. The scripts look their functions up by name when `train` calls them (as
    tests/helpers.py's `spy` relies on), so this sees, and may act around, every call a real run makes."""
    original = getattr(module, name)
    signature = inspect.signature(original)

    def wrapper(*args, **kwargs):
        return hook(original, dict(signature.bind(*args, **kwargs).arguments))

    with mock.patch.object(module, name, wrapper):
        yield


def train_quietly(module, **overrides) -> tuple[dict, Path, tempfile.TemporaryDirectory]:
    """`module.train(Args(**overrides))` in a temporary folder, its status lines swallowed.
    Returns the summary, the run folder and the folder's handle (the run is gone once it is cleaned up)."""
    tmp = tempfile.TemporaryDirectory()
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        summary, run_dir = train_in(Path(tmp.name), module, **overrides)
    return summary, run_dir, tmp


# ## 1. Finite Differences
def finite_differences(mdp, logits, epsilons, episodes_per_eval: int, repeats: int, seed: int = 0) -> dict:
    """finite_diff.py's gradient of J against the exact $\\nabla_\\theta J$, for each perturbation size $\\epsilon$.

    `exact`: J of each perturbed policy computed exactly (float64), so the error is the method's own:
    truncation ($O(\\epsilon)$ forward, $O(\\epsilon^2)$ central) against rounding ($\\sim 10^{-16}/\\epsilon$).
    `independent`: J estimated by the mean return of `episodes_per_eval` episodes per perturbed policy, each
    policy its own episodes; `common`: the same random numbers for every policy, as finite_diff.py does by
    default (--common-random-numbers). Both: the RMS error over `repeats` gradients. `evaluations`: policies
    evaluated per gradient."""
    fd = load_script("finite_diff.py")
    theta, shape = logits.flatten(), logits.shape
    exact = exact_gradient(mdp, logits).flatten()
    out = {"epsilon": [float(e) for e in epsilons], "grad_norm": float(exact.norm())}
    n = episodes_per_eval * repeats

    def sampled_error(thetas, eps: float, central: bool, common: bool, stream: int) -> float:
        shared = torch.Generator().manual_seed(stream)
        gens = [torch.Generator().manual_seed(stream) if common else shared for _ in thetas]
        returns = torch.stack(
            [sample_episodes(mdp, t.view(shape), n, g)["rewards"].sum(1) for t, g in zip(thetas, gens)]
        )
        J_hat = returns.view(len(thetas), repeats, episodes_per_eval).mean(-1)  # (K, repeats)
        grads = torch.stack([fd.finite_difference_gradient(J_hat[:, r], eps, central) for r in range(repeats)])
        return float((grads - exact).norm(dim=1).pow(2).mean().sqrt())

    for name, central in (("forward", False), ("central", True)):
        errors = {"exact": [], "independent": [], "common": []}
        for i, eps in enumerate(map(float, epsilons)):
            thetas = fd.perturbed_parameters(theta, eps, central)
            J = torch.stack([exact_J(mdp, t.view(shape)) for t in thetas])
            errors["exact"].append(float((fd.finite_difference_gradient(J, eps, central) - exact).norm()))
            for key in ("independent", "common"):
                errors[key].append(sampled_error(thetas, eps, central, key == "common", seed + 1000 * i + central))
        out[name] = {**errors, "evaluations": int(thetas.shape[0])}
    out["episodes_per_eval"] = episodes_per_eval
    return out


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(lx, ly, 1)[0])


# ## 2. REINFORCE's variance
ESTIMATORS = {
    "whole": "Algorithm 1: $G(\\tau)$",
    "whole_mean": "$G(\\tau) - b$, mean baseline",
    "whole_optimal": "$G(\\tau) - b_k$, optimal baseline",
    "rtg": "rewards-to-go $G_t$",
    "rtg_mean": "$G_t - b_t$, mean baseline",
    "rtg_value": "$G_t - V(s_t)$, learned",
}


def estimator_weights(rewards, mask, value, gamma: float) -> dict:
    """The weight $\\Psi_t$ of each $\\nabla_\\theta \\log \\pi(a_t|s_t)$, (T, N), per estimator, from the scripts'
    functions (`value`: the learned $V(s_t)$, (T, N)). The optimal baseline is per parameter: see `per_episode`."""
    rf, rb = load_script("reinforce.py"), load_script("reinforce_baseline.py")
    whole = rf.reinforce_weights(rewards, mask, gamma, reward_to_go=False)
    rtg = rf.reinforce_weights(rewards, mask, gamma, reward_to_go=True)
    return {
        "whole": whole,
        "whole_mean": (whole - rb.mean_baseline(whole, mask)) * mask,
        "rtg": rtg,
        "rtg_mean": (rtg - rb.mean_baseline(rtg, mask)) * mask,
        "rtg_value": (rtg - value) * mask,
    }


def per_episode_tabular(scores, rewards, mask, value, gamma: float) -> dict:
    """Per-episode gradient estimates (N, P) of every estimator on the tabular MDP: $g_i = \\sum_t \\Psi_t s_t$
    with the closed-form scores (N, T, P); the optimal baseline as reinforce_baseline.py applies it."""
    rb = load_script("reinforce_baseline.py")
    out = {k: torch.einsum("ntp,tn->np", scores, w) for k, w in estimator_weights(rewards, mask, value, gamma).items()}
    total, G = scores.sum(1), load_script("reinforce.py").rewards_to_go(rewards, gamma)[0]
    out["whole_optimal"] = total * (G[:, None] - rb.optimal_baseline(total, G))
    return out


def fit_tabular_value(mdp, logits, n_episodes: int, seed: int, steps: int = 300) -> torch.Tensor:
    """reinforce_baseline.py's $V$ network (input: one-hot of (t, s), the finite-horizon state) fit with its
    `value_loss` to the returns-to-go of `n_episodes` episodes of its own, so that it knows nothing of the
    batches it serves. With one-hot inputs the loss over all samples is, up to a constant, the loss on each
    (t, s) with its mean return, weighted by its count: `value_loss`'s mask carries the counts, so each
    full-batch step costs H * S rows. Returns the values as an (H, S) table."""
    rb = load_script("reinforce_baseline.py")
    H, S = mdp.horizon, mdp.n_states
    ep = sample_episodes(mdp, logits, n_episodes, torch.Generator().manual_seed(seed))
    cell = (torch.arange(H)[:, None] * S + ep["states"].T).flatten()  # (t, s) of every sample
    returns = rb.rewards_to_go(ep["rewards"].T, 1.0).flatten()
    counts = torch.bincount(cell, minlength=H * S).double()
    means = torch.zeros(H * S, dtype=torch.float64).index_add_(0, cell, returns) / counts.clamp(min=1)
    torch.manual_seed(seed)
    net = rb.mlp(H * S, 32, 1, out_std=1.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    features = torch.eye(H * S)
    for _ in range(steps):
        loss = rb.value_loss(net(features).squeeze(-1), means.float(), counts.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return net(features).view(H, S).double()


def reinforce_variance_mdp(mdp, logits, batch_sizes, replicates: int, value_episodes: int, seed: int = 0) -> dict:
    """Bias and variance of each estimator's batch mean $\\hat{\\nabla}_\\theta J$ over `replicates` independent
    batches of N episodes, against the exact gradient (gamma = 1: all six estimate the same $\\nabla_\\theta J$)."""
    grad = exact_gradient(mdp, logits).flatten()
    V = fit_tabular_value(mdp, logits, value_episodes, seed + 7)
    per_episode = torch.func.vmap(lambda s, r, m, v: per_episode_tabular(s, r, m, v, 1.0))
    out = {"batch_sizes": list(batch_sizes), "value_error": float((V - exact_V(mdp, logits)).abs().max())}
    out.update({k: [] for k in ESTIMATORS})
    H = mdp.horizon
    for N in batch_sizes:
        ep = episodes(mdp, logits, replicates * N, seed + N)
        # (R*N, H) -> (R, H, N): each replicate a (T, N) batch, as the scripts store one
        rewards, states = (ep[k].view(replicates, N, H).transpose(1, 2) for k in ("rewards", "states"))
        value = V[torch.arange(H)[None, :, None], states]
        scores = ep["scores"].view(replicates, N, H, -1)
        g = per_episode(scores, rewards, torch.ones_like(rewards), value)
        for k in ESTIMATORS:
            out[k].append(estimate_stats(g[k].mean(1), grad))
    return out


def cartpole_policy_mid_training(train_steps: int, seed: int, gamma: float):
    """reinforce_baseline.py trained for `train_steps` steps with --gamma `gamma` --save-model, its policy and critic read
    back from the checkpoint. Returns (policy, critic, the run's summary, its Args)."""
    rb = load_script("reinforce_baseline.py")
    flags = {"total_timesteps": train_steps, "seed": seed, "gamma": gamma, "save_model": True, "eval_episodes": 1}
    summary, run_dir, tmp = train_quietly(rb, **flags)
    with tmp:
        checkpoint = torch.load(next(run_dir.glob("*.pt")), weights_only=True)
    args = rb.Args(**flags)
    policy = rb.Agent(4, 2, True, args.hidden_size)
    critic = rb.mlp(4, args.hidden_size, 1, out_std=1.0)
    for net in (policy, critic):
        if not load_matching(net, checkpoint):
            raise RuntimeError(f"no state in the checkpoint fits {type(net).__name__} (keys: {list(checkpoint)})")
    return policy, critic, summary, args


def load_matching(net: torch.nn.Module, checkpoint) -> bool:
    """Load into `net` the first dict of tensors in `checkpoint` (searched depth first) that fits it exactly:
    the layout may be {"policy": state, ...} or {part: state, ..., "meta": {...}}."""
    if not isinstance(checkpoint, dict):
        return False
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        try:
            net.load_state_dict(checkpoint)
            return True
        except (RuntimeError, KeyError):
            return False
    return any(load_matching(net, v) for v in checkpoint.values())


def cartpole_episodes(policy, n_episodes: int, seed: int, round_envs: int = 64) -> list[dict]:
    """Whole CartPole-v1 episodes of a fixed `policy`, in rounds of `round_envs` envs (reinforce_baseline.py's
    env factory; one episode per env, as its `train` collects a batch). Each round: obs (T, n, 4), actions,
    rewards and mask (T, n), T its longest episode."""
    rb = load_script("reinforce_baseline.py")
    torch.manual_seed(seed)
    rounds = []
    for r in range(math.ceil(n_episodes / round_envs)):
        n = min(round_envs, n_episodes - r * round_envs)
        envs = rb.make_envs("CartPole-v1", n)
        obs, _ = envs.reset(seed=seed + 1000 * r)
        active = np.ones(n, dtype=bool)
        rows = {"obs": [], "actions": [], "rewards": [], "mask": []}
        while active.any():
            with torch.inference_mode():
                action = policy.sample(torch.as_tensor(obs, dtype=torch.float32)).numpy()
            rows["obs"].append(obs)
            rows["actions"].append(action)
            rows["mask"].append(active.astype(np.float32))
            obs, reward, terminated, truncated, _ = envs.step(action)
            rows["rewards"].append(np.where(active, reward, 0.0).astype(np.float32))
            active &= ~(terminated | truncated)
        envs.close()
        rounds.append({k: torch.from_numpy(np.stack(v)) for k, v in rows.items()})
    return rounds


def reinforce_variance_cartpole(
    train_steps: int, n_episodes: int, batch_sizes, seed: int = 1, gamma: float = 1.0
) -> dict:
    """The variance of each estimator's batch gradient on CartPole-v1, at the policy reinforce_baseline.py
    reaches after `train_steps` steps (gamma = 1 by default, the lecture's undiscounted sum, so that all six
    estimate the same gradient): reinforce_baseline.py's `per_episode_gradients` and `gradient_variance`
    on batches of N of `n_episodes` episodes. No exact gradient here, so no bias."""
    rb, rf = load_script("reinforce_baseline.py"), load_script("reinforce.py")
    policy, critic, summary, args = cartpole_policy_mid_training(train_steps, seed, gamma)
    rounds = cartpole_episodes(policy, n_episodes, seed)
    T = max(r["mask"].shape[0] for r in rounds)

    def pad(x):  # (t, n, ...) -> (T, n, ...), zeros after the round's longest episode
        return torch.cat([x, x.new_zeros(T - x.shape[0], *x.shape[1:])])

    obs, actions, rewards, mask = (
        torch.cat([pad(r[k]) for r in rounds], 1) for k in ("obs", "actions", "rewards", "mask")
    )
    obs = obs.float()
    lengths = mask.sum(0)
    out = {
        "batch_sizes": list(batch_sizes),
        "train_steps": train_steps,
        "seed": seed,
        "gamma": args.gamma,
        "mean_length": float(lengths.mean()),
        "parameters": sum(p.numel() for p in policy.parameters()),
        "train_last_mean_return": float(summary["train_last_mean_return"]),
    }
    out.update({k: [] for k in ESTIMATORS})
    for N in batch_sizes:
        sums = dict.fromkeys(ESTIMATORS, 0.0)
        batches = n_episodes // N
        for b in range(batches):
            cols = slice(b * N, (b + 1) * N)
            t_max = int(lengths[cols].max())
            o, a, r, m = obs[:t_max, cols], actions[:t_max, cols], rewards[:t_max, cols], mask[:t_max, cols]
            with torch.no_grad():
                value = critic(o).squeeze(-1)
            for k, w in estimator_weights(r, m, value, args.gamma).items():
                sums[k] += float(rb.gradient_variance(rb.per_episode_gradients(policy, o, a, w)))
            # as reinforce_baseline.py's --baseline optimal: scores, then $g_i \odot (G(\tau_i) - b)$
            scores = -rb.per_episode_gradients(policy, o, a, m)
            G = rf.rewards_to_go(r, args.gamma)[0]
            sums["whole_optimal"] += float(
                rb.gradient_variance(-scores * (G[:, None] - rb.optimal_baseline(scores, G)))
            )
        for k in ESTIMATORS:
            out[k].append(sums[k] / batches)
    return out


# ## 3. Actor-Critic Methods: the critic's trade-off, GAE's lambda
def td0_critic(mdp, logits, n_episodes: int, step_size: float, seed: int) -> torch.Tensor:
    """A tabular $V_\\omega(t, s)$ learned by TD(0) from `n_episodes` episodes with actor_critic.py's `td_target`
    (Algorithm 2's critic update, with V in place of Q). Returns (H + 1, S), row H the terminal 0."""
    ac = load_script("actor_critic.py")
    H = mdp.horizon
    V = torch.zeros(H + 1, mdp.n_states, dtype=torch.float64)
    ep = sample_episodes(mdp, logits, n_episodes, torch.Generator().manual_seed(seed))
    for i in range(n_episodes):
        s = ep["states"][i].tolist()
        for t in range(H):
            last = t == H - 1
            next_value = after_the_end(V, s[t]) if last else V[t + 1, s[t + 1]]
            target = ac.td_target(ep["rewards"][i, t], next_value, float(last), mdp.gamma)
            V[t, s[t]] += step_size * (target - V[t, s[t]])
    return V


def after_the_end(V: torch.Tensor, s):
    """The value handed over for the step after the last one, where the episode terminated: the critic's
    $V(t = 0, s)$, what it would say of the env's final observation. Not 0, so that a `td_target` or `gae`
    that forgot the (1 - terminated) mask shows up as a biased gradient."""
    return V[0, s]


def gae_tradeoff(mdp, logits, lambdas, n_episodes: int, critic_episodes: int, critic_step: float = 0.1, seed: int = 0):
    """Bias and variance of the policy gradient $\\sum_t \\nabla_\\theta \\log \\pi(a_t|s_t) \\hat{A}_t$ with a2c.py's
    GAE($\\lambda$) advantages, against the exact gradient (built from the exact advantages $Q - V$), for two
    critics: the exact $V^\\pi$ and one learned by TD(0) from `critic_episodes` episodes (step size `critic_step`)."""
    a2c = load_script("a2c.py")
    H = mdp.horizon
    grad = exact_gradient(mdp, logits).flatten()
    Q, V_exact = exact_Q(mdp, logits), exact_V(mdp, logits)
    critics = {
        "exact": torch.cat([V_exact, torch.zeros(1, mdp.n_states, dtype=torch.float64)]),
        "td": td0_critic(mdp, logits, critic_episodes, critic_step, seed + 1),
    }
    ep = episodes(mdp, logits, n_episodes, seed)
    s, a = ep["states"], ep["actions"]
    t = torch.arange(H)
    s_next = torch.cat([s[:, 1:], s[:, -1:]], 1)
    terminated = np.zeros((H, n_episodes))
    terminated[-1] = 1.0

    def stats(advantages: torch.Tensor) -> dict:  # advantages (n, H) -> per-episode gradients
        return estimate_stats(torch.einsum("nhp,nh->np", ep["scores"], advantages), grad)

    exact_adv = Q[t, s, a] - V_exact[t, s]
    out = {"lambdas": [float(x) for x in lambdas], "exact_advantages": stats(exact_adv)}
    out["td_critic_error"] = float((critics["td"][:H] - V_exact).abs().max())
    for name, V in critics.items():
        values, next_values = V[t, s].T.numpy(), V[t + 1, s_next].T.numpy()
        next_values[-1] = after_the_end(V, s[:, -1]).numpy()
        rows = []
        for lam in lambdas:
            adv = a2c.gae(ep["rewards"].T.numpy(), values, next_values, terminated, terminated, mdp.gamma, float(lam))
            rows.append(stats(torch.from_numpy(adv).T))
        out[name] = rows
    out["n_episodes"] = n_episodes
    return out


# ## 4. Proximal Policy Optimization (PPO)
def ppo_clip_objective(ratios, clip_coef: float) -> dict:
    """$L^{CLIP}$ and its derivative in $r$, from ppo.py's `clipped_policy_loss` on one sample with
    $\\log\\pi_{old} = 0$, $\\log\\pi_\\theta = \\log r$ and $\\hat{A} = \\pm 1$ (the loss is $-L^{CLIP}$)."""
    ppo = load_script("ppo.py")
    out = {"ratio": [float(r) for r in ratios], "clip_coef": clip_coef}
    for name, adv in (("positive", 1.0), ("negative", -1.0)):
        values, slopes = [], []
        for r in ratios:
            log_r = torch.tensor([math.log(r)], dtype=torch.float64, requires_grad=True)
            loss, _, _ = ppo.clipped_policy_loss(
                log_r, torch.zeros(1, dtype=torch.float64), torch.tensor([adv]), clip_coef
            )
            (d_log_r,) = torch.autograd.grad(-loss, log_r)
            values.append(-float(loss.detach()))
            slopes.append(float(d_log_r) / r)  # $dL/dr = (dL/d\log r) / r$
        out[name] = {"objective": values, "slope": slopes}
    return out


PPO_FIELDS = ("total_timesteps", "num_envs", "num_steps", "update_epochs", "num_minibatches", "clip_coef")


def ppo_epochs(seed: int = 1, **overrides) -> dict:
    """A real ppo.py run (`train(Args(**overrides))`) with `clipped_policy_loss` watched: approx KL, clip
    fraction and the ratios' spread of every minibatch, grouped (update, epoch, minibatch)."""
    ppo = load_script("ppo.py")
    calls = []

    def record(original, arguments):
        result = original(**arguments)
        ratio = (arguments["new_log_prob"] - arguments["old_log_prob"]).detach().exp()
        quantiles = torch.quantile(ratio.double(), torch.tensor([0.05, 0.95], dtype=torch.float64))
        calls.append((float(result[1]), float(result[2]), *map(float, quantiles)))
        return result

    with around(ppo, "clipped_policy_loss", record):
        summary, _, tmp = train_quietly(ppo, seed=seed, **overrides)
        tmp.cleanup()
    args = ppo.Args(seed=seed, **overrides)
    per_update = args.update_epochs * args.num_minibatches
    if args.target_kl is not None or len(calls) % per_update:
        raise ValueError("ppo_epochs needs whole updates: no --target-kl early stop")
    table = torch.tensor(calls).view(-1, args.update_epochs, args.num_minibatches, 4)
    return {
        "args": {k: getattr(args, k) for k in PPO_FIELDS},
        "seed": seed,
        "approx_kl": table[..., 0].tolist(),
        "clip_frac": table[..., 1].tolist(),
        "ratio_low": table[..., 2].tolist(),
        "ratio_high": table[..., 3].tolist(),
        "eval_mean_return": float(summary["eval_mean_return"]),
    }


# ## 5. Trust Region Policy Optimization (TRPO)
def trpo_steps(deltas, seed: int = 1, **overrides) -> dict:
    """Real trpo.py runs, one per $\\delta$ (`--target-kl`), with its line search watched. Per update: the mean
    KL measured at the full step $\\beta s$ (before any backtracking), the quadratic model's $\\frac{1}{2} s^T F s$
    for that step (F from the run's own Fisher-vector product, damping taken off), the backtracks, and whether
    a step was accepted."""
    out = {"deltas": [float(d) for d in deltas], "seed": seed, "overrides": overrides}
    out["runs"] = [trpo_run(float(delta), seed, overrides) for delta in deltas]
    return out


def trpo_run(delta: float, seed: int, overrides: dict) -> list[dict]:
    """One trpo.py run with trust region `delta`; per update what `trpo_steps` describes."""
    trpo = load_script("trpo.py")
    fvps, rows = [], []

    def keep_fvp(original, arguments):
        fvp = original(**arguments)
        fvps.append((fvp, arguments["damping"]))
        return fvp

    def watch_line_search(original, arguments):
        params, step = arguments["params"], arguments["step"]
        fvp, damping = fvps[-1]
        model = 0.5 * float(step @ (fvp(step) - damping * step).detach())
        with torch.no_grad():
            old = torch.cat([p.reshape(-1) for p in params]).clone()
            trpo.set_flat_params(params, old + step)
            _, kl = arguments["surrogate_kl"]()
            trpo.set_flat_params(params, old)
        accepted, backtracks, step_kl, _ = result = original(**arguments)
        rows.append({
            "model": model, "kl": float(kl), "backtracks": int(backtracks), "accepted": bool(accepted),
            "accepted_kl": float(step_kl),
        })  # fmt: skip
        return result

    with around(trpo, "fisher_vector_product_fn", keep_fvp), around(trpo, "line_search", watch_line_search):
        _, _, tmp = train_quietly(trpo, seed=seed, target_kl=delta, eval_episodes=1, **overrides)
        tmp.cleanup()
    return rows


# ## 6. Importance Sampling
def importance_sampling(horizons, shifts, n_episodes: int, seed: int = 0) -> dict:
    """$J(\\theta)$ estimated from episodes of a behaviour policy $\\theta' = \\theta + \\kappa u$ (u a fixed unit
    direction) by $\\frac{1}{N}\\sum_i \\frac{p_\\theta(\\tau_i)}{p_{\\theta'}(\\tau_i)} G(\\tau_i)$, the ratio from trpo.py's
    `log_prob`; the distance is trpo.py's `kl_divergence` $KL(\\pi_{\\theta'} \\| \\pi_\\theta)$, averaged over states.
    Per horizon and shift: the estimate and its standard error at `n_episodes`, the per-episode variance
    relative to on-policy sampling, and the effective sample size $(\\sum w)^2 / \\sum w^2$ as a fraction of N."""
    trpo = load_script("trpo.py")
    out = {"shifts": [float(k) for k in shifts], "horizons": list(horizons), "n_episodes": n_episodes}
    for H in horizons:
        mdp, logits = tabular_problem(horizon=H, seed=seed)
        u = torch.randn(logits.shape, generator=torch.Generator().manual_seed(seed + 200), dtype=torch.float64)
        u = u / u.norm()
        on_policy = sample_episodes(mdp, logits, n_episodes, torch.Generator().manual_seed(seed + 300))
        var_on = float(on_policy["rewards"].sum(1).var())
        rows = []
        for i, kappa in enumerate(shifts):
            behaviour = logits + kappa * u
            ep = sample_episodes(mdp, behaviour, n_episodes, torch.Generator().manual_seed(seed + 300 + i))
            log_w = (
                trpo.log_prob(logits[ep["states"]], None, ep["actions"])
                - trpo.log_prob(behaviour[ep["states"]], None, ep["actions"])
            ).sum(1)
            w = log_w.exp()
            x = w * ep["rewards"].sum(1)
            rows.append({
                "kl": float(trpo.kl_divergence(behaviour, None, logits, None).mean()),
                "estimate": float(x.mean()),
                "se": float(x.std() / n_episodes**0.5),
                "variance_ratio": float(x.var()) / var_on,
                "ess": float(w.sum() ** 2 / w.pow(2).sum()) / n_episodes,
            })  # fmt: skip
        out[str(H)] = {"J": float(exact_J(mdp, logits)), "rows": rows}
    return out
