"""The claims read off docs/lecture_figures.md, at a small size: each test measures with
benchmarks/lecture_claims.py (the scripts' own functions) what one figure shows, and checks what the
page says it shows. A script whose math drifts from the slides turns one of these red."""

import numpy as np
import pytest
import torch

from benchmarks import lecture_claims as lc


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is several times faster than two on a busy machine (as the scripts' runs use)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def problem():
    return lc.tabular_problem()


def variances(stats: list[dict]) -> np.ndarray:
    return np.array([s["variance"] for s in stats])


def assert_unbiased(stats: list[dict], what: str):
    """Every parameter's mean within 4 standard errors of the exact gradient."""
    z = [s["z"] for s in stats]
    assert max(z) < 4, f"{what}: bias of {max(z):.1f} standard errors"


# ## 1. Finite Differences
def test_finite_differences_error_orders_and_the_noise(problem):
    """Exact J: forward error O(eps), central O(eps^2). Sampled J: independent episodes blow the error up as
    1/eps; common random numbers give g = 0 at a tiny eps; a moderate eps beats both extremes."""
    eps = [1e-6, 1e-3, 1e-2, 1e-1, 1.0]
    d = lc.finite_differences(*problem, eps, episodes_per_eval=200, repeats=2)
    n = problem[1].numel()
    assert (d["forward"]["evaluations"], d["central"]["evaluations"]) == (n + 1, 2 * n + 1)
    mid = slice(1, 4)
    assert lc.loglog_slope(eps[mid], d["forward"]["exact"][mid]) == pytest.approx(1.0, abs=0.1)
    assert lc.loglog_slope(eps[mid], d["central"]["exact"][mid]) == pytest.approx(2.0, abs=0.1)
    assert d["central"]["exact"][2] < d["forward"]["exact"][2] / 10
    g = d["grad_norm"]
    for k in ("forward", "central"):
        assert d[k]["independent"][0] > 100 * g > 100 * d[k]["independent"][-1], k
        assert d[k]["common"][0] == pytest.approx(g, rel=1e-9), k  # no sampled action changed: g = 0
        assert d[k]["common"][-1] < g / 2, k


# ## 2. The REINFORCE Algorithm, REINFORCE with Baseline
def test_reinforce_estimators_are_unbiased_and_baselines_cut_the_variance(problem):
    d = lc.reinforce_variance_mdp(*problem, batch_sizes=[4, 64], replicates=300, value_episodes=1000)
    for k in lc.ESTIMATORS:
        assert_unbiased(d[k], k)
    v = {k: variances(d[k]) for k in lc.ESTIMATORS}
    # at N = 64: causality, then the baselines, each lower
    assert v["whole"][1] > v["rtg"][1] > v["rtg_mean"][1] > v["rtg_value"][1]
    assert v["whole"][1] > 100 * v["whole_mean"][1]
    # the optimal baseline beats the mean baseline once N is large enough to estimate it, not at N = 4
    assert v["whole_optimal"][1] < 0.95 * v["whole_mean"][1]
    assert v["whole_optimal"][0] > 2 * v["whole_mean"][0]
    # variance of a mean of N episodes: 1/N
    assert v["whole"][0] / v["whole"][1] == pytest.approx(16, rel=0.3)


def test_cartpole_checkpoint_and_variance_order():
    """The mid-training policy and critic come back from reinforce_baseline.py's checkpoint; on CartPole too,
    rewards-to-go and the learned V(s) baseline lower Algorithm 1's variance."""
    d = lc.reinforce_variance_cartpole(train_steps=4000, n_episodes=48, batch_sizes=[8, 24])
    assert d["parameters"] > 100 and d["mean_length"] > 9
    for i in range(2):
        assert d["whole"][i] > d["rtg"][i] > d["rtg_value"][i], i


def test_load_matching_finds_the_state_in_either_layout():
    net, other = torch.nn.Linear(3, 2), torch.nn.Linear(3, 1)
    state = {k: v + 1 for k, v in net.state_dict().items()}
    for checkpoint in (
        {"policy": state, "critic": other.state_dict()},
        {"critic": other.state_dict(), "meta": {}, "actor": state},
    ):
        fresh = torch.nn.Linear(3, 2)
        assert lc.load_matching(fresh, checkpoint)
        assert torch.equal(fresh.weight, state["weight"])
    assert not lc.load_matching(torch.nn.Linear(3, 2), {"critic": other.state_dict(), "args": {"seed": 1}})


# ## 3. Actor-Critic Methods
def test_gae_lambda_trades_the_critics_bias_for_variance():
    mdp, logits = lc.tabular_problem(horizon=8)
    d = lc.gae_tradeoff(mdp, logits, [0.0, 0.5, 1.0], n_episodes=20_000, critic_episodes=1000)
    exact, td = d["exact"], d["td"]
    assert_unbiased(exact, "exact critic")
    assert variances(exact)[0] < variances(exact)[1] < variances(exact)[2]
    assert d["td_critic_error"] > 0.3  # a critic worth the name, not the truth
    bias = [s["bias"] for s in td]
    assert bias[0] > bias[1] > bias[2] and bias[0] > 10 * td[0]["noise"]
    assert_unbiased(td[2:], "lambda = 1 with a learned critic")


# ## 4. Proximal Policy Optimization (PPO)
def test_clip_objective_is_flat_outside_the_band_on_the_advantages_side():
    eps = 0.2
    r = np.linspace(0.5, 1.5, 41)
    d = lc.ppo_clip_objective(r, eps)
    pos, neg = (np.array(d[k]["slope"]) for k in ("positive", "negative"))
    inside, above, below = r < 1 + eps - 1e-9, r > 1 + eps + 1e-9, r < 1 - eps - 1e-9
    assert np.allclose(pos[inside], 1.0) and np.allclose(pos[above], 0.0)
    assert np.allclose(neg[below], 0.0) and np.allclose(neg[~below & (r > 1 - eps + 1e-9)], -1.0)
    assert np.allclose(d["positive"]["objective"], np.minimum(r, 1 + eps))
    assert np.allclose(d["negative"]["objective"], -np.maximum(r, 1 - eps))


def test_ppo_update_starts_at_old_policy_and_drifts_epoch_by_epoch():
    d = lc.ppo_epochs(seed=1, total_timesteps=768, num_envs=4, num_steps=64, update_epochs=6, num_minibatches=2)
    kl, cf = np.array(d["approx_kl"]), np.array(d["clip_frac"])
    assert kl.shape == cf.shape == (3, 6, 2)
    assert np.all(kl[:, 0, 0] == 0) and np.all(cf[:, 0, 0] == 0)  # theta = theta_old at the first minibatch
    assert np.all(kl >= 0)
    per_epoch = kl.mean((0, 2))
    assert per_epoch[-1] > 5 * per_epoch[0] and cf.mean((0, 2))[-1] > 0


# ## 5. Trust Region Policy Optimization (TRPO)
def test_trpo_kl_follows_its_quadratic_model_for_small_steps():
    d = lc.trpo_steps([0.001, 1.0], seed=1, total_timesteps=768, num_envs=4, num_steps=64)
    small, large = d["runs"]
    assert len(small) == 3
    for x in small:
        assert x["kl"] / x["model"] == pytest.approx(1.0, abs=0.05)
        assert 0 < x["model"] <= 0.001  # damping: the undamped model is below delta
        assert x["accepted"] and x["backtracks"] == 0
    ratios = lambda rows: [abs(x["kl"] / x["model"] - 1) for x in rows]  # noqa: E731
    assert max(ratios(large)) > 2 * max(ratios(small))


def test_trpo_line_search_backtracks_whenever_the_full_step_leaves_the_region():
    """With little damping the full step overshoots delta; the line search catches every overshoot."""
    delta = 1.0
    (rows,) = lc.trpo_steps([delta], seed=1, total_timesteps=768, num_envs=4, num_steps=64, cg_damping=0.01)["runs"]
    overshoots = [x for x in rows if x["kl"] > delta]
    assert overshoots, "no full step left the trust region: the check below would be empty"
    assert all(x["backtracks"] > 0 for x in overshoots)
    assert all(x["accepted_kl"] <= delta for x in rows if x["accepted"])


# ## 6. Importance Sampling
def test_importance_weights_unbiased_but_noisier_as_policies_part():
    d = lc.importance_sampling([2, 5], [0.0, 0.5, 1.0, 1.5], n_episodes=5000)
    for H in ("2", "5"):
        rows, J = d[H]["rows"], d[H]["J"]
        assert rows[0]["kl"] == 0 and rows[0]["ess"] == 1.0
        for x in rows:
            assert abs(x["estimate"] - J) < 4 * x["se"], (H, x)
        kl, ratio, ess = ([x[k] for x in rows] for k in ("kl", "variance_ratio", "ess"))
        for increasing in (kl, ratio, [-e for e in ess]):
            assert all(a < b for a, b in zip(increasing, increasing[1:])), (H, increasing)
    for short, long in zip(d["2"]["rows"][1:], d["5"]["rows"][1:]):
        assert long["variance_ratio"] > short["variance_ratio"] and long["ess"] < short["ess"]


# ## The page
def test_the_page_shows_every_figure_with_its_slide_and_the_site_carries_it(tmp_path):
    pytest.importorskip("markdown_it", reason="markdown-it-py is not installed: pip install -r requirements-dev.txt")
    from benchmarks.lecture_figures import FIGURE_LIST, PAGE
    from docs.build import FIGURES_HTML, figures_page, index_page
    from tests.helpers import ROOT

    text = PAGE.read_text()
    for fig in FIGURE_LIST:
        assert f"(figures/{fig.name}.png)" in text and f"*Slide: {fig.slide}." in text, fig.name
        assert f"`python benchmarks/lecture_figures.py --only {fig.name}" in text, fig.name
    assert figures_page(ROOT / "docs", tmp_path)  # every $...$ survives Markdown, or this raises
    html = (tmp_path / FIGURES_HTML).read_text()
    for fig in FIGURE_LIST:
        assert f'src="figures/{fig.name}.png"' in html and (tmp_path / "figures" / f"{fig.name}.png").is_file()
    assert f'href="{FIGURES_HTML}"' in index_page([], figures=True)
    assert "(docs/lecture_figures.md)" in (ROOT / "README.md").read_text()
