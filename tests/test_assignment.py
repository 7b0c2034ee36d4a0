"""tools/assignment.py: the starters it makes, the grades it gives, and the wrong implementations it must catch.

`python3 -m tests.test_assignment [SCRIPT ...]` runs the long check: for every script (or those named),
the reference passes every gradable name, and a starter with any one name blanked is graded
"not implemented" on that name and passed on all the others."""

import ast
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import assignment  # noqa: E402

SCRIPTS = [p.name for p in assignment.scripts()]


# ## Which test grades what: every marker names a definition of its own script's method part
def marked_names(test_file: Path) -> dict[str, list[str]]:
    """test function -> the names of its `@pytest.mark.grades(...)`, read from the source."""
    found = {}
    for node in ast.parse(test_file.read_text()).body:
        for deco in getattr(node, "decorator_list", []):
            if isinstance(deco, ast.Call) and ast.unparse(deco.func) == "pytest.mark.grades":
                found[node.name] = [arg.value for arg in deco.args]
    return found


def test_every_grades_marker_names_a_definition_of_its_script():
    """Catches a typo in a marker, a marker in a test file that is no script's, a script without gradable names."""
    for test_file in sorted((ROOT / "tests").glob("test_*.py")):
        marks = marked_names(test_file)
        script = ROOT / (test_file.stem.removeprefix("test_") + ".py")
        if script.name not in SCRIPTS:
            assert not marks, f"{test_file.name} grades no script's functions, yet marks {sorted(marks)}"
            continue
        defs = assignment.definitions(script.read_text())
        for test, names in marks.items():
            assert names and set(names) <= set(defs), f"{test_file.name}::{test} names {set(names) - set(defs)}"
        assert "train" in {n for names in marks.values() for n in names}, test_file.name
    assert len(SCRIPTS) == 9


# ## make: the starter is the reference but for the blanked bodies
@pytest.mark.parametrize("script", SCRIPTS)
def test_blanking_any_definition_keeps_every_other_line_and_its_comments(script):
    text = (ROOT / script).read_text()
    lines, comments = text.splitlines(keepends=True), assignment.comments_of(text)
    for name, node in assignment.definitions(text).items():
        starter = assignment.blank(text, [name])
        new = starter.splitlines(keepends=True)
        start, end = assignment.docstring_end(node) + 1, node.end_lineno  # the body below the docstring
        assert new[: start - 1] == lines[: start - 1], name  # signature, docstring and everything above
        tail = len(lines) - end
        assert new[len(new) - tail :] == lines[end:], name  # everything below
        body = new[start - 1 : len(new) - tail]
        assert body[-1].strip().startswith(f'raise NotImplementedError("{name} (slide: '), name
        kept = [comments[i] or lines[i - 1] for i in range(start, end + 1) if i in comments]  # after code too
        assert [line for line in body if line.strip().startswith("#")] == kept, name
        assert all(line.strip().startswith("#") or not line.strip() for line in body[:-1]), name
        compile(starter, script, "exec")
    both = assignment.blank(text, list(assignment.definitions(text))[-2:])  # two at once, the last ones
    assert both.count("raise NotImplementedError(") == text.count("raise NotImplementedError(") + 2


def test_make_writes_the_starter_and_the_students_readme(tmp_path, capsys):
    code = assignment.main(["make", "ppo.py", "--blank", "gae", "clipped_policy_loss", "--out", str(tmp_path / "hw")])
    assert code == 0
    starter = (tmp_path / "hw" / "ppo.py").read_text()
    assert 'raise NotImplementedError("gae (slide: ' in starter
    assert 'raise NotImplementedError("clipped_policy_loss (slide: Proximal Policy Optimization (PPO))")' in starter
    assert r"# $\delta_t = r_t + \gamma V(s_{t+1})" in starter  # the equation stays: it is the specification
    readme = (tmp_path / "hw" / "README.md").read_text()
    assert "### `gae`" in readme and "### `clipped_policy_loss`" in readme and "\\hat{A}_t" in readme
    assert "python tools/assignment.py grade path/to/your/ppo.py gae clipped_policy_loss" in readme
    assert "python ppo.py --env-id" in readme


# ## Bad input: one error line, exit status 2, nothing written
@pytest.mark.parametrize(
    "argv,mentions",
    [
        (["make", "ppo.py", "--blank", "gae", "check_args", "--out", "{out}"], "gae, clipped_policy_loss"),
        (["make", "ppo.py", "--blank", "Agent.nope", "--out", "{out}"], "the gradable names are"),
        (["make", "nope.py", "--blank", "gae", "--out", "{out}"], "ppo.py"),
        (["make", "ppo.py", "--out", "{out}"], "--blank"),
        (["grade", "{out}/ppo.py"], "not a file"),
        (["grade", "README.md"], "not one of the scripts"),
        (["grade", "ppo.py", "check_args"], "not gradable"),
        (["list", "tests/helpers.py"], "not one of the scripts"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_status_2(argv, mentions, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    assert assignment.main([a.replace("{out}", str(out)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and mentions in err, err
    assert not out.exists()


def test_the_command_line_is_the_same_one_error_line(tmp_path):
    tool = str(ROOT / "tools" / "assignment.py")
    result = subprocess.run([sys.executable, tool, "grade", str(tmp_path / "ppo.py")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: {tmp_path / 'ppo.py'} is not a file\n"


# ## grade: each name on its own, with the project's tests
def grade(tmp_path: Path, script: str, text: str, names: list[str]) -> dict[str, dict]:
    (tmp_path / script).write_text(text)
    return {r["name"]: r for r in assignment.grade(tmp_path / script, names)}


@pytest.mark.parametrize(
    "script,blanked,also",
    [("ppo.py", "gae", ["clipped_policy_loss", "value_loss"]), ("trpo.py", "conjugate_gradient", ["max_step"]),
     ("ddpg.py", "ReplayBuffer.add", ["polyak_update"]), ("actor_critic.py", "Agent.critic_pair", ["td_target"])],
)  # fmt: skip
def test_a_starter_is_not_implemented_on_its_blanked_name_only(script, blanked, also, tmp_path):
    starter = assignment.blank((ROOT / script).read_text(), [blanked])
    graded = grade(tmp_path, script, starter, [blanked, *also])
    assert graded[blanked]["status"] == "not implemented" and graded[blanked]["score"] == 0.0
    assert graded[blanked]["why"].startswith(f"NotImplementedError: {blanked} (slide: ")
    for name in also:
        assert graded[name]["status"] == "passed" and graded[name]["score"] == 1.0, graded[name]


def test_grade_prints_one_line_per_name_and_writes_gradescope_results(tmp_path, capsys, monkeypatch):
    text = (ROOT / "ppo.py").read_text()
    text = text.replace("    return 0.5 * loss.mean()\n", "    return loss.mean()\n")  # the ½ dropped
    (tmp_path / "ppo.py").write_text(assignment.blank(text, ["gae"]))
    monkeypatch.chdir(tmp_path)
    code = assignment.main(["grade", "ppo.py", "gae", "value_loss", "clipped_policy_loss", "--json", "results.json"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0].startswith("gae: not implemented (0/6 tests): NotImplementedError: gae (slide: ")
    assert out[1].startswith("value_loss: failed (0/1 tests): test_value_loss_clipping_against_hand_values: ")
    assert out[2] == "clipped_policy_loss: passed (3/3 tests)" and out[3] == "score: 1.00/3"
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["score"] == 1.0 and [t["name"] for t in results["tests"]] == ["gae", "value_loss",
                                                                                 "clipped_policy_loss"]  # fmt: skip
    for test, line in zip(results["tests"], out):
        assert test["max_score"] == 1.0 and test["output"] == line
    assert [t["score"] for t in results["tests"]] == [0.0, 0.0, 1.0]
    assert [t["status"] for t in results["tests"]] == ["failed", "failed", "passed"]


def test_a_file_that_does_not_parse_fails_every_name_with_its_line(tmp_path):
    text = (ROOT / "ppo.py").read_text().replace("    advantages = np.zeros_like(rewards)\n", "    advantages = (\n", 1)
    graded = grade(tmp_path, "ppo.py", text, ["gae", "value_loss"])
    for r in graded.values():
        assert r["status"] == "failed" and "ppo.py does not parse" in r["why"] and r["score"] == 0.0, r


def test_helpers_the_student_adds_at_the_top_level_come_along(tmp_path):
    text = (ROOT / "ppo.py").read_text()
    node = assignment.definitions(text)["gae"]
    lines = text.splitlines(keepends=True)
    student = """def gae(rewards, values, next_values, terminated, dones, gamma: float, gae_lambda: float) -> np.ndarray:
    deltas = rewards + gamma * next_values * (1.0 - terminated) - values
    return discounted_backwards(deltas, gamma * gae_lambda * (1.0 - dones))


def discounted_backwards(x, factors):
    out, running = np.zeros_like(x), np.zeros_like(x[0])
    for t in reversed(range(len(x))):
        running = out[t] = x[t] + factors[t] * running
    return out
"""
    text = "".join(lines[: node.lineno - 1]) + student + "".join(lines[node.end_lineno :])
    assert grade(tmp_path, "ppo.py", text, ["gae"])["gae"]["status"] == "passed"


# ## Wrong implementations, written the way students get them wrong: each must fail its name
# (script, name, what the reference has, what the student wrote)
WRONG = {
    "gae: sign of V(s_t)": ("ppo.py", "gae", "- values[t]", "+ values[t]"),
    "gae: terminated masks the recursion": ("ppo.py", "gae", "gae_lambda * (1.0 - dones[t])", "gae_lambda * (1.0 - terminated[t])"),
    "clipped loss: max for min": ("ppo.py", "clipped_policy_loss", "-torch.min(unclipped", "-torch.max(unclipped"),
    "value loss: the factor 1/2 dropped": ("ppo.py", "value_loss", "return 0.5 * loss.mean()", "return loss.mean()"),
    "softmax over the batch axis": ("ppo.py", "categorical_log_prob_entropy", "log_softmax(logits, dim=-1)", "log_softmax(logits, dim=0)"),
    "V(s) from the actor's network": ("ppo.py", "Agent.value", "return self.critic(obs).squeeze(-1)", "return self.actor(obs)[..., 0]"),
    "obs normalized by the variance": ("ppo_continuous.py", "normalize_obs", "np.sqrt(rms.var + 1e-8)", "(rms.var + 1e-8)"),
    "n-step returns: the last step left out": ("a2c.py", "nstep_returns", "in reversed(range(rewards.shape[0])):", "in reversed(range(rewards.shape[0] - 1)):"),
    "a2c: advantages not detached": ("a2c.py", "a2c_loss", "(log_prob * advantages.detach())", "(log_prob * advantages)"),
    "actor-critic: the weight not detached": ("actor_critic.py", "actor_loss", "weights.detach()", "weights"),
    "TD target bootstraps through termination": ("actor_critic.py", "td_target", "gamma * (1.0 - terminated) * next_values", "gamma * next_values"),
    "polyak: tau and 1 - tau swapped": ("ddpg.py", "polyak_update", "target_param.lerp_(param, tau)", "target_param.lerp_(param, 1.0 - tau)"),
    "ddpg actor: ascends -Q": ("ddpg.py", "actor_loss", "return -critic(obs, actor(obs)).mean()", "return critic(obs, actor(obs)).mean()"),
    "central difference over epsilon, not 2 epsilon": ("finite_diff.py", "finite_difference_gradient", "/ (2 * epsilon)", "/ epsilon"),
    "rewards-to-go without gamma": ("reinforce.py", "rewards_to_go", "running = rewards[t] + gamma * running", "running = rewards[t] + running"),
    "whole return taken at the last step": ("reinforce.py", "reinforce_weights", "returns[0].expand_as(returns)", "returns[-1].expand_as(returns)"),
    "value loss: padding not masked": ("reinforce_baseline.py", "value_loss", "(values - returns).pow(2) * mask).sum()", "(values - returns).pow(2)).sum()"),
    "CG: beta upside down": ("trpo.py", "conjugate_gradient", "p = r + (rr / rr_old) * p", "p = r + (rr_old / rr) * p"),
    "max step: sqrt(delta / sFs)": ("trpo.py", "max_step", "torch.sqrt(2.0 * delta / (s @ Fs))", "torch.sqrt(delta / (s @ Fs))"),
}  # fmt: skip
WRONG_TRAIN = (
    "ppo train: V bootstrapped at the reset observation",
    ("ppo.py", "train", "next_obs_buf[step] = true_next_obs(obs, info)", "next_obs_buf[step] = obs"),
)


def wrong_file(tmp_path: Path, script: str, name: str, reference: str, wrong: str) -> Path:
    """The reference with `reference` replaced by `wrong` inside `name`'s definition (once)."""
    text = (ROOT / script).read_text()
    node = assignment.definitions(text)[name]
    lines = text.splitlines(keepends=True)
    body = "".join(lines[node.lineno - 1 : node.end_lineno])
    assert body.count(reference) == 1, f"{script} {name} no longer holds {reference!r}: update the mutant"
    body = body.replace(reference, wrong)
    (tmp_path / script).write_text("".join(lines[: node.lineno - 1]) + body + "".join(lines[node.end_lineno :]))
    return tmp_path / script


@pytest.mark.parametrize("mutant", [*WRONG, WRONG_TRAIN[0]])
def test_a_wrong_implementation_fails_its_name(mutant, tmp_path):
    script, name, reference, wrong = WRONG[mutant] if mutant in WRONG else WRONG_TRAIN[1]
    (result,) = assignment.grade(wrong_file(tmp_path, script, name, reference, wrong), [name])
    assert result["status"] == "failed" and result["score"] < 1.0, result


# ## A course may hand the scripts out: the license and how to cite
def test_license_is_mit_and_the_citation_file_names_it():
    import yaml

    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 ")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert cff["title"] and cff["message"] and all("name" in a or "family-names" in a for a in cff["authors"])


def check_every_starter(scripts: list[str]) -> bool:
    memo, ok = {}, True
    for script in scripts:
        reference = ROOT / script
        started = time.perf_counter()
        results = assignment.grade(reference, None, memo)
        print(f"{script}: reference graded in {time.perf_counter() - started:.0f} s", flush=True)
        for r in results:
            print(f"  {assignment.report_line(r)}  [{r['seconds']:.1f} s]", flush=True)
            ok &= r["status"] == "passed"
        for name in (r["name"] for r in results):
            with tempfile.TemporaryDirectory() as folder:
                starter = Path(folder) / script
                starter.write_text(assignment.blank(reference.read_text(), [name]))
                started = time.perf_counter()
                graded = {r["name"]: r for r in assignment.grade(starter, None, memo)}
            wrong = [n for n, r in graded.items() if r["status"] != ("not implemented" if n == name else "passed")]
            ok &= not wrong
            verdict = "ok" if not wrong else "WRONG: " + "; ".join(assignment.report_line(graded[n]) for n in wrong)
            print(f"  {name} blanked: {verdict}  [{time.perf_counter() - started:.1f} s]", flush=True)
    return ok


if __name__ == "__main__":
    names = sys.argv[1:] or [p.name for p in assignment.scripts()]
    sys.exit(0 if check_every_starter(names) else 1)
