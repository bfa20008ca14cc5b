"""``av-td3`` command line: ``train``, ``evaluate``, ``baseline``, ``compare``, ``report``, ``sweep``.

``av-td3 train`` → ``Trainer.run`` (training/trainer.py) → ``TD3Agent.train`` (agents/td3.py).
Bad input (config keys, values, files, missing servers) ends with one ``av-td3: error: ...`` line and
exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from av_td3.config import Config, ConfigError, load_config

#: Seed flags → config keys (``None`` means the flag was not given and the config decides).
FLAG_TO_KEY = {
    "scenario": "env.scenario",
    "env": "env.name",
    "max_timesteps": "training.max_timesteps",
    "device": "training.device",
    "seed": "training.seed",
    "eval_freq": "training.eval_freq",
    "checkpoint_freq": "training.checkpoint_freq",
    "num_eval_episodes": "evaluation.num_episodes",
    "log_dir": "logging.log_dir",
    "run_name": "logging.run_name",
    "algo": "algorithm.name",
}


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="av-td3", description="End-to-end visual TD3 for autonomous driving.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train an agent (TD3 by default) on the town or CARLA")
    add_train_arguments(train)

    ev = sub.add_parser("evaluate", help="evaluate a checkpoint: metrics with 95%% CIs, optional video")
    ev.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    ev.add_argument("--episodes", type=positive_int, default=None, help="episodes (default: evaluation.num_episodes)")
    ev.add_argument("--scenario", type=int, choices=(0, 1, 2), default=None)
    ev.add_argument("--env", choices=("town", "carla"), default=None)
    ev.add_argument("--seed", type=int, default=None, help="first episode seed (default: evaluation.seed)")
    ev.add_argument("--video", action="store_true", help="write a video of the episodes")
    ev.add_argument("--output", type=Path, default=None, help="output directory (default: RUN/eval)")
    ev.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    base = sub.add_parser("baseline", help="evaluate the classical PID + pure-pursuit controller")
    base.add_argument("--scenario", type=int, choices=(0, 1, 2), default=0)
    base.add_argument("--episodes", type=positive_int, default=10)
    base.add_argument("--seed", type=int, default=None, help="first episode seed (default: evaluation.seed)")
    base.add_argument("--env", choices=("town", "carla"), default=None)
    base.add_argument("--config", type=Path, default=None)
    base.add_argument("--video", action="store_true")
    base.add_argument("--output", type=Path, default=Path("baseline"))
    base.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    cmp_ = sub.add_parser("compare", help="evaluate several policies on the same seeded episodes")
    cmp_.add_argument("--checkpoint", dest="checkpoints", action="append", default=[], metavar="NAME=PATH",
                      help="a policy to compare, e.g. TD3=runs/x (repeatable)")
    cmp_.add_argument("--classical", action="store_true", help="include the PID + pure-pursuit controller")
    cmp_.add_argument("--scenario", type=int, choices=(0, 1, 2), default=0)
    cmp_.add_argument("--episodes", type=positive_int, default=10)
    cmp_.add_argument("--seed", type=int, default=None, help="first episode seed (default: evaluation.seed)")
    cmp_.add_argument("--env", choices=("town", "carla"), default=None)
    cmp_.add_argument("--output", type=Path, default=Path("comparison"))
    cmp_.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    cmp_.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    _carla_servers_cli().add_parser(sub)

    rep = sub.add_parser("report", help="markdown report for a run directory, or aggregates across seeds for a sweep")
    rep.add_argument("run_dir", type=Path, help="a run directory (runs/<name>) or a sweep directory (sweeps/<name>)")

    sw = sub.add_parser("sweep", help="run a grid of settings x seeds on Ray Tune (local, or a cluster with --address)")
    sw.add_argument("sweep_file", type=Path, help="sweep YAML, e.g. configs/sweep_nstep.yaml")
    sw.add_argument("--address", default=None, help="join a running Ray cluster (e.g. auto or HEAD_IP:6379); default: local Ray")
    sw.add_argument("--max-concurrent", type=positive_int, default=None, help="trials at once (default: sweep file, else as many as fit)")
    sw.add_argument("--resume", action="store_true", help="continue the sweep in --output: only unfinished trials run")
    sw.add_argument("--output", type=Path, default=None, help="sweep directory (default: sweeps/<sweep file name>)")
    sw.add_argument("--num-cpus", type=positive_int, default=None, help="CPUs local Ray may use (default: all)")
    sw.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key in every trial (repeatable)")
    return parser


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The seed's flags exactly, plus --env, --config, --set, --resume and a few conveniences."""
    p.add_argument("--scenario", type=int, choices=(0, 1, 2), default=None, help="0/1/2 = 20/50/100 NPCs")
    p.add_argument("--max-timesteps", type=int, default=None)
    p.add_argument("--debug", action="store_true", help="episode lines and the CNN gradient table")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--eval-freq", type=int, default=None)
    p.add_argument("--checkpoint-freq", type=int, default=None)
    p.add_argument("--num-eval-episodes", type=int, default=None)
    p.add_argument("--agent-config", type=Path, default=None, help="the seed's name for --config")
    p.add_argument("--config", type=Path, default=None, help="YAML config (configs/td3.yaml)")
    p.add_argument("--log-dir", default=None)
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="default: RUN/checkpoints")
    p.add_argument("--env", choices=("town", "carla"), default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set algorithm.batch_size=128 (repeatable)")
    p.add_argument("--run-name", default=None)
    p.add_argument("--resume", default=None, metavar="auto|PATH", help="continue a run from its checkpoint")
    p.add_argument("--save-buffer", action="store_true", default=None, help="checkpoint the replay buffer too")
    p.add_argument("--algo", choices=("td3", "ddpg"), default=None, help="algorithm.name (default td3)")
    _carla_servers_cli().add_train_flag(p)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train" and getattr(args, "carla_servers", None) is not None:  # servers for the run
            return _carla_servers_cli().train_with_servers(args, cmd_train, resolve_train_config)
        return {"train": cmd_train, "evaluate": cmd_evaluate, "compare": cmd_compare,
                "baseline": cmd_baseline, "carla-servers": _carla_servers_cli().cmd_carla_servers,
                "sweep": cmd_sweep,
                "report": cmd_report}[args.command](args)
    except _user_errors() as exc:
        print(f"av-td3: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an OS fault nobody explained closer to where it happened
        from av_td3.io import storage_error

        exc = storage_error(exc, "accessing")
        print(f"av-td3: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except _storage_errors() as exc:
        print(f"av-td3: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside training's own handling (evaluate, compare, a late second press)
        print("av-td3: interrupted (Ctrl-C); files written so far are complete (saves are atomic)", file=sys.stderr)
        return 128 + 2


def _storage_errors() -> tuple[type[BaseException], ...]:
    from av_td3.io import StorageError

    return (StorageError,)


def _carla_servers_cli():
    from av_td3.envs.carla import servers_cli

    return servers_cli


def _user_errors() -> tuple[type[BaseException], ...]:
    from av_td3.buffers import BufferTooLargeError
    from av_td3.io import CorruptFileError
    from av_td3.agents.td3 import AgentStateMismatchError
    from av_td3.training.setup import DeviceUnavailableError
    from av_td3.training.run_dir import RunLockedError, RunNameError

    from av_td3.report.sweep import SweepReportError

    errors: list[type[BaseException]] = [UsageError, ConfigError, SweepReportError, CorruptFileError, FileNotFoundError,
                                         BufferTooLargeError, DeviceUnavailableError, AgentStateMismatchError,
                                         RunLockedError, RunNameError]
    try:
        from av_td3.envs.carla.errors import CarlaUnavailableError

        errors.append(CarlaUnavailableError)
    except ImportError:
        pass
    return tuple(errors)


# --------------------------------------------------------------------------------------------------
def resolve_train_config(args: argparse.Namespace, base: dict | None = None) -> Config:
    """Config file (``--config``/``--agent-config``), then seed flags, then ``--set`` overrides."""
    if args.config and args.agent_config and args.config != args.agent_config:
        raise UsageError("--config and --agent-config name different files; pass one")
    path = args.config or args.agent_config
    overrides = [f"{key}={getattr(args, flag)}" for flag, key in FLAG_TO_KEY.items() if getattr(args, flag, None) is not None]
    if getattr(args, "save_buffer", None):
        overrides.append("training.save_buffer=true")
    return load_config(path, overrides + list(args.overrides), base=base)


def cmd_train(args: argparse.Namespace) -> int:
    from av_td3.training.checkpoint import find_checkpoint, load_checkpoint, run_dir_of, saved_config
    from av_td3.training.setup import resolve_device
    from av_td3.training.diagnostics import NonFiniteLossError
    from av_td3.io import check_writable_dir
    from av_td3.training.run_dir import RunLock, check_run_name, move_aside, restartable_leftovers
    from av_td3.training.trainer import Trainer, TrainingAborted, TrainingInterrupted

    resume_from = None
    leftovers: list[Path] = []
    checkpoint_dir = args.checkpoint_dir
    if args.resume:
        probe = resolve_train_config(args)
        if probe.logging.run_name:
            check_run_name(probe.logging.run_name)
        target = args.resume
        if target == "auto" and checkpoint_dir is not None and (checkpoint_dir / "latest.pt").is_file():
            target = checkpoint_dir / "latest.pt"
        resume_from = find_checkpoint(target, probe.logging.log_dir, probe.logging.run_name)
        saved = load_checkpoint(resume_from)
        if args.config or args.agent_config:
            raise UsageError("--resume continues a run with its saved config; drop --config (use --set to change keys)")
        cfg = resolve_train_config(args, base=saved_config(saved))
        run_dir = run_dir_of(resume_from, saved)
        checkpoint_dir = checkpoint_dir or resume_from.parent
    else:
        cfg = resolve_train_config(args)
        name = check_run_name(cfg.logging.run_name) if cfg.logging.run_name else \
            f"{cfg.algorithm.name}_{cfg.env.name}_s{cfg.env.scenario}_{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(cfg.logging.log_dir) / name
        leftovers = restartable_leftovers(run_dir, checkpoint_dir)
        if leftovers is None:
            raise UsageError(f"run directory {run_dir} already holds a run; continue it with --resume auto "
                             f"--run-name {name}, or pick another --run-name")
    # Where the run writes must be writable before anything starts (not at the first save).
    check_writable_dir(run_dir, "run directory (--log-dir/--run-name)")
    if checkpoint_dir is not None:
        check_writable_dir(checkpoint_dir, "--checkpoint-dir")
    algo = cfg.algorithm.name
    device = resolve_device(cfg.training.device)

    lock = RunLock(run_dir).acquire()  # a second training on this run fails here, at once
    locks = [lock]
    started = False
    try:
        if checkpoint_dir is not None and Path(checkpoint_dir).resolve() != (run_dir / "checkpoints").resolve():
            locks.append(RunLock(checkpoint_dir, "--checkpoint-dir").acquire())  # shared by two runs: same problem
        if leftovers:
            moved = move_aside(run_dir, "stopped-before-first-checkpoint", leftovers)
            print(f"[TRAIN] {run_dir} held a run that stopped before its first checkpoint (nothing to resume): "
                  f"starting it again; its files were moved to {moved}")
        print(f"[TRAIN] {algo.upper()} on {cfg.env.name} scenario {cfg.env.scenario}, {cfg.training.max_timesteps} steps, device {device}")
        trainer = Trainer(cfg, run_dir, device, checkpoint_dir=checkpoint_dir, debug=args.debug,
                          resume_from=resume_from)
        started = True
        print(f"[TRAIN] run directory: {run_dir}")  # only once it exists (the env and agent could be built)
        try:
            summary = trainer.run()
        except (TrainingInterrupted, TrainingAborted) as exc:
            return 128 + exc.signum
        except NonFiniteLossError:
            return 3  # the trainer printed what happened and where the state was saved
        finally:
            trainer.close()
    finally:
        for held in reversed(locks):
            held.release(remove_dir_if_unused=not started)

    from av_td3.report.markdown import write_report

    report = write_report(run_dir)
    video = None
    if cfg.evaluation.video:
        video = _evaluation_video(trainer, run_dir)
    print("\n[TRAIN] done: " + ", ".join(f"{k}={_fmt(summary[k])}" for k in (
        "total_timesteps", "updates", "episodes", "mean_episode_reward", "mean_speed_kmh",
        "eval_success_rate", "eval_route_completion", "cnn_weight_change", "env_steps_per_s", "updates_per_s")))
    print(f"[TRAIN] logs:        {run_dir}  (tensorboard --logdir {run_dir / 'tensorboard'})")
    print(f"[TRAIN] checkpoint:  {summary['checkpoint']}")
    print(f"[TRAIN] summary:     {run_dir / 'summary.json'}")
    print(f"[TRAIN] report:      {report}")
    if video:
        print(f"[TRAIN] video:       {video}")
    return 0


def _evaluation_video(trainer, run_dir: Path) -> Path:
    from av_td3.report.video import record_episodes

    cfg = trainer.cfg
    path = run_dir / f"eval_video.{cfg.evaluation.video_format}"
    policy = lambda o: trainer.agent.select_action(o, noise=0.0)  # noqa: E731
    record_episodes(cfg, policy, path, episodes=1, seed=cfg.evaluation.seed)
    return path


def cmd_evaluate(args: argparse.Namespace) -> int:
    from av_td3.io import check_writable_dir
    from av_td3.training.checkpoint import find_checkpoint
    from av_td3.training.evaluation import evaluate
    from av_td3.training.policies import load_checkpoint_policy
    from av_td3.training.setup import make_env

    path = find_checkpoint(args.checkpoint, ".", None, flag="--checkpoint")
    overrides = list(args.overrides)
    if args.scenario is not None:
        overrides.append(f"env.scenario={args.scenario}")
    if args.env is not None:
        overrides.append(f"env.name={args.env}")
    policy, cfg, algo = load_checkpoint_policy(path, overrides, args.device)
    episodes = args.episodes or cfg.evaluation.num_episodes
    seed = cfg.evaluation.seed if args.seed is None else args.seed

    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    out = args.output or run_dir / "eval"
    check_writable_dir(out, "--output" if args.output else "evaluation output directory")
    out.mkdir(parents=True, exist_ok=True)
    env = make_env(cfg)
    try:
        result = evaluate(env, policy, episodes, seed)
    finally:
        env.close()
    title = f"{algo.upper()} on {cfg.env.name} scenario {cfg.env.scenario} ({path.name})"
    (out / "eval.json").write_text(result.to_json())
    (out / "eval.md").write_text(result.to_markdown(title))
    print(result.to_markdown(title))
    if args.video:
        from av_td3.report.video import record_episodes

        video = record_episodes(cfg, policy, out / f"eval_video.{cfg.evaluation.video_format}", episodes, seed)
        print(f"[EVAL] video: {video}")
    print(f"[EVAL] results: {out / 'eval.json'}, {out / 'eval.md'}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from av_td3.baselines.classical import make_classical_policy
    from av_td3.training.evaluation import evaluate
    from av_td3.training.setup import make_env

    overrides = [f"env.scenario={args.scenario}", *args.overrides]
    if args.env is not None:
        overrides.append(f"env.name={args.env}")
    cfg = load_config(args.config, overrides)
    from av_td3.io import check_writable_dir

    check_writable_dir(args.output, "--output")
    seed = cfg.evaluation.seed if args.seed is None else args.seed
    policy = make_classical_policy(cfg)
    env = make_env(cfg)
    try:
        result = evaluate(env, policy, args.episodes, seed)
    finally:
        env.close()
    args.output.mkdir(parents=True, exist_ok=True)
    title = f"Classical PID + pure pursuit on {cfg.env.name} scenario {cfg.env.scenario}"
    (args.output / "eval.json").write_text(result.to_json())
    (args.output / "eval.md").write_text(result.to_markdown(title))
    print(result.to_markdown(title))
    if args.video:
        from av_td3.report.video import record_episodes

        print(f"[BASELINE] video: {record_episodes(cfg, policy, args.output / f'baseline.{cfg.evaluation.video_format}', args.episodes, seed)}")
    print(f"[BASELINE] results: {args.output / 'eval.json'}, {args.output / 'eval.md'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from av_td3.report.comparison import compare_policies, write_comparison
    from av_td3.training.policies import load_checkpoint_policy
    from av_td3.training.setup import make_env

    if not args.checkpoints and not args.classical:
        raise UsageError("nothing to compare: pass --checkpoint NAME=PATH (repeatable) and/or --classical")
    from av_td3.io import check_writable_dir

    check_writable_dir(args.output, "--output")  # before the episodes, not after them
    overrides = [f"env.scenario={args.scenario}", *args.overrides]
    if args.env is not None:
        overrides.append(f"env.name={args.env}")
    policies, cfg = {}, None
    for item in args.checkpoints:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--checkpoint {item!r} must look like NAME=PATH, e.g. TD3=runs/my_run")
        if name in policies:
            raise UsageError(f"policy name {name!r} given twice")
        policies[name], run_cfg, _ = load_checkpoint_policy(path, overrides, args.device)
        cfg = cfg or run_cfg  # the env settings of the first run define the episodes
    cfg = cfg or load_config(None, overrides)
    if args.classical:
        from av_td3.baselines.classical import make_classical_policy

        policies["Classical"] = make_classical_policy(cfg)
    seed = cfg.evaluation.seed if args.seed is None else args.seed
    comparison = compare_policies(policies, lambda: make_env(cfg), args.episodes, seed, args.scenario)
    paths = write_comparison(comparison, args.output)
    print(comparison.to_markdown())
    print(f"[COMPARE] {paths['json']}, {paths['markdown']}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from av_td3.sweep.runner import run_sweep
    from av_td3.sweep.spec import load_sweep

    if args.address and args.num_cpus:
        raise UsageError("--num-cpus sizes a local Ray; a cluster (--address) has the CPUs its nodes were started with")
    sweep = load_sweep(args.sweep_file, args.overrides)
    output = args.output or Path("sweeps") / sweep.name
    return run_sweep(sweep, output, address=args.address, max_concurrent=args.max_concurrent,
                     resume=args.resume, num_cpus=args.num_cpus)


def cmd_report(args: argparse.Namespace) -> int:
    from av_td3.report.markdown import write_report
    from av_td3.sweep.runner import MANIFEST

    if (args.run_dir / MANIFEST).is_file():
        from av_td3.report.sweep import write_sweep_report

        paths = write_sweep_report(args.run_dir)
        print(f"[REPORT] {paths['markdown']}\n[REPORT] {paths['json']}")
        return 0
    if not (args.run_dir / "metrics.jsonl").is_file():
        raise UsageError(f"{args.run_dir} is neither a run directory (no metrics.jsonl) nor a sweep directory "
                         f"(no {MANIFEST}); pass e.g. runs/<name> or sweeps/<name>")
    from av_td3.io import check_writable_dir

    check_writable_dir(args.run_dir, "run directory (the report is written into it)")
    print(f"[REPORT] {write_report(args.run_dir)}")
    return 0


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


if __name__ == "__main__":
    sys.exit(main())
