"""The config sections only the training layer reads: ``exploration``, ``evaluation`` and ``logging``.

(``training`` itself is also read by the agent and lives in ``av_td3.agents.config``.) The root
``av_td3.config.Config`` composes these.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from av_td3.config_base import StrictModel

__all__ = ["EvaluationConfig", "ExplorationConfig", "LoggingConfig"]


class ExplorationConfig(StrictModel):
    """How actions are drawn before ``start_timesteps`` and how the Gaussian noise decays after it."""

    random_steer_std: float = Field(0.3, ge=0, le=1, description="Std of the random steer (clipped to +-1).")
    random_throttle_mean: float = Field(0.5, ge=-1, le=1, description="Mean of the random throttle_brake.")
    random_throttle_std: float = Field(0.3, ge=0, le=1)
    action_repeat: int = Field(4, ge=1, le=50, description="Hold each random action this many steps.")
    expl_noise_final: float | None = Field(None, ge=0, description="Linear decay target; None = constant.")
    expl_noise_decay_steps: int = Field(100_000, ge=1)


class EvaluationConfig(StrictModel):
    """Seeded evaluation episodes: during training on VALIDATION seeds (they choose ``checkpoints/best.pt``),
    afterwards (``av-td3 evaluate`` / ``compare`` / ``baseline``) on TEST seeds, so a policy picked on some
    episodes is judged on others."""

    num_episodes: int = Field(5, ge=1, description="Episodes of each evaluation during training.")
    seed: int = Field(10_000, ge=0, description="Test episodes (evaluate, compare, baseline) use seeds seed, seed+1, ...")
    validation_seed: int = Field(
        20_000, ge=0, description="Evaluations during training (which pick checkpoints/best.pt) use seeds "
        "validation_seed, validation_seed+1, ...; keep them clear of the test seeds.")
    video: bool = Field(False, description="Write a video of the final evaluation.")
    video_format: Literal["mp4", "gif"] = "mp4"

    @model_validator(mode="after")
    def _validation_clear_of_test(self) -> "EvaluationConfig":
        if self.seed <= self.validation_seed < self.seed + 1000 or self.validation_seed <= self.seed < self.validation_seed + self.num_episodes:
            raise ValueError(
                f"evaluation.validation_seed={self.validation_seed} overlaps the test episodes from evaluation.seed="
                f"{self.seed}: checkpoints chosen on them would be judged on the same episodes; keep the two at "
                "least 1000 apart (e.g. validation_seed: 20000, seed: 10000)")
        return self


class LoggingConfig(StrictModel):
    log_dir: str = "runs"
    run_name: str | None = None
    tensorboard: bool = True
    log_interval: int = Field(250, ge=1, description="Updates between logged training scalars.")
    debug_gradient_interval: int = Field(500, ge=1, description="With --debug: updates between CNN gradient tables.")
    progress_bar: bool = True
