"""How a rollout decides, stage by stage: the one copy of the logic that the DAG's monitor and
gates run, and that `model-rollout plan` and `model-rollout simulate` run too.

- `plan`: the stages a policy makes (task ids, windows, roles) and the rollout's alpha budget.
- `monitor`: one stage's decision, look by look (judge, sticky evidence, window end, extension).
- `projection`: how much more traffic a stage needs to decide, at its observed rates.
- `gate`: where an outcome leads (next stage, a human review, rollback).
- `traffic`: synthetic traffic shaped like the gateway's snapshots (planner, simulator).
- `planner`, `simulate`: what a policy needs at a given traffic, and whole rollouts simulated.

Nothing here imports Airflow or does I/O; the statistics load on first use.
"""
