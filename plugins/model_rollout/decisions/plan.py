"""The stages a policy makes, with their task ids, windows and roles, and the alpha budget.

Why roles: early, small steps exist to stop gross harm cheaply, and at 5% of a busy service a
10-minute window holds far too few events to *prove* a candidate within tolerance. So every
stage before the last live step is a *guard* (go on unless a degradation is shown), and the last
live step is the *proof* (every metric must be shown within tolerance, on the evidence of every
live step). The shadow is a guard of its own phase. The DAG factory, the tasks and the monitor
take their task ids from here, never from string literals of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from model_rollout.policy import Policy

GUARD = "guard"
PROOF = "proof"


@dataclass(frozen=True)
class Stage:
    """One judged stage of a rollout.

    :param name: task group id ("shadow", "canary_5", "step_25", ...).
    :param mode: "shadow" (mirrored copies) or "canary" (live traffic).
    :param step: the candidate's traffic percentage (None for the shadow).
    :param window: bake time in seconds: no stage passes before it.
    :param max_duration: longest the stage may run, extension included.
    :param role: "guard" or "proof" (see the module docstring).
    :param position: index of the stage in its phase (0 = first).
    :param phase_stages: stages in its phase (the alpha of a phase's test is spread over them).
    """

    name: str
    mode: Literal["shadow", "canary"]
    step: int | None
    window: float
    max_duration: float
    role: Literal["guard", "proof"]
    position: int
    phase_stages: int

    @property
    def holds_on_suspicion(self) -> bool:
        """Whether this guard holds its traffic while harm is nearly shown (monitor.py).

        The shadow does (the next step exposes users) and so does the last guard before the
        proof (the next step is the largest share before cutover). Earlier guards go on: the
        next guard gathers evidence several times faster at a still small share, and holding
        them made bad candidates slower to catch in the simulations (docs/judge.md).
        """
        return self.role == GUARD and (
            self.mode == "shadow" or self.position == self.phase_stages - 2
        )

    @property
    def traffic_task_id(self) -> str:
        """The task that applies the stage's traffic and records when (`applied_at`)."""
        return f"{self.name}.start" if self.mode == "shadow" else f"{self.name}.set_traffic"

    @property
    def monitor_task_id(self) -> str:
        return f"{self.name}.monitor"

    @property
    def gate_task_id(self) -> str:
        return f"{self.name}.gate"


@dataclass(frozen=True)
class RolloutPlan:
    """The judged stages in order, and the alpha each of the rollout's tests gets."""

    stages: tuple[Stage, ...]
    tests: tuple[str, ...]
    alpha: float

    @property
    def alpha_per_test(self) -> float:
        """Bonferroni over the rollout's tests: the whole rollout's false-rollback bound."""
        return self.alpha / max(len(self.tests), 1)

    def earlier_in_phase(self, stage: Stage) -> list[Stage]:
        """The stages of `stage`'s phase before it, oldest first (their evidence carries over)."""
        return [s for s in self.stages if s.mode == stage.mode and s.position < stage.position]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r} in the plan: {[s.name for s in self.stages]}")


def stage_name(step: int, first: bool) -> str:
    return f"canary_{step}" if first else f"step_{step}"


def plan_for(policy: Policy) -> RolloutPlan:
    """The policy's stages: the shadow (if enabled), then each live step below 100%."""
    stages: list[Stage] = []
    if policy.shadow.enabled:
        window = policy.shadow.duration
        stages.append(
            Stage("shadow", "shadow", None, window, policy.max_duration_for(window), GUARD, 0, 1)
        )
    live = policy.canary_steps
    for i, step in enumerate(live):
        window = policy.window_for(step)
        stages.append(
            Stage(
                stage_name(step, i == 0),
                "canary",
                step,
                window,
                policy.max_duration_for(window),
                PROOF if i == len(live) - 1 else GUARD,
                i,
                len(live),
            )
        )
    return RolloutPlan(tuple(stages), tuple(rollout_tests(policy)), policy.judge.alpha)


def rollout_tests(policy: Policy) -> list[str]:
    """The rollout's tests, "<phase>.<metric>" (only configuration decides them, never data)."""
    from model_rollout.judge.config import JudgeConfig

    phases = (["shadow"] if policy.shadow.enabled else []) + ["canary"]
    return [
        f"{phase}.{metric}"
        for phase in phases
        for metric in JudgeConfig.model_validate(policy.judge_settings(phase)).metrics_in_force(
            phase
        )
    ]
