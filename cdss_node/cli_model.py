"""``cdss-node model install | list | use``: the models installed on this node (see
``cdss_node.model.installed``). Each prints one line per model or one line of error."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cdss_node.config import load_config
from cdss_node.model.installed import ModelStoreError, install, installed_models, use

EXIT_RUNTIME = 1


def add_model_commands(sub) -> None:
    model = sub.add_parser("model", help="install, list and choose the node's models",
                           description=__doc__)
    commands = model.add_subparsers(required=True, metavar="ACTION")
    add = commands.add_parser("install", help="check a bundle (hashes, weights) and copy it in")
    add.add_argument("bundle", type=Path, help="bundle folder (cdss-train export)")
    add.add_argument("--use", action="store_true", help="make it the active model too")
    add.set_defaults(func=cmd_install)
    commands.add_parser("list", help="installed models; * marks the active one"
                        ).set_defaults(func=cmd_list)
    choose = commands.add_parser("use", help="make an installed model the active one "
                                 "(the node takes it at its next series)")
    choose.add_argument("name", help="as model list shows it")
    choose.set_defaults(func=cmd_use)


def cmd_install(args: argparse.Namespace) -> int:
    data_dir = load_config(args.config).node.data_dir
    try:
        name = install(args.bundle, data_dir)
        print(f"installed {name}")
        if args.use:
            return _use(name, args.config)
    except ModelStoreError as error:
        print(f"cdss-node model install: {error}", file=sys.stderr)
        return EXIT_RUNTIME
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    models = installed_models(config.node.data_dir)
    if not models:
        print("no model installed: the node uses the built-in default bundle (synthetic)")
    for m in models:
        print(f"{'*' if m.active else ' '} {m.name}  ({m.model_id} {m.version}"
              f"{', SYNTHETIC' if m.synthetic else ''}; model hash {m.sha256[:12]})")
    if models:
        print("model hash: the sha256 that SRs and /healthz name, of the bundle's manifest.json in "
              "canonical JSON (sorted keys, no spaces), not of a file")
    if config.analysis.bundle:
        print(f"note: [analysis] bundle = {config.analysis.bundle!r} in the config wins over "
              "the active model")
    return 0


def cmd_use(args: argparse.Namespace) -> int:
    try:
        return _use(args.name, args.config)
    except ModelStoreError as error:
        print(f"cdss-node model use: {error}", file=sys.stderr)
        return EXIT_RUNTIME


def _use(name: str, config_file: str | None) -> int:
    config = load_config(config_file)
    folder = use(name, config.node.data_dir)
    print(f"active model: {name} ({folder}); a running node takes it at its next series")
    if config.analysis.bundle:
        print(f"note: [analysis] bundle = {config.analysis.bundle!r} in the config wins over "
              "the active model until it is removed", file=sys.stderr)
    return 0
