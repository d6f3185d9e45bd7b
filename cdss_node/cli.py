"""``cdss-node``: run the node, look at its state, check its configuration, show a demo."""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sqlite3
import sys
import threading
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from cdss_node.cli_model import add_model_commands
from cdss_node.cli_study import add_study_command
from cdss_node.config import Config, ConfigError, load_config, shown
from cdss_node.config_default import render_default_config
from cdss_node.logs import configure_logging, get_logger
from cdss_node.store import outbox, requests

log = get_logger(__name__)

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        source = getattr(args, "file", None) or args.config or "config"
        for problem in exc.problems:
            print(f"{source}: {problem}", file=sys.stderr)
        return EXIT_CONFIG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdss-node", description=__doc__)
    parser.add_argument("--config", default=os.environ.get("CDSS_CONFIG"),
                        help="TOML configuration file (default: $CDSS_CONFIG, else built-in)")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    _command(sub, "serve", cmd_serve, "run the node until stopped (SIGTERM, Ctrl-C)")
    status = _command(sub, "status", cmd_status, "series, states, instance counts, reasons")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=50, help="most recent series shown")
    _command(sub, "resend", cmd_resend, "send dead results (see status) to their destination again")
    check = _command(sub, "check-config", cmd_check_config, "list every problem of a file")
    check.add_argument("file", type=Path)
    _command(sub, "config-default", cmd_config_default, "print the complete default file")
    analyze = _command(sub, "analyze", cmd_analyze,
                       "analyse one CT series folder: result.json and tumor_mask.nii.gz")
    analyze.add_argument("folder", type=Path, help="folder with the DICOM files of one series")
    analyze.add_argument("--out", type=Path, required=True, help="folder for the result files")
    analyze.add_argument("--bundle", help="model bundle folder (default: [analysis] bundle)")
    analyze.add_argument("--segmenter", choices=("default", "lungtumormask"))
    analyze.add_argument("--unet-weights", help="LungTumorMask-compatible weights file")
    analyze.add_argument("--device", choices=("auto", "cpu", "cuda"))
    analyze.add_argument("--stage", choices=("I", "II", "III", "IV"),
                         help="clinical stage (not in a CT header; imputed when not given)")
    analyze.add_argument("--family-history", choices=("yes", "no"),
                         help="family history of lung cancer (imputed when not given)")
    add_model_commands(sub)
    add_study_command(sub)
    demo = _command(sub, "demo", cmd_demo, "start the node, send the sample series, show it")
    demo.add_argument("--series", type=Path, default=Path("sample_dicom/series"),
                      help="folder of DICOM files to send (default: sample_dicom/series)")
    return parser


def _command(sub, name: str, func, help: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help)
    parser.set_defaults(func=func)
    return parser


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config, probe_data_dir=True)
    configure_logging(config.logging.level, config.logging.format)
    return config


# ---------------------------------------------------------------- commands


def cmd_check_config(args: argparse.Namespace) -> int:
    load_config(args.file, probe_data_dir=True)  # raises ConfigError, printed by main()
    print(f"{args.file}: OK")
    return 0


def cmd_config_default(args: argparse.Namespace) -> int:
    sys.stdout.write(render_default_config())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from cdss_node.monitor.server import HttpPortError
    from cdss_node.node import Node

    config = _config(args)
    os.umask(0o077)   # spool, index and results hold patient data: the node's user only
    try:
        node = Node(config)
    except (OSError, sqlite3.Error) as exc:    # the data folder changed since it was probed
        print(f"cdss-node: cannot use node.data_dir {shown(config.node.data_dir)}: {exc}",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        node.start()
    except HttpPortError as exc:
        print(f"cdss-node: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except OSError as exc:
        print(f"cdss-node: cannot listen on {config.node.host}:{config.node.port}: {exc}",
              file=sys.stderr)
        return EXIT_RUNTIME
    freeze_startup_objects()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    node.stop()
    return 0


def freeze_startup_objects() -> None:
    """Keep what the node made at start (modules, pydicom's dictionaries, pynetdicom's
    tables: some 60 000 objects) out of Python's cyclic garbage collections. A full
    collection over them took 13-15 ms and came about once per 250 received images, 5 % of
    ingest time (``bench/ingest.py``); objects freed by reference counting are freed as
    before, and what the node makes later is collected as before."""
    gc.collect()
    gc.freeze()


def cmd_status(args: argparse.Namespace) -> int:
    from cdss_node.node import INDEX_FILE
    from cdss_node.store.status import series_status, state_counts

    config = load_config(args.config)
    index_path = config.data_path / INDEX_FILE
    index = _existing_index(index_path)
    if index is None:
        return EXIT_RUNTIME
    rows, counts = series_status(index, args.limit), state_counts(index)
    sending, dead = outbox.counts(index), outbox.dead_rows(index)
    asked = requests.recent(index)
    index.close()
    if args.json:
        print(json.dumps({"states": counts, "series": [r.as_dict() for r in rows],
                          "outbox": sending, "dead": dead, "requests": asked}, indent=2))
    else:
        print(format_status(index_path, counts, rows))
        print(format_outbox(sending, dead))
        print(format_requests(asked))
    return 0


def format_requests(asked: list[dict]) -> str:
    """The latest marks and analyze-study requests, one line each (and why, where said)."""
    if not asked:
        return "requests (radiologists' marks, analyze-study): none"
    lines = ["requests (radiologists' marks, analyze-study), newest first:"]
    for r in asked:
        when = datetime.fromtimestamp(r["updated_at"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        why = f": {r['detail']}" if r["detail"] else ""
        lines.append(f"  {r['id']:>5} {r['kind']:<5} {r['state']:<14} {when}  series "
                     f"{r['series_uid'] or '-'}{why}")
    return "\n".join(lines)


def _existing_index(index_path: Path):
    """The node's index, or None after one line on stderr: status and resend never make a
    data folder (it may be a typo, a file, or a read-only path)."""
    from cdss_node.store.index import Index

    if not index_path.is_file():
        print(f"cdss-node: no index at {index_path} (has the node run with this data_dir?)",
              file=sys.stderr)
        return None
    return Index(index_path)


def format_outbox(sending: dict[str, int], dead: list[dict]) -> str:
    summary = ", ".join(f"{state} {n}" for state, n in sorted(sending.items())) or "empty"
    lines = [f"outbox (results to destinations): {summary}"]
    lines += [f"  dead: {Path(d['path']).name} -> {d['destination']} after {d['attempts']} "
              f"attempts: {d['last_error']}" for d in dead]
    if dead:
        lines.append("  'cdss-node resend' sends dead results again")
    return "\n".join(lines)


def cmd_resend(args: argparse.Namespace) -> int:
    from cdss_node.node import INDEX_FILE

    config = load_config(args.config)
    index = _existing_index(config.data_path / INDEX_FILE)
    if index is None:
        return EXIT_RUNTIME
    count = outbox.resend_dead(index)
    index.close()
    print(f"{count} dead result(s) queued again; the running node sends them within "
          f"{config.outbox.check_interval_s:g} s")
    return 0


def format_status(index_path: Path, counts: dict[str, int], rows: list) -> str:
    summary = ", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "none yet"
    lines = [f"index: {index_path}", f"series by state: {summary}"]
    if rows:
        lines.append(f"{'STATE':<14}{'INSTANCES':>9}  {'MOD':<4}{'LAST RECEIVED (UTC)':<21}"
                     f"SERIES INSTANCE UID / REASON")
    for r in rows:
        when = datetime.fromtimestamp(r.last_received, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{r.state:<14}{r.instances:>9}  {(r.modality or '-'):<4}{when:<21}"
                     f"{r.series_uid}")
        if r.reason:
            lines.append(f"{'':<49}{r.reason}")
        if r.result_file:
            lines.append(f"{'':<49}result: {r.result_file}")
    return "\n".join(lines)


def cmd_analyze(args: argparse.Namespace) -> int:
    from cdss_node.analysis import analyze_folder
    from cdss_node.pipeline.clinical import SuppliedFacts

    config = load_config(args.config)
    configure_logging("warning" if config.logging.level == "info" else config.logging.level,
                      config.logging.format)
    overrides = {key: getattr(args, key) for key in ("bundle", "segmenter", "unet_weights",
                                                     "device") if getattr(args, key)}
    overrides["data_dir"] = config.node.data_dir      # its active installed model
    overrides["result_image"] = config.outputs.result_image
    overrides["attention_map"] = config.outputs.attention_map
    try:
        supplied = SuppliedFacts(family_history=None if args.family_history is None
                                 else args.family_history == "yes", stage=args.stage)
        outcome = analyze_folder(args.folder, args.out, config.analysis, supplied, **overrides)
    except (OSError, ValueError) as exc:  # a missing folder, a damaged bundle, bad weights
        print(f"cdss-node analyze: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(outcome.summary())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cdss_node.demo import run_demo

    config = load_config(args.config)
    fmt = "console" if config.logging.format == "auto" else config.logging.format
    configure_logging(config.logging.level, fmt)  # a person reads the demo
    config = replace(config, logging=replace(config.logging, format=fmt))  # its worker too
    return run_demo(config, args.series)
