"""The config sections the agents read: ``networks``, ``algorithm`` and ``training``, and the agent's view.

``training`` is read here (replay ``buffer_size``, ``seed``, ``buffer_device``, ``cuda_graph``,
``num_envs`` replay streams) and by the trainer (``max_timesteps``, the evaluation and checkpoint
periods, ``device``, vectorisation); it lives with its lowest reader so that ``TD3Agent`` validates a
nested dict without importing the training layer. The root ``av_td3.config.Config`` composes these.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from av_td3.config_base import Sections, StrictModel

__all__ = ["AgentConfig", "AlgorithmConfig", "CNNConfig", "MLPConfig", "NetworksConfig", "TrainingConfig",
           "check_batch_fits"]


class CNNConfig(StrictModel):
    learning_rate: float = Field(1e-4, gt=0, le=1, description="Adam learning rate of the CNN encoder.")
    feature_dim: int = Field(512, ge=1, le=8192, description="NatureCNN output size.")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="CNN compute precision (weights, optimizer and MLPs stay float32): bfloat16 autocast is "
        "~1.4x faster per update on CPUs with native bf16 (avx512_bf16/AMX) and on bf16 GPUs; auto = bfloat16 "
        "where native, else float32.",
    )


class MLPConfig(StrictModel):
    hidden_layers: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    learning_rate: float = Field(3e-4, gt=0, le=1)

    @model_validator(mode="after")
    def _positive_widths(self) -> "MLPConfig":
        if any(w < 1 for w in self.hidden_layers):
            raise ValueError(f"hidden_layers must be positive widths, got {self.hidden_layers}")
        return self


class NetworksConfig(StrictModel):
    cnn: CNNConfig = Field(default_factory=CNNConfig)
    actor: MLPConfig = Field(default_factory=MLPConfig)
    critic: MLPConfig = Field(default_factory=MLPConfig)


class AlgorithmConfig(StrictModel):
    name: Literal["td3", "ddpg"] = Field("td3", description="Which agent trains (`--algo`); configs/ddpg.yaml sets ddpg.")
    discount: float = Field(0.99, ge=0, le=1, description="gamma")
    tau: float = Field(0.005, gt=0, le=1, description="Polyak rate of the target networks.")
    policy_noise: float = Field(0.2, ge=0, description="Target policy smoothing noise std.")
    noise_clip: float = Field(0.5, ge=0)
    policy_freq: int = Field(2, ge=1, description="Critic updates per actor update.")
    batch_size: int = Field(256, ge=1)
    start_timesteps: int = Field(10_000, ge=0, description="Random-exploration steps before the policy acts.")
    expl_noise: float = Field(0.1, ge=0, description="Gaussian exploration noise std (fraction of max_action).")
    use_end_to_end_cnn: bool = Field(True, description="False: frozen CNN, flat states, plain buffer (rollback).")
    encoder_mode: Literal["critic", "separate"] = "critic"
    image_pad: int = Field(4, ge=0, le=32, description="Random-shift augmentation pad in pixels; 0 = off.")
    n_step: int = Field(3, ge=1, le=20, description="n-step TD returns.")
    max_grad_norm: float | None = Field(None, gt=0, description="Clip each network's grad norm; None = off.")
    action_smoothness: float = Field(
        0.0, ge=0, le=100, description="CAPS-style temporal smoothness: the actor loss becomes -mean Q / mean|Q| + this "
        "* mean ||pi(s) - pi(s')||^2 (s' = the buffer's next observation); 0 = plain TD3 actor loss.")


class TrainingConfig(StrictModel):
    buffer_size: int = Field(100_000, ge=1)
    max_timesteps: int = Field(30_000, ge=1)
    updates_per_step: float = Field(1.0, gt=0, le=16, description="Gradient updates per env step after start_timesteps.")
    eval_freq: int = Field(5_000, ge=0, description="Env steps between evaluations; 0 = only at the end.")
    checkpoint_freq: int = Field(10_000, ge=0, description="Env steps between checkpoints; 0 = only at the end.")
    seed: int = Field(0, ge=0)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    save_buffer: bool = Field(False, description="Also checkpoint the replay buffer (large) for exact resume.")
    num_envs: int = Field(1, ge=1, le=256, description="Parallel envs collecting experience (gymnasium vector API); "
                          "1 = one env in the training process.")
    vectorization: Literal["async", "sync"] = Field(
        "async", description="With num_envs > 1: async = one process per env (shared-memory images), sync = in turn.")
    buffer_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where replay storage lives: cuda keeps it in GPU memory and samples there (CUDA "
        "device only); auto = cuda when the device is CUDA and the buffer fits in free GPU memory, else cpu.")
    cuda_graph: bool = Field(True, description="On CUDA, capture the whole update (sampling, critic, actor, "
                             "targets) in CUDA graphs after warm-up; False = eager updates. No effect on CPU.")


def check_batch_fits(algorithm: AlgorithmConfig, training: TrainingConfig) -> None:
    """A batch is drawn from the replay buffer: it cannot be larger (raises ``ValueError``)."""
    if algorithm.batch_size > training.buffer_size:
        raise ValueError(
            f"algorithm.batch_size ({algorithm.batch_size}) is larger than training.buffer_size "
            f"({training.buffer_size}); allowed: batch_size <= buffer_size"
        )


class AgentConfig(Sections):
    """What an agent reads: ``TD3Agent(config=...)`` takes the root ``Config``, a nested dict or None."""

    networks: NetworksConfig = Field(default_factory=NetworksConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    @model_validator(mode="after")
    def _batch_fits(self) -> "AgentConfig":
        check_batch_fits(self.algorithm, self.training)
        return self
