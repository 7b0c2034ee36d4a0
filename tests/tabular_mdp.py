"""A tiny finite-horizon tabular MDP where everything about a softmax policy is exact.

The policy is $\\pi(a|s;\\theta) = \\text{softmax}(\\theta_s)_a$ with logits $\\theta$ of shape (S, A),
the same at every step. Dynamic programming over the horizon H gives the time-indexed
$Q^\\pi_t(s,a)$, $V^\\pi_t(s)$ and $J(\\theta) = \\sum_s p(s_1) V^\\pi_0(s)$; autograd through that
recursion gives the exact policy gradient $\\nabla_\\theta J(\\theta)$, against which the tests
check the Monte-Carlo estimators of the scripts (fed with `sample_episodes`). With $\\gamma < 1$,
`exact_gradient_terms` splits it step by step, so that an estimator that drops the factor
$\\gamma^t$ of step t (the rewards-to-go $G_t$ do) has an exact target too, distinct from $\\nabla_\\theta J$.

Shapes: time runs along the first axis inside the recursion, `sample_episodes` returns
(n, H) tensors (episode, time); `.T` gives the (T, N) layout the scripts' buffers use.
"""

from dataclasses import dataclass

import torch


@dataclass
class TabularMDP:
    n_states: int
    n_actions: int
    horizon: int
    p0: torch.Tensor
    """(S,) initial state distribution $p(s_1)$"""
    P: torch.Tensor
    """(S, A, S) transition probabilities $p(s'|s,a)$"""
    R: torch.Tensor
    """(S, A) expected reward $r(s,a)$ (rewards are deterministic here)"""
    gamma: float = 1.0

    @classmethod
    def random(cls, n_states: int = 3, n_actions: int = 2, horizon: int = 4, seed: int = 0, gamma: float = 1.0):
        g = torch.Generator().manual_seed(seed)
        p0 = torch.softmax(torch.randn(n_states, generator=g, dtype=torch.float64), 0)
        P = torch.softmax(2.0 * torch.randn(n_states, n_actions, n_states, generator=g, dtype=torch.float64), -1)
        # Positive rewards (as in CartPole), so that a baseline has something to remove.
        R = 1.0 + torch.rand(n_states, n_actions, generator=g, dtype=torch.float64)
        return cls(n_states, n_actions, horizon, p0, P, R, gamma)


def policy_probs(logits: torch.Tensor) -> torch.Tensor:
    """$\\pi(a|s)$ as an (S, A) matrix."""
    return torch.softmax(logits, dim=-1)


def exact_Q(mdp: TabularMDP, logits: torch.Tensor) -> torch.Tensor:
    """(H, S, A): $Q_t(s,a) = r(s,a) + \\gamma \\sum_{s'} p(s'|s,a) V_{t+1}(s')$, $V_H = 0$."""
    pi = policy_probs(logits)
    v_next = torch.zeros(mdp.n_states, dtype=logits.dtype)
    qs = []
    for _ in range(mdp.horizon):
        q = mdp.R + mdp.gamma * mdp.P @ v_next
        qs.append(q)
        v_next = (pi * q).sum(-1)
    return torch.stack(qs[::-1])


def exact_V(mdp: TabularMDP, logits: torch.Tensor) -> torch.Tensor:
    """(H, S): $V_t(s) = \\sum_a \\pi(a|s) Q_t(s,a)$."""
    return (policy_probs(logits) * exact_Q(mdp, logits)).sum(-1)


def exact_J(mdp: TabularMDP, logits: torch.Tensor) -> torch.Tensor:
    """$J(\\theta) = \\mathbb{E}[\\sum_{t} \\gamma^t r_t] = \\sum_s p(s_1) V_0(s)$, differentiable in `logits`."""
    return mdp.p0 @ exact_V(mdp, logits)[0]


def exact_gradient(mdp: TabularMDP, logits: torch.Tensor) -> torch.Tensor:
    """(S, A): $\\nabla_\\theta J(\\theta)$ by autograd through the dynamic programme."""
    theta = logits.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(exact_J(mdp, theta), theta)
    return grad


def exact_state_distribution(mdp: TabularMDP, logits: torch.Tensor) -> torch.Tensor:
    """(H, S): $d_t(s) = P(s_t = s)$ under the policy, $d_0 = p(s_1)$."""
    pi = policy_probs(logits)
    d, ds = mdp.p0.to(logits.dtype), []
    for _ in range(mdp.horizon):
        ds.append(d)
        d = torch.einsum("s,sa,sap->p", d, pi, mdp.P)
    return torch.stack(ds)


def exact_gradient_terms(mdp: TabularMDP, logits: torch.Tensor) -> torch.Tensor:
    """(H, S, A): term t of the policy gradient theorem, $\\mathbb{E}_{s_t \\sim d_t}[\\sum_a \\nabla_\\theta \\pi(a|s_t) Q_t(s_t, a)]$.

    $\\sum_t \\gamma^t$ term$_t$ is $\\nabla_\\theta J(\\theta)$ (`exact_gradient`). The plain sum $\\sum_t$ term$_t$
    drops the factor $\\gamma^t$: it is what weighting step t by the rewards-to-go $G_t$ estimates
    when $\\gamma < 1$. The two agree for $\\gamma = 1$.
    """
    d, Q = exact_state_distribution(mdp, logits.detach()), exact_Q(mdp, logits.detach())
    terms = []
    for t in range(mdp.horizon):
        theta = logits.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((d[t, :, None] * policy_probs(theta) * Q[t]).sum(), theta)
        terms.append(grad)
    return torch.stack(terms)


def sample_episodes(mdp: TabularMDP, logits: torch.Tensor, n: int, generator: torch.Generator) -> dict:
    """n episodes of H steps under the softmax policy: states, actions (long), rewards, each (n, H)."""
    pi = policy_probs(logits.detach())
    states = torch.empty(n, mdp.horizon, dtype=torch.long)
    actions = torch.empty(n, mdp.horizon, dtype=torch.long)
    s = torch.multinomial(mdp.p0.expand(n, -1), 1, generator=generator).squeeze(-1)
    for t in range(mdp.horizon):
        a = torch.multinomial(pi[s], 1, generator=generator).squeeze(-1)
        states[:, t], actions[:, t] = s, a
        s = torch.multinomial(mdp.P[s, a], 1, generator=generator).squeeze(-1)
    return {"states": states, "actions": actions, "rewards": mdp.R[states, actions]}


def log_probs(logits: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """$\\log \\pi(a_t|s_t;\\theta)$ with the shape of `states`, differentiable in `logits`."""
    return torch.log_softmax(logits, -1)[states, actions]


def score(logits: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(..., S, A): $\\nabla_\\theta \\log \\pi(a_t|s_t;\\theta) = e_{s_t} (e_{a_t} - \\pi(\\cdot|s_t))^\\top$, closed form."""
    S, A = logits.shape
    pi = policy_probs(logits.detach())
    row = torch.nn.functional.one_hot(actions, A).to(pi.dtype) - pi[states]
    return torch.nn.functional.one_hot(states, S).to(pi.dtype).unsqueeze(-1) * row.unsqueeze(-2)


def mean_and_stderr(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-component mean and standard error of i.i.d. samples along the first axis."""
    return samples.mean(0), samples.std(0) / samples.shape[0] ** 0.5
