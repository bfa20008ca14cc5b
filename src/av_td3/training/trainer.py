"""The training loop: collect experience, update the agent, evaluate, checkpoint — top to bottom.

One env step in ``Trainer.run``:

1. pick an action: throttle-biased random actions before ``start_timesteps``, then
   ``agent.select_action(obs, noise)`` with a (decaying) Gaussian noise;
2. ``env.step``; the *dict* observations go straight into the agent's replay buffer (frozen mode
   stores flat CNN features instead), ``terminated`` and ``truncated`` kept apart;
3. after ``start_timesteps``, ``agent.train()`` runs ``updates_per_step`` gradient updates
   (→ ``TD3Agent.update_critic`` / ``update_actor``: the losses);
4. every ``eval_freq`` steps a seeded evaluation on a separate env; every ``checkpoint_freq`` steps an
   atomic checkpoint.

Parallel envs (``training.num_envs`` = N > 1): the N envs (gymnasium's vector API, see
``envs/vector.py``) step together; one batched forward picks N actions, each with its own exploration
noise; each env keeps its own episode statistics, random explorer and episode seeds, and adds its
transitions to its own stream of the replay buffer. ``step`` counts env steps (N per vector step), and
every ``*_freq`` fires when the count crosses a multiple of it. N = 1 runs the single env in process,
exactly as before.

Short runs: if ``start_timesteps >= max_timesteps`` (the seed's 1000-step diagnostic with the default
10,000) random exploration would fill the whole run and nothing would train, so exploration is then
shortened to 10% of the run, and a ``[TRAIN]`` line says so. Updates also wait until the buffer holds
one batch.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from av_td3.config import Config, ConfigError
from av_td3.envs.vector import EnvBatch, make_vector_env, select_envs
from av_td3.io import StorageError, atomic_write_text
from av_td3.training import checkpoint as ckpt
from av_td3.training.diagnostics import HealthMonitor, NonFiniteLossError, format_gradient_table
from av_td3.training.evaluation import EvaluationResult, evaluate
from av_td3.training.exploration import NoiseSchedule, RandomExplorer
from av_td3.training.run_logger import RunLogger
from av_td3.training.setup import build_agent, make_env


@dataclass
class EpisodeTracker:
    """Running sums of the current training episode."""

    reward: float = 0.0
    length: int = 0
    speed_sum: float = 0.0
    collisions: int = 0
    lane_invasions: int = 0
    on_marking: bool = False
    components: dict[str, float] = field(default_factory=dict)

    def add(self, reward: float, info: dict) -> None:
        self.reward += reward
        self.length += 1
        self.speed_sum += float(info["speed_kmh"])
        self.collisions += int(bool(info["collision"]))
        invasion = bool(info["lane_invasion"])
        self.lane_invasions += int(invasion and not self.on_marking)  # crossings, as evaluation counts them
        self.on_marking = invasion
        for k, v in info.get("reward_components", {}).items():
            self.components[k] = self.components.get(k, 0.0) + float(v)

    def summary(self, info: dict) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "length": self.length,
            "mean_speed_kmh": self.speed_sum / max(self.length, 1),
            "collisions": self.collisions,
            "lane_invasions": self.lane_invasions,
            "route_completion": float(info["route_completion"]),
            "success": bool(info["success"]),
            "termination_reason": str(info["termination_reason"]),
        }


class TrainingAborted(BaseException):
    """A second Ctrl-C/SIGTERM: stop now, without finishing (or after abandoning) a save. A BaseException,
    like KeyboardInterrupt, so that no `except Exception` in an env or library swallows it."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class TrainingInterrupted(Exception):
    def __init__(self, signum: int, checkpoint: Path):
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint saved at {checkpoint}")
        self.signum = signum
        self.checkpoint = checkpoint


class Trainer:
    """Runs one training job in ``run_dir`` (creating or resuming it)."""

    def __init__(self, cfg: Config, run_dir: Path, device: str, checkpoint_dir: Path | None = None,
                 debug: bool = False, resume_from: Path | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else self.run_dir / "checkpoints"
        self.device = device
        self.debug = debug
        self.algo = cfg.algorithm.name
        _seed_everything(cfg.training.seed)
        self.rng = np.random.default_rng(cfg.training.seed)
        self.num_envs = cfg.training.num_envs
        # first: a missing CARLA server fails here, before a run dir exists
        self.env = EnvBatch.single(make_env(cfg, training=True)) if self.num_envs == 1 else \
            EnvBatch(make_vector_env(cfg, self.num_envs, cfg.training.vectorization))
        self._eval_env = None
        try:
            self.agent = build_agent(cfg, self.env.observation_space, device)
        except BaseException:
            self.env.close()  # e.g. CARLA: never leave a server in synchronous mode with nobody ticking
            raise
        # one per env, all drawing from the run's RNG (N = 1: the single explorer of before)
        self.explorers = [RandomExplorer(cfg.exploration, self.rng) for _ in range(self.num_envs)]

        total = cfg.training.max_timesteps
        self.start_timesteps = cfg.algorithm.start_timesteps
        if self.start_timesteps >= total:
            self.start_timesteps = max(total // 10, 1)
            print(f"[TRAIN] start_timesteps={cfg.algorithm.start_timesteps} >= max_timesteps={total}: "
                  f"random exploration shortened to {self.start_timesteps} steps so this run trains")
        # Policy-behaviour checks (saturation, a parked car) look at the last 1000 policy steps, or half of
        # the policy's share of a short run, so the seed's 1000-step diagnostic can report them too.
        self.health = HealthMonitor(window=min(1000, max(100, (total - self.start_timesteps) // 2)))
        self.noise = NoiseSchedule(cfg.algorithm.expl_noise, cfg.exploration.expl_noise_final,
                                   cfg.exploration.expl_noise_decay_steps, self.start_timesteps)

        self.step = 0
        self.updates = 0
        self.episodes = 0
        self.best_eval_reward = -math.inf
        self.last_eval: dict[str, Any] | None = None
        self._update_credit = 0.0
        self.min_buffer = cfg.algorithm.batch_size  # updates wait until the buffer holds this many
        self._stop: _SignalFlag | None = None
        self._saved_step: int | None = None  # step of the valid latest.pt (None: no checkpoint yet)
        if resume_from is not None:
            try:
                self._restore(resume_from)
            except BaseException:
                self.close()
                raise
        # Written only now: a resume that failed leaves the run's config.yaml as it was.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", cfg.to_yaml())
        _remove_stale_temp_files(self.ckpt_dir)

    # ----------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        total = cfg.training.max_timesteps
        log = RunLogger(self.run_dir, cfg.logging.tensorboard, total, self.step, cfg.logging.progress_bar,
                        start_updates=self.updates)
        self.log = log
        stop = self._stop = _SignalFlag()
        n = self.num_envs
        episodes = [EpisodeTracker() for _ in range(n)]
        obs, _ = self.env.reset([self._episode_seed() for _ in range(n)])
        for explorer in self.explorers:
            explorer.reset()
        last_episode: dict[str, Any] | None = None
        env_time = update_time = 0.0
        session_steps, updates_at_start, wall_start = 0, self.updates, time.perf_counter()
        stats: dict[str, Any] = {}
        try:
            while self.step < total:
                # 1. act: one batched forward for the N envs, each with its own noise draw
                exploring = self.step < self.start_timesteps
                if exploring:
                    actions = np.stack([explorer.sample() for explorer in self.explorers])
                else:
                    actions = self.agent.select_action(obs, noise=self.noise(self.step))
                    if not np.isfinite(actions).all():  # the networks diverged between two loss checks
                        raise NonFiniteLossError(
                            f"the policy's action became {actions.tolist()} at step {self.step} (update {self.updates}): "
                            "the networks hold NaN/inf. Lower the learning rates (networks.*.learning_rate), "
                            "set algorithm.max_grad_norm, or check the reward scale.")

                # 2. step the envs and store each env's transition in its own buffer stream. N > 1: the
                # envs step in their own processes while this one runs the updates the last step earned
                # (3.), so collection and learning overlap (on a GPU the updates run while envs step).
                t0 = time.perf_counter()
                if n > 1:
                    self.env.step_async(actions)
                    stats, update_time = self._learn(exploring, n, stats, update_time)
                    t0 = time.perf_counter()
                    next_obs, rewards, terminated, truncated, infos = self.env.step_wait()
                else:
                    next_obs, rewards, terminated, truncated, infos = self.env.step(actions)
                env_time += time.perf_counter() - t0
                prev_step = self.step
                for i in range(n):
                    info = infos[i]
                    if info.get("termination_reason") != "error":  # a failed tick (CARLA) is no real transition
                        self._store({k: v[i] for k, v in obs.items()}, actions[i], {k: v[i] for k, v in next_obs.items()},
                                    float(rewards[i]), bool(terminated[i]), bool(truncated[i]), stream=i)
                    episodes[i].add(float(rewards[i]), info)
                    self.health.observe_step(actions[i], info["speed_kmh"], from_policy=not exploring)
                self.step += n
                session_steps += n
                obs = next_obs

                done = terminated | truncated
                if done.any():
                    for i in np.flatnonzero(done):
                        last_episode = self._end_episode(episodes[i], infos[i])
                        episodes[i] = EpisodeTracker()
                    seeds = [self._episode_seed() if d else None for d in done]
                    t0 = time.perf_counter()
                    reset_obs, _ = self.env.reset(seeds, done)
                    env_time += time.perf_counter() - t0
                    obs = reset_obs if done.all() else select_envs(reset_obs, done, next_obs)
                    for i in np.flatnonzero(done):
                        self.explorers[i].reset()

                # 3. learn (N > 1: done above, while the envs stepped)
                if n == 1:
                    stats, update_time = self._learn(exploring, n, stats, update_time)

                # 4. evaluate, checkpoint, show progress
                if _crossed(prev_step, self.step, cfg.training.eval_freq):
                    _check_finite(stats, self.updates)  # never evaluate or save a NaN agent
                    self._evaluate(cfg.evaluation.num_episodes)
                if _crossed(prev_step, self.step, cfg.training.checkpoint_freq):
                    _check_finite(stats, self.updates)
                    self.save()
                log.progress(self.step, self.updates, last_episode)
                if stop.signum is not None:
                    raise TrainingInterrupted(stop.signum, self.save())
        except NonFiniteLossError as exc:
            bad = self.save(self.ckpt_dir / f"nonfinite_step{self.step}.pt")
            log.console(f"[HEALTH] {exc}\n[HEALTH] stopped; state saved at {bad}; last good checkpoint: "
                        f"{self.ckpt_dir / ckpt.LATEST}")
            log.record("health", self.step, {"problem": "non_finite_loss", "message": str(exc)})
            log.close()
            stop.restore()
            raise
        except TrainingInterrupted as exc:
            log.console(f"[TRAIN] {exc}; continue with --resume auto")
            log.close()
            stop.restore()
            raise
        except TrainingAborted as exc:
            log.console(f"[TRAIN] {exc}; {self._valid_checkpoint()}")
            log.close()
            stop.restore()
            raise
        except BaseException:
            stop.restore()
            raise

        try:
            _check_finite(stats, self.updates)
            if self.last_eval is None or self.last_eval["step"] != self.step:
                self._evaluate(cfg.evaluation.num_episodes)
            final = self.save()
        except NonFiniteLossError as exc:
            log.console(f"[HEALTH] {exc}\n[HEALTH] stopped; last good checkpoint: {self.ckpt_dir / ckpt.LATEST}")
            log.close()
            raise
        except TrainingAborted as exc:
            log.console(f"[TRAIN] {exc}; {self._valid_checkpoint()}")
            log.close()
            raise
        finally:
            stop.restore()
        wall = time.perf_counter() - wall_start
        summary = self._summary(session_steps, self.updates - updates_at_start, env_time, update_time, wall, final)
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        log.record("summary", self.step, summary)
        log.close()
        return summary

    # -- steps of the loop --------------------------------------------------------------------------
    def _learn(self, exploring: bool, n: int, stats: dict[str, Any], update_time: float) -> tuple[dict[str, Any], float]:
        """Run the updates the last vector step earned (``updates_per_step`` per env step, once the buffer
        holds ``min_buffer``); returns the last update's statistics (``stats`` if none ran) and
        ``update_time`` plus the seconds spent."""
        cfg = self.cfg
        if exploring or len(self.agent.replay_buffer) < self.min_buffer:
            return stats, update_time
        self._update_credit += cfg.training.updates_per_step * n
        t0 = time.perf_counter()
        while self._update_credit >= 1.0:
            stats = self.agent.train()
            self.updates += 1
            self._update_credit -= 1.0
            if self.updates % cfg.logging.log_interval == 0 or self.updates == 1:
                self._log_update(stats)
            if self.debug and (self.updates == 1 or self.updates % cfg.logging.debug_gradient_interval == 0):
                self._print_gradient_table()
        return stats, update_time + time.perf_counter() - t0

    def _store(self, obs, action, next_obs, reward: float, terminated: bool, truncated: bool, stream: int = 0) -> None:
        """Dict observations go to the buffer as they are (end-to-end), in env ``stream``'s stream; frozen
        mode stores flat states (self-contained transitions: no streams needed)."""
        buf = self.agent.replay_buffer
        if self.agent.use_dict_buffer:
            buf.add(obs_dict=obs, action=action, next_obs_dict=next_obs, reward=reward,
                    done=terminated, truncated=truncated, stream=stream)
        else:
            buf.add(state=self.agent.flatten_obs(obs), action=action, next_state=self.agent.flatten_obs(next_obs),
                    reward=reward, done=terminated, truncated=truncated)

    def _end_episode(self, episode: EpisodeTracker, info: dict) -> dict[str, Any]:
        self.episodes += 1
        summary = episode.summary(info)
        self.log.record("episode", self.step, {"episode": self.episodes, **summary})
        self.log.scalars("train", self.step, {
            "episode_reward": summary["reward"], "episode_length": summary["length"],
            "episode_speed_kmh": summary["mean_speed_kmh"], "collisions": summary["collisions"],
            "lane_invasions": summary["lane_invasions"], "route_completion": summary["route_completion"],
        })
        self.log.scalars("rewards", self.step, episode.components)
        if self.debug:
            self.log.console(f"[EPISODE {self.episodes}] step={self.step} reward={summary['reward']:.1f} "
                             f"length={summary['length']} speed={summary['mean_speed_kmh']:.1f} km/h "
                             f"end={summary['termination_reason']}")
        return summary

    def _log_update(self, stats: dict[str, Any]) -> None:
        values = {k: _scalar(v) for k, v in stats.items()}
        values["expl_noise"] = self.noise(self.step)
        cnn = self.agent.cnn_diagnostics() if self.agent.cnn_trainable else None
        self.log.scalars("train", self.step, {k: v for k, v in values.items() if "grad_norm" not in k})
        self.log.scalars("gradients", self.step, {k: v for k, v in values.items() if "grad_norm" in k})
        if cnn is not None:
            self.log.scalars("cnn", self.step, {
                "weight_change": cnn["weight_change_total"],
                "feature_norm_mean": cnn["feature_norm_mean"],
                "feature_norm_max": cnn["feature_norm_max"],
            })
        self.log.record("train", self.step, {"updates": self.updates, **values})
        for report in self.health.check(values, cnn, self.updates):
            text = f"[HEALTH] {report.problem}: {report.message}"
            self.log.console(text)
            self.log.record("health", self.step, {"problem": report.problem, "message": report.message,
                                                   "active": report.active})

    def _print_gradient_table(self) -> None:
        """``--debug``: the CNN gradient table of the last update (every ``debug_gradient_interval``)."""
        if self.agent.cnn_trainable:
            self.log.console(f"[DEBUG] update {self.updates}\n" + format_gradient_table(self.agent.cnn_diagnostics()))

    def _evaluate(self, episodes: int) -> EvaluationResult:
        if self._eval_env is None:  # separate instance: evaluation never disturbs the training episode
            self._eval_env = make_env(self.cfg)
        result = evaluate(self._eval_env, lambda o: self.agent.select_action(o, noise=0.0),
                          episodes, self.cfg.evaluation.validation_seed)  # validation episodes: they pick best.pt
        agg = result.aggregate()
        values = {k: v["mean"] for k, v in agg.items()}
        self.last_eval = {"step": self.step, **values}
        self.log.record("eval", self.step, values)
        self.log.scalars("eval", self.step, values)
        self.log.console(f"[EVAL] step={self.step} reward={values['episode_reward']:.1f} "
                         f"success={100 * values['success_rate']:.0f}% "
                         f"completion={100 * values['route_completion']:.0f}% "
                         f"speed={values['mean_speed_kmh']:.1f} km/h")
        if values["episode_reward"] > self.best_eval_reward:
            self.best_eval_reward = values["episode_reward"]
            self.save(self.ckpt_dir / "best.pt")
        return result

    def _episode_seed(self) -> int:
        """Training episodes draw seeds from the run's RNG, disjoint in practice from the evaluation seeds."""
        return int(self.rng.integers(2**31 - 1))

    def close(self) -> None:
        self.env.close()
        if self._eval_env is not None:
            self._eval_env.close()

    # -- checkpoints --------------------------------------------------------------------------------
    def save(self, path: Path | None = None) -> Path:
        """Checkpoint to ``path`` (default ``latest.pt``; with ``training.save_buffer`` the replay buffer is
        saved with it as one unit, see ``training/checkpoint.py``). A second Ctrl-C during the save
        abandons it cleanly (``TrainingAborted``): the files on disk stay the previous, valid pair."""
        path = path or self.ckpt_dir / ckpt.LATEST
        latest = path.name == ckpt.LATEST
        buffer = self.agent.replay_buffer if self.cfg.training.save_buffer and latest else None
        payload = {
            "algo": self.algo,
            "config": self.cfg.to_dict(),
            "agent": self.agent.state_dict(),
            "trainer": {"step": self.step, "updates": self.updates, "episodes": self.episodes,
                        "run_dir": str(self.run_dir),
                        "best_eval_reward": self.best_eval_reward, "update_credit": self._update_credit,
                        "start_timesteps": self.start_timesteps, "num_envs": self.num_envs},
            # one explorer: the format of before; N: a list
            "explorer": self.explorers[0].state_dict() if self.num_envs == 1 else [e.state_dict() for e in self.explorers],
            "rng": ckpt.capture_rng(self.rng),
        }
        stop = self._stop
        try:
            if stop is not None:
                stop.saving = True
            ckpt.save_checkpoint(path, payload, buffer=buffer)
        except BaseException as exc:
            if stop is not None and stop.abandoned:  # torch may have turned the interrupt into another error
                raise TrainingAborted(stop.signum, f"second {signal.Signals(stop.signum).name}: save to {path} "
                                      "abandoned") from None
            if isinstance(exc, StorageError):
                raise StorageError(f"{exc} Nothing saved before was changed: {self._valid_checkpoint()}.",
                                   exc.exit_code, exc.errno) from None
            raise
        finally:
            if stop is not None:
                stop.saving = False
        if latest:
            self._saved_step = self.step
        return path

    def _valid_checkpoint(self) -> str:
        latest = self.ckpt_dir / ckpt.LATEST
        if self._saved_step is None:
            return "no checkpoint was saved yet (running the same command again starts the run over)"
        return f"the valid checkpoint is {latest} (step {self._saved_step}); continue with --resume auto"

    def _restore(self, path: Path) -> None:
        data = ckpt.load_checkpoint(path)
        self.agent.load_state_dict(data["agent"])
        t = data["trainer"]
        self.step, self.updates, self.episodes = t["step"], t["updates"], t["episodes"]
        self.best_eval_reward, self._update_credit = t["best_eval_reward"], t["update_credit"]
        self.start_timesteps = t["start_timesteps"]
        self.noise.start = self.start_timesteps
        saved = data["explorer"] if isinstance(data["explorer"], list) else [data["explorer"]]
        # a run resumed with another num_envs: explorers restart where there is no saved state
        for explorer, state in zip(self.explorers, saved):
            explorer.load_state_dict(state)
        ckpt.restore_rng(data["rng"], self.rng)
        buffer, why = None, ""
        if self.cfg.training.save_buffer:
            buffer, why = ckpt.load_checkpoint_buffer(Path(path), data, type(self.agent.replay_buffer), self.device)
        if buffer is not None:
            streams = getattr(buffer, "num_streams", self.num_envs)
            if self.agent.use_dict_buffer and streams != self.num_envs:
                raise ConfigError(
                    f"the replay buffer saved with {path} holds {streams} env streams but training.num_envs is "
                    f"{self.num_envs}: resume with training.num_envs={streams}, or resume without --save-buffer "
                    "(training then refills a new buffer)")
            self.agent.replay_buffer = buffer
            self.agent.replay_buffer.end_sequence()  # the interrupted episode is not continued
            print(f"[TRAIN] {why}")
        else:  # refill before updating: a few hundred correlated transitions would mislead the critic
            self.min_buffer = max(self.cfg.algorithm.batch_size,
                                  min(self.start_timesteps, self.cfg.training.buffer_size, self.cfg.training.max_timesteps - self.step))
            because = f"{why}: " if why else "no saved replay buffer: "
            print(f"[TRAIN] {because}collecting {self.min_buffer} transitions with the policy "
                  "before updating again (use --save-buffer to checkpoint the buffer)")
        self._settle_later_work(Path(path))
        if Path(path).resolve() == (self.ckpt_dir / ckpt.LATEST).resolve():
            self._saved_step = self.step
        print(f"[TRAIN] resumed from {path} at step {self.step} ({self.updates} updates, {self.episodes} episodes)")

    def _settle_later_work(self, path: Path) -> None:
        """Records written after the checkpoint: from a killed session (resuming ``latest.pt``) they are
        dropped, as the resumed run writes them again; when resuming an *earlier* checkpoint (e.g.
        ``best.pt``) the later metrics, summary and ``latest.pt`` with its buffer are moved aside."""
        from av_td3.training.run_dir import move_aside, split_metrics

        metrics = self.run_dir / "metrics.jsonl"
        keep, later = split_metrics(metrics, self.step)
        latest = self.ckpt_dir / ckpt.LATEST
        earlier = latest.is_file() and path.resolve() != latest.resolve()
        if earlier:
            later_files = [latest, self.run_dir / "summary.json"]
            try:
                data = ckpt.load_checkpoint(latest)
                earlier = ckpt.checkpoint_step(data) > self.step
                if data.get("buffer"):
                    later_files.append(self.ckpt_dir / data["buffer"]["file"])
            except Exception:  # a damaged latest.pt is moved aside all the same
                pass
        if earlier:
            target = move_aside(self.run_dir, f"after-step{self.step}", later_files,
                                {"metrics.jsonl": "".join(line + "\n" for line in later)})
            if target is not None:
                print(f"[TRAIN] {path.name} (step {self.step}) is earlier than the run's latest checkpoint: "
                      f"{len(later)} later metric records, summary.json and latest.pt moved to {target} (nothing deleted)")
        if metrics.is_file():
            atomic_write_text(metrics, "".join(line + "\n" for line in keep), "metrics")
    def _summary(self, steps: int, updates: int, env_time: float, update_time: float, wall: float,
                 final: Path) -> dict[str, Any]:
        from av_td3.training.run_logger import read_metrics

        episodes = [r for r in read_metrics(self.run_dir) if r["type"] == "episode"]
        cnn = self.agent.cnn_diagnostics() if self.agent.cnn_trainable else None
        ev = self.last_eval or {}
        return {
            "algo": self.algo,
            "total_timesteps": self.step,
            "updates": self.updates,
            "episodes": self.episodes,
            "mean_episode_reward": _mean(e["reward"] for e in episodes),
            "mean_episode_length": _mean(e["length"] for e in episodes),
            "mean_speed_kmh": _mean(e["mean_speed_kmh"] for e in episodes),
            "eval_success_rate": ev.get("success_rate"),
            "eval_route_completion": ev.get("route_completion"),
            "eval_mean_reward": ev.get("episode_reward"),
            "eval_mean_speed_kmh": ev.get("mean_speed_kmh"),
            "cnn_weight_change": cnn["weight_change_total"] if cnn else 0.0,
            "env_steps_per_s": steps / env_time if env_time > 0 else None,
            "updates_per_s": updates / update_time if update_time > 0 else None,
            "wall_time_s": wall,
            "checkpoint": str(final),
            "run_dir": str(self.run_dir),
        }


# --------------------------------------------------------------------------------------------------
class _SignalFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the end of the current step.

    A second signal means the user wants out now: outside a save it raises ``TrainingAborted``; during a
    save (``saving``) it abandons the save (``abandoned``; the half-written temp file is removed and the
    previous checkpoint stays valid).
    """

    def __init__(self):
        self.signum: int | None = None
        self.saving = False
        self.abandoned = False
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, _frame) -> None:
        if self.signum is None:
            self.signum = signum
            return
        if self.abandoned:  # already on the way out
            return
        if self.saving:
            self.abandoned = True
            raise _SaveAbandoned()
        raise TrainingAborted(signum, f"stopped by a second {signal.Signals(signum).name} before saving")

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


class _SaveAbandoned(BaseException):
    """Raised inside a save by a second Ctrl-C (a BaseException so no library swallows it)."""


def _check_finite(stats: dict[str, Any], updates: int) -> None:
    """Raise ``NonFiniteLossError`` if the last update's losses are NaN/inf (one host sync; call rarely)."""
    for key in ("critic_loss", "actor_loss"):
        value = stats.get(key)
        if value is not None and not math.isfinite(float(value)):
            raise NonFiniteLossError(
                f"{key} became {float(value)} by update {updates}. Lower the learning rates "
                "(networks.*.learning_rate), set algorithm.max_grad_norm, or check the reward scale.")


def _crossed(before: int, after: int, every: int) -> bool:
    """Did the step count pass a multiple of ``every`` (0 = never) going from ``before`` to ``after``?
    With one env (after = before + 1) this is ``after % every == 0``."""
    return bool(every) and after // every > before // every


def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _scalar(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "numel", lambda: 1)() == 1:
        return v.item()
    return v


def _mean(values) -> float | None:
    vals = [float(v) for v in values]
    return float(np.mean(vals)) if vals else None


def _remove_stale_temp_files(folder: Path) -> None:
    """Temp files of saves that a kill -9 interrupted (the good file beside them is intact)."""
    for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
        tmp.unlink(missing_ok=True)
