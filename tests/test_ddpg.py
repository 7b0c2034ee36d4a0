"""ddpg.py's math, each piece against a second computation of the same thing; then the wiring of
`train`, recorded on fake envs and checked step by step against the slides."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from tests.fake_envs import BanditEnv, ClockEnv
from tests.helpers import load_script, make_args, train_in

ddpg = load_script("ddpg.py")
LOW, HIGH = np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32)


@pytest.mark.grades("polyak_update")
def test_polyak_update_matches_the_formula():
    torch.manual_seed(0)
    online, target = ddpg.Critic(3, 2, 8), ddpg.Critic(3, 2, 8)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ddpg.polyak_update(target, online, 0.1)
    for name, value in target.state_dict().items():
        expected = 0.1 * online.state_dict()[name] + 0.9 * before[name]
        torch.testing.assert_close(value, expected)
    ddpg.polyak_update(target, online, 1.0)  # tau = 1: a hard copy
    for name, value in target.state_dict().items():
        torch.testing.assert_close(value, online.state_dict()[name], rtol=0, atol=0)


@pytest.mark.grades("td_target")
def test_td_target_bootstraps_on_truncation_and_not_on_termination():
    # Three transitions: mid-episode, terminated, truncated (stored as terminated = 0).
    rewards, terminated = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 0.0])
    next_q = torch.tensor([10.0, 20.0, 30.0])
    y = ddpg.td_target(rewards, terminated, next_q, 0.9)
    assert y.tolist() == pytest.approx([1.0 + 0.9 * 10.0, 2.0, 3.0 + 0.9 * 30.0])


class CounterEnv(gym.Env):
    """Observation = steps taken in the episode; never terminates, so only time limits end it."""

    observation_space = gym.spaces.Box(0.0, 100.0, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], dtype=np.float32), 1.0, False, False, {}


@pytest.mark.grades("true_next_obs")
def test_stored_next_obs_is_the_true_final_one():
    thunks = [lambda k=k: gym.wrappers.TimeLimit(CounterEnv(), max_episode_steps=3 + k) for k in range(2)]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.reset(seed=0)
    seen = []
    for _ in range(4):
        next_obs, _, _, truncated, info = envs.step(np.zeros((2, 1), dtype=np.float32))
        seen.append((ddpg.true_next_obs(next_obs, info)[:, 0].tolist(), truncated.tolist(), next_obs[:, 0].tolist()))
    # Env 0 is truncated at its 3rd step, env 1 at its 4th: s_{t+1} is 3 and 4, not the reset's 0.
    assert seen[2] == ([3.0, 3.0], [True, False], [0.0, 3.0])
    assert seen[3] == ([1.0, 4.0], [False, True], [1.0, 0.0])
    envs.close()


def fill(buffer, markers, num_envs=1):
    """Add transitions whose every field holds its marker value, `num_envs` at a time."""
    for start in range(0, len(markers), num_envs):
        m = np.asarray(markers[start : start + num_envs], dtype=np.float64)
        col = m[:, None]
        buffer.add(np.repeat(col, 3, 1), np.repeat(col, 2, 1), m, np.repeat(-col, 3, 1), m % 2)


@pytest.mark.grades("ReplayBuffer.__init__", "ReplayBuffer.add")
def test_replay_buffer_wraps_around():
    rb = ddpg.ReplayBuffer(5, 3, 2, torch.device("cpu"))
    fill(rb, range(7))
    assert (rb.pos, rb.size) == (2, 5)
    assert rb.rewards[:, 0].tolist() == [5, 6, 2, 3, 4]
    assert rb.next_obs[:, 0].tolist() == [-5, -6, -2, -3, -4] and rb.terminated[:, 0].tolist() == [1, 0, 0, 1, 0]
    rb = ddpg.ReplayBuffer(4, 3, 2, torch.device("cpu"))
    fill(rb, range(6), num_envs=3)  # a vector step that crosses the end of the ring
    assert (rb.pos, rb.size) == (2, 4) and rb.actions[:, 1].tolist() == [4, 5, 2, 3]


@pytest.mark.grades("ReplayBuffer.__init__", "ReplayBuffer.add", "ReplayBuffer.sample")
def test_replay_buffer_samples_only_filled_rows_with_fields_aligned():
    rb = ddpg.ReplayBuffer(100, 3, 2, torch.device("cpu"))
    fill(rb, [1, 2, 3])
    torch.manual_seed(0)
    obs, actions, rewards, next_obs, terminated = rb.sample(600)
    assert set(rewards.tolist()) == {1.0, 2.0, 3.0}
    shapes = [(600, 3), (600, 2), (600,), (600, 3), (600,)]
    for x, shape in zip([obs, actions, rewards, next_obs, terminated], shapes):
        assert x.dtype == torch.float32 and tuple(x.shape) == shape
    torch.testing.assert_close(obs, rewards[:, None].expand(600, 3))
    torch.testing.assert_close(actions, rewards[:, None].expand(600, 2))
    torch.testing.assert_close(next_obs, -obs)
    torch.testing.assert_close(terminated, rewards % 2)


@pytest.mark.grades("actor_loss")
def test_actor_gradient_is_grad_a_q_times_grad_theta_pi():
    torch.manual_seed(1)
    actor, critic = ddpg.Actor(3, 2, 4, LOW, HIGH), ddpg.Critic(3, 2, 4)
    obs = torch.randn(5, 3)
    params = list(actor.parameters())
    auto = torch.autograd.grad(ddpg.actor_loss(actor, critic, obs), params)
    # By hand: for each state, grad_a Q at a = pi(s) (a leaf, so no path into theta), then the
    # chain rule with the Jacobian d pi_j / d theta, one output dimension j at a time.
    manual = [torch.zeros_like(p) for p in params]
    for s in obs:
        a = actor(s).detach().requires_grad_(True)
        (grad_a,) = torch.autograd.grad(critic(s, a), a)
        for j in range(2):
            for m, g in zip(manual, torch.autograd.grad(actor(s)[j], params)):
                m -= grad_a[j] * g / len(obs)  # the loss is -mean Q
    for a_grad, m_grad in zip(auto, manual):
        torch.testing.assert_close(a_grad, m_grad)


@pytest.mark.grades("Actor.__init__", "Actor.forward")
def test_actor_stays_inside_the_box():
    torch.manual_seed(2)
    actor = ddpg.Actor(3, 2, 8, LOW, HIGH)
    with torch.no_grad():
        actor.net[-1].weight.mul_(1000.0)  # saturate the tanh
        a = actor(torch.randn(1000, 3))
    assert (a >= torch.from_numpy(LOW)).all() and (a <= torch.from_numpy(HIGH)).all()
    assert a[:, 1].min() < 0.01 and a[:, 1].max() > 0.99


@pytest.mark.grades("explore")
def test_exploration_noise_is_independent_per_dimension_and_scaled():
    rng = np.random.default_rng(0)
    std = np.array([0.1, 2.0], dtype=np.float32)
    a = ddpg.explore(np.zeros((20_000, 2), dtype=np.float32), std, -100.0, 100.0, rng)
    np.testing.assert_allclose(a.std(0), std, rtol=0.03)
    assert abs(np.corrcoef(a.T)[0, 1]) < 0.03  # one draw shared by all dimensions would give 1
    clipped = ddpg.explore(np.zeros((1000, 2), dtype=np.float32), std, LOW, HIGH, rng)
    assert (clipped >= LOW).all() and (clipped <= HIGH).all() and clipped.dtype == np.float32


def test_evaluation_adds_no_noise():
    torch.manual_seed(3)
    env = gym.make("Pendulum-v1")
    actor = ddpg.Actor(3, 1, 8, env.action_space.low, env.action_space.high)
    run = ddpg.Run(make_args(ddpg, env_id="Pendulum-v1", eval_episodes=2, seed=7), "ddpg", (gym.spaces.Box,))
    first = ddpg.evaluate(actor, run)
    torch.manual_seed(99), np.random.seed(99)
    assert ddpg.evaluate(actor, run) == first
    # The same episodes, acting with pi(s) itself.
    for episode, expected in enumerate(first):
        obs, _ = env.reset(seed=7 + 10_000 + episode)
        total, done = 0.0, False
        while not done:
            with torch.no_grad():
                action = actor(torch.as_tensor(obs)).numpy()
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        assert total == pytest.approx(expected, abs=1e-9)


@pytest.mark.grades("train")
def test_q_learns_the_infinite_horizon_value_through_time_limits(tmp_path):
    # Reward 1 forever, cut every 5 steps by a time limit: Q = 1 / (1 - gamma) = 2 for gamma = 0.5.
    # Treating truncation as termination would give 1 / (1 - 0.5 * 4/5) = 1.67 instead.
    summary, run_dir = train_in(
        tmp_path, ddpg, env_id="tests.fake_envs:ConstantRewardBox-v0", gamma=0.5, tau=0.1, total_timesteps=800,
        learning_starts=50, batch_size=32, learning_rate=3e-3, eval_episodes=1, save_model=True, seed=0,
    )  # fmt: skip
    saved = torch.load(next(run_dir.glob("*.pt")), weights_only=True)
    critic = ddpg.Critic(2, 1, 64)
    critic.load_state_dict(saved["critic"])
    with torch.no_grad():
        q = critic(torch.tensor([[0.5, -0.5]]).expand(21, 2), torch.linspace(-1, 1, 21)[:, None])
    np.testing.assert_allclose(q.numpy(), 2.0, atol=0.08)


@pytest.mark.grades("train")
def test_nan_reward_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="global_step=\\d+"):
        train_in(tmp_path, ddpg, env_id="tests.fake_envs:NaNRewardBox-v0", total_timesteps=200, learning_starts=10)


def test_model_of_another_env_is_refused(tmp_path):
    _, run_dir = train_in(tmp_path, ddpg, env_id="tests.fake_envs:ConstantRewardBox-v0", total_timesteps=60,
                          learning_starts=50, eval_episodes=1, save_model=True)  # fmt: skip
    model = str(next(run_dir.glob("*.pt")))
    with pytest.raises(ddpg.ArgError, match="model-path"):
        train_in(tmp_path, ddpg, env_id="Pendulum-v1", total_timesteps=0, model_path=model)


# ## The wiring of `train`: what the loop feeds the math
# One recorded run on ClockBox, where every observation tells the step apart, episodes alternate between
# termination at (3, 0) and truncation at (5, 1), and r_t = t + 1. The hooks note, in order, every env
# step, every transition stored, every minibatch drawn, every exploration and every optimizer step, each
# with a copy of all four networks' parameters at that moment; the tests recompute each from the slides.
CLOCK_ARGS = dict(
    env_id="tests.fake_envs:ClockBox-v0", num_envs=2, total_timesteps=40, learning_starts=10, batch_size=16,
    policy_frequency=2, gamma=0.9, tau=0.3, learning_rate=0.01, hidden_size=16, exploration_noise=0.3,
    eval_episodes=1,
)  # fmt: skip


def copied(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (list, tuple)):
        return type(x)(copied(v) for v in x)
    return x.copy() if isinstance(x, np.ndarray) else x


class Timeline:
    """What `train` did, in order: `events` of `(kind, data, params)`, `params` a copy of every network's."""

    def __init__(self, monkeypatch, keep_params: bool = True):
        self.events, self.keep_params = [], keep_params
        self.nets = []  # every Actor and Critic that train builds, in order
        for cls in (ddpg.Actor, ddpg.Critic):
            self.hook(monkeypatch, cls, "__init__", lambda args, result: self.nets.append(args[0]))
        note = self.note
        self.hook(monkeypatch, gym.vector.SyncVectorEnv, "step", lambda args, result: note("step", (args[1], result)))
        self.hook(monkeypatch, ddpg.ReplayBuffer, "add", lambda args, result: note("add", args[1:]))
        self.hook(monkeypatch, ddpg.ReplayBuffer, "sample", lambda args, result: note("sample", result))
        self.hook(monkeypatch, ddpg, "explore", lambda args, result: note("explore", (*args[:4], result)))

    @staticmethod
    def hook(monkeypatch, owner, name, after):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            after(args, result)
            return result

        monkeypatch.setattr(owner, name, wrapper)

    def params(self):
        return [[p.detach().clone() for p in net.parameters()] for net in self.nets]

    def note(self, kind, data):
        self.events.append((kind, copied(data), self.params() if self.keep_params else None))

    def before_step(self, optimizer, args, kwargs):
        """Torch's global optimizer hook: which network is stepped, its gradients, all parameters before."""
        ids = [id(p) for group in optimizer.param_groups for p in group["params"]]
        owners = [i for i, net in enumerate(self.nets) if [id(p) for p in net.parameters()] == ids]
        assert len(owners) == 1, "an optimizer must step exactly the parameters of one network"
        grads = [p.grad.clone() for group in optimizer.param_groups for p in group["params"]]
        self.stepping = "actor_step" if isinstance(self.nets[owners[0]], ddpg.Actor) else "critic_step"
        self.note(self.stepping, (owners[0], grads))

    def after_step(self, optimizer, args, kwargs):
        self.note("after_" + self.stepping, None)

    def of(self, kind):
        return [(data, params) for k, data, params in self.events if k == kind]

    def roles(self) -> dict[str, int]:
        """Online nets are the ones an optimizer steps; targets the other Actor and Critic."""
        online = {data[0] for k, data, _ in self.events if k in ("actor_step", "critic_step")}
        actors = [i for i, net in enumerate(self.nets) if isinstance(net, ddpg.Actor)]
        critics = [i for i, net in enumerate(self.nets) if isinstance(net, ddpg.Critic)]
        assert len(actors) == len(critics) == 2 and len(online) == 2, "one online and one target net of each"
        (actor,), (critic,) = set(actors) & online, set(critics) & online
        (actor_target,), (critic_target,) = set(actors) - online, set(critics) - online
        return dict(actor=actor, critic=critic, actor_target=actor_target, critic_target=critic_target)

    def call(self, index, params, *inputs):
        """Network `index` evaluated with the parameter tensors `params` in place of its own."""
        names = [name for name, _ in self.nets[index].named_parameters()]
        return torch.func.functional_call(self.nets[index], dict(zip(names, params)), inputs)


def run_recorded(tmp_path, keep_params: bool = True, **overrides) -> Timeline:
    with pytest.MonkeyPatch.context() as monkeypatch:
        timeline = Timeline(monkeypatch, keep_params)
        hooks = [
            register_optimizer_step_pre_hook(timeline.before_step),
            register_optimizer_step_post_hook(timeline.after_step),
        ]
        try:
            timeline.summary, _ = train_in(tmp_path, ddpg, **overrides)
        finally:
            for handle in hooks:
                handle.remove()
    return timeline


@pytest.fixture(scope="module")
def clock_run(tmp_path_factory) -> Timeline:
    return run_recorded(tmp_path_factory.mktemp("clock"), **CLOCK_ARGS)


@pytest.fixture(scope="module")
def annealed_clock_run(tmp_path_factory) -> Timeline:
    return run_recorded(tmp_path_factory.mktemp("annealed"), **CLOCK_ARGS, anneal_lr=True)


def clock_transitions(steps: int) -> list[tuple]:
    """$(s_t, r_t, s_{t+1}, \\text{terminated}_t)$ of one Clock env, from its rules alone."""
    rows, t, k = [], 0, 0
    for _ in range(steps):
        end = ClockEnv.TERMINATE_AT if k % 2 == 0 else ClockEnv.TRUNCATE_AT
        rows.append(((t, k % 2), t + 1, (t + 1, k % 2), k % 2 == 0 and t + 1 == end))
        t, k = (0, k + 1) if t + 1 == end else (t + 1, k)
    return rows


@pytest.mark.grades("train")
def test_buffer_stores_each_step_with_its_true_next_obs_and_termination(clock_run):
    """Catches s_{t+1} stored as the reset obs, truncation stored as termination (or termination dropped),
    and obs, actions or rewards stored a step off."""
    adds, steps = clock_run.of("add"), clock_run.of("step")
    num_envs = CLOCK_ARGS["num_envs"]
    assert len(adds) == len(steps) == CLOCK_ARGS["total_timesteps"] // num_envs
    expected = clock_transitions(len(adds))
    assert any(row[3] for row in expected) and (5, 1) in [row[2] for row in expected]  # both kinds of end
    for (stored, _), ((stepped, _), _), (s, r, s_next, term) in zip(adds, steps, expected):
        obs, actions, rewards, next_obs, terminated = stored
        np.testing.assert_array_equal(obs, [s] * num_envs)  # every env of the vector runs the same clock
        np.testing.assert_array_equal(actions, stepped)
        np.testing.assert_array_equal(rewards, [r] * num_envs)
        np.testing.assert_array_equal(next_obs, [s_next] * num_envs)
        np.testing.assert_array_equal(terminated, [term] * num_envs)


def expected_schedule(total_timesteps, num_envs, learning_starts, policy_frequency, **_) -> str:
    """Per vector step: X (explore, once the random phase is over), E (env step), D (store in D); then, past
    learning_starts, one S (sample) and C (critic step) per env, and an A (actor step) every policy_frequency."""
    out, global_step, updates = [], 0, 0
    while global_step < total_timesteps:
        out.append("ED" if global_step < learning_starts else "XED")
        global_step += num_envs
        for _ in range(num_envs if global_step > learning_starts else 0):
            updates += 1
            out.append("SCA" if updates % policy_frequency == 0 else "SC")
    return "".join(out)


@pytest.mark.grades("train")
def test_acting_and_learning_follow_learning_starts_and_policy_frequency(clock_run):
    """Catches an update or the actor's action before learning_starts, an update per vector step instead
    of per env, or the actor and the targets updated at every critic step despite policy_frequency."""
    letters = {"explore": "X", "step": "E", "add": "D", "sample": "S", "critic_step": "C", "actor_step": "A"}
    schedule = "".join(letters.get(kind, "") for kind, _, _ in clock_run.events)
    assert schedule == expected_schedule(**CLOCK_ARGS)


def updates(timeline: Timeline):
    """Per critic step: the minibatch, the critic's (index, gradients, parameters before), and the same for
    the actor step that follows it, or None."""
    out, batch = [], None
    for kind, data, params in timeline.events:
        if kind == "sample":
            batch = data
        elif kind == "critic_step":
            out.append([batch, (*data, params), None])
        elif kind == "actor_step":
            out[-1][2] = (*data, params)
    return out


def leaves(params):
    return [p.clone().requires_grad_(True) for p in params]


def assert_grads_equal(recorded, expected):
    for got, want in zip(recorded, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.grades("train")
def test_critic_descends_the_squared_td_error_to_the_target_networks(clock_run):
    """Catches a TD target from the online actor or critic, (1 - terminated) or gamma dropped, s_t and
    s_{t+1} swapped, the loss ascended or scaled, or gradients left to accumulate."""
    role, gamma = clock_run.roles(), CLOCK_ARGS["gamma"]
    for (obs, actions, rewards, next_obs, terminated), (critic, grads, params), _ in updates(clock_run):
        assert critic == role["critic"] and len(rewards) == CLOCK_ARGS["batch_size"]
        # $y_t = r_t + \gamma (1 - \text{terminated}_t) Q(s_{t+1}, \pi(s_{t+1};\theta^-);\phi^-)$
        with torch.no_grad():
            next_actions = clock_run.call(role["actor_target"], params[role["actor_target"]], next_obs)
            next_q = clock_run.call(role["critic_target"], params[role["critic_target"]], next_obs, next_actions)
        y = rewards + gamma * (1.0 - terminated) * next_q
        phi = leaves(params[critic])
        loss = ((clock_run.call(critic, phi, obs, actions) - y) ** 2).mean()
        assert_grads_equal(grads, torch.autograd.grad(loss, phi))


@pytest.mark.grades("train")
def test_actor_ascends_the_online_critic_at_pi_of_s_t(clock_run):
    """Catches a negated actor loss, the target critic or target actor in it, s_{t+1} in place of s_t, or
    an action detached from the actor (no gradient reaching theta)."""
    role = clock_run.roles()
    steps = [(batch, actor_step) for batch, _, actor_step in updates(clock_run) if actor_step is not None]
    assert steps
    for (obs, *_), (actor, grads, params) in steps:
        assert actor == role["actor"]
        theta = leaves(params[actor])
        # $-\hat{\mathbb{E}}[Q(s_t, \pi(s_t;\theta);\phi)]$, with the critic as it is after its own step
        loss = -clock_run.call(role["critic"], params[role["critic"]], obs, clock_run.call(actor, theta, obs)).mean()
        assert_grads_equal(grads, torch.autograd.grad(loss, theta))


def assert_params_equal(got, want, rtol=0.0, atol=0.0):
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.grades("train")
def test_targets_start_as_copies_and_follow_by_polyak_after_each_actor_step(clock_run):
    """Catches tau and 1 - tau swapped, Polyak toward the wrong network, at every critic step, or skipped for
    one of the two targets, and targets that do not start as copies of the online networks."""
    role, tau = clock_run.roles(), CLOCK_ARGS["tau"]
    first = clock_run.of("step")[0][1]
    expected = {"actor_target": first[role["actor"]], "critic_target": first[role["critic"]]}
    for kind, _, params in clock_run.events:
        for name in expected:
            assert_params_equal(params[role[name]], expected[name], rtol=1e-5, atol=1e-6)
        if kind == "after_actor_step":
            # $\theta^- \leftarrow \tau\theta + (1-\tau)\theta^-$ and $\phi^- \leftarrow \tau\phi + (1-\tau)\phi^-$
            for name in expected:
                online = params[role[name.removesuffix("_target")]]
                expected[name] = [tau * o + (1 - tau) * t for o, t in zip(online, expected[name])]


@pytest.mark.parametrize("run_name", ["clock_run", "annealed_clock_run"])
@pytest.mark.grades("train")
def test_each_optimizer_step_is_adam_descending_its_own_networks_gradient(run_name, request):
    """Catches the actor step changing the critic or the critic step the actor, an online net pulled toward
    its target, a wrong learning rate, or a step up the loss instead of down; with `--anneal-lr`, a step size
    not alpha (1 - (k - 1) / K) in vector step k of K (off by one step, one optimizer left out, or not annealed)."""
    run = request.getfixturevalue(run_name)
    role, annealed = run.roles(), run_name == "annealed_clock_run"
    num_iterations = CLOCK_ARGS["total_timesteps"] // CLOCK_ARGS["num_envs"]
    beta1, beta2, eps = 0.9, 0.999, 1e-8  # Adam's defaults
    moments = {}  # per network: first and second moments of its gradients, and its step count
    k = 0  # the vector step the loop is in
    for (kind, data, before), (_, _, after) in zip(run.events, run.events[1:]):
        k += kind == "step"
        lr = CLOCK_ARGS["learning_rate"] * (1 - (k - 1) / num_iterations if annealed else 1)
        for name in ("actor", "critic"):
            expected = before[role[name]]
            if kind == f"{name}_step":
                grads = data[1]
                m, v, t = moments.get(name, ([0 * g for g in grads], [0 * g for g in grads], 0))
                m = [beta1 * m_ + (1 - beta1) * g for m_, g in zip(m, grads)]
                v = [beta2 * v_ + (1 - beta2) * g * g for v_, g in zip(v, grads)]
                moments[name] = m, v, t + 1
                m_hat, v_hat = [m_ / (1 - beta1 ** (t + 1)) for m_ in m], [v_ / (1 - beta2 ** (t + 1)) for v_ in v]
                expected = [p - lr * a / (b.sqrt() + eps) for p, a, b in zip(expected, m_hat, v_hat)]
            assert_params_equal(after[role[name]], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.grades("train")
def test_exploration_starts_from_the_online_actor_at_s_t(clock_run):
    """Catches acting with the target actor, on s_{t+1} or a stale observation, with the wrong noise or
    bounds, or stepping the env with the noiseless action."""
    role, num_envs = clock_run.roles(), CLOCK_ARGS["num_envs"]
    transitions, steps = clock_transitions(len(clock_run.of("step"))), clock_run.of("step")
    step_index, explored = 0, []
    for kind, data, params in clock_run.events:
        if kind == "explore":
            explored.append((step_index, data, params))
        step_index += kind == "step"
    assert len(explored) == len(steps) - CLOCK_ARGS["learning_starts"] // num_envs
    for index, (mu, noise_std, low, high, actions), params in explored:
        obs = torch.tensor([transitions[index][0]] * num_envs, dtype=torch.float32)
        with torch.no_grad():
            expected_mu = clock_run.call(role["actor"], params[role["actor"]], obs)
        np.testing.assert_allclose(mu, expected_mu.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(noise_std, [CLOCK_ARGS["exploration_noise"]])  # half-range of [-1, 1] is 1
        np.testing.assert_array_equal(low, [-1.0]), np.testing.assert_array_equal(high, [1.0])
        np.testing.assert_array_equal(steps[index][0][0], actions)
    assert not np.allclose([data[4] for _, data, _ in explored], [data[0] for _, data, _ in explored])  # noise


@pytest.mark.grades("train")
def test_random_actions_cover_the_box_and_noise_is_scaled_to_it(tmp_path):
    """Catches noise not scaled by each dimension's half-range, explored actions not clipped to the box,
    and the random phase drawing from [-1, 1] instead of the box (Pendulum's is [-2, 2])."""
    run = run_recorded(tmp_path, env_id="Pendulum-v1", total_timesteps=60, learning_starts=30, batch_size=8,
                       hidden_size=8, exploration_noise=0.5, eval_episodes=1)  # fmt: skip
    stepped = np.array([data[0] for data, _ in run.of("step")])[:, 0, 0]
    random_phase, explored = stepped[:30], stepped[30:]
    assert (np.abs(stepped) <= 2.0).all()
    assert random_phase.min() < -1.2 and random_phase.max() > 1.2
    assert (np.abs(explored) == 2.0).any()  # noise of std 1 around a small pi(s) reaches the bounds
    for (_, noise_std, low, high, _), _ in run.of("explore"):
        np.testing.assert_allclose(noise_std, [0.5 * 2.0])
        np.testing.assert_array_equal(low, [-2.0]), np.testing.assert_array_equal(high, [2.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.grades("train")
def test_a_few_hundred_steps_move_pi_toward_the_best_action(tmp_path, seed):
    """Catches a sign error anywhere in the loop (pi then runs away from 0.5), and an evaluation that adds
    noise or uses the target actor."""
    # policy_frequency=8: the critic learns the parabola before the actor climbs it (else pi overshoots to 1
    # and its tanh saturates)
    run = run_recorded(tmp_path, keep_params=False, env_id="tests.fake_envs:BanditBox-v0", seed=seed,
                       total_timesteps=400, learning_starts=100, batch_size=32, hidden_size=32, learning_rate=2e-3,
                       exploration_noise=0.3, policy_frequency=8, eval_episodes=3)  # fmt: skip
    first_mu = float(run.of("explore")[0][0][0][0, 0])  # pi(s) before any update
    with torch.no_grad():
        obs = torch.as_tensor(BanditEnv().reset()[0])
        final_mu = float(run.nets[run.roles()["actor"]](obs)[0])
    best = BanditEnv.BEST_ACTION
    assert abs(final_mu - best) < 0.2 and abs(final_mu - best) < abs(first_mu - best) - 0.2, (first_mu, final_mu)
    # Evaluation: pi(s) itself, no noise, so every episode pays -(pi(s) - 0.5)^2
    assert run.summary["eval_mean_return"] == pytest.approx(-((final_mu - best) ** 2), abs=1e-6)
    assert run.summary["eval_std_return"] == 0.0
