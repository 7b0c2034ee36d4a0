"""A strip of frames from one evaluation episode of a shipped checkpoint, for its script's docs page.

    python tools/filmstrip.py models/ppo-CartPole-v1.pt     # writes docs/figures/ppo-CartPole-v1.png

The episode is the first of the evaluation episodes that the checkpoint's row of models/README.md records (the
row's env, flags and seed), recorded by the script itself with `--capture-video`, as a student's own command
records it:

    python ppo.py --model-path models/ppo-CartPole-v1.pt --total-timesteps 0 --env-id CartPole-v1 --seed 3 \\
        --eval-episodes 1 --capture-video

Of its frames, `--frames` evenly spaced ones (the first and the last among them) are drawn side by side, each with
its time step, under a title with the episode's return. Needs the dev requirements (moviepy and pygame-ce for the
video; box2d or mujoco for those envs; MuJoCo draws through EGL on a Linux machine with no display).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, read_model_rows  # noqa: E402

FIGURES = ROOT / "docs" / "figures"


def frame_indices(length: int, count: int) -> list[int]:
    """`count` evenly spaced indices into `length` frames, the first and the last among them (fewer when the
    episode is shorter than `count`)."""
    if length <= count:
        return list(range(length))
    return sorted({round(i * (length - 1) / (count - 1)) for i in range(count)})


def record_episode(model: Path, row: dict, folder: Path) -> tuple[list, float]:
    """Run the row's script on `model` for one evaluation episode with --capture-video in `folder`: its frames
    (RGB arrays) and its return."""
    from moviepy import VideoFileClip

    cmd = [sys.executable, str(ROOT / row["script"]), "--model-path", str(model.resolve()), "--total-timesteps",
           "0", "--env-id", row["env_id"], "--seed", str(row["seed"]), "--eval-episodes", "1", "--capture-video",
           *row["flags"]]  # fmt: skip
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited {done.returncode}: {(done.stdout + done.stderr)[-500:]}")
    (video,) = folder.glob("videos/*/*.mp4")
    (summary,) = folder.glob("runs/*/summary.json")
    with VideoFileClip(str(video)) as clip:
        frames = list(clip.iter_frames())
    return frames, json.loads(summary.read_text())["eval_mean_return"]


def draw(frames: list, picked: list[int], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = frames[0].shape[:2]
    fig, axes = plt.subplots(1, len(picked), figsize=(1.9 * len(picked), 1.9 * height / width + 0.5))
    for ax, index in zip(list(getattr(axes, "flat", [axes])), picked):
        ax.imshow(frames[index])
        ax.set_title(f"t = {index}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="shipped checkpoints (models/<entry>.pt)")
    parser.add_argument("--frames", type=int, default=6, help="frames in the strip")
    parser.add_argument("--out", type=Path, default=FIGURES, help="folder of the strips (<entry>.png)")
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.exit(2, f"error: --frames must be at least 2 (the first and the last), got {args.frames}\n")
    for model in args.models:
        rows = read_model_rows(model.parent / "README.md")
        if model.name not in rows or not model.is_file():
            parser.exit(2, f"error: {model}: not a checkpoint with a row in {model.parent / 'README.md'}\n")
        row = rows[model.name]
        with tempfile.TemporaryDirectory() as tmp:
            frames, episode_return = record_episode(model, row, Path(tmp))
        picked = frame_indices(len(frames), args.frames)
        title = (
            f"{row['script']} on {row['env_id']}, {model.name}: one evaluation episode (seed {row['seed']}), "
            f"return {episode_return:.0f}; frame t shows the state after t steps"
        )
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{model.stem}.png"
        draw(frames, picked, title, path)
        print(f"{path}: frames {picked} of {len(frames)}")


if __name__ == "__main__":
    main()
