#!/bin/bash
# A Slurm job array for `python benchmarks/results.py --slurm benchmarks/slurm_template.sh --out DIR`: one array
# task per run (ours and the peers'), SLURM_ARRAY_TASK_ID picks its command line. results.py fills in the
# {{...}} fields; edit the rest for your cluster (partition, account, time limit). Append %K to the array range
# to run at most K tasks at once. Every run uses one CPU core; the checkout and DIR must be at the same paths on
# the nodes as where the script was written (a shared file system). Submit with `sbatch DIR/results.slurm`, then
# `python benchmarks/results.py --collect DIR` builds the tables, the curves and models/ from the runs.
#SBATCH --job-name=pg-benchmarks
#SBATCH --array={{array}}
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem-per-cpu=4G
#SBATCH --time=24:00:00
#SBATCH --output={{out}}/slurm-%A_%a.out

commands=(
{{commands}}
)
echo "task $SLURM_ARRAY_TASK_ID of {{len_commands}}: ${commands[$SLURM_ARRAY_TASK_ID]}"
srun bash -c "${commands[$SLURM_ARRAY_TASK_ID]}"
