"""``cdss-node analyze-study --study UID``: an on-demand analysis of a study the PACS holds
(an older study, say). The command finds the study's CT series on the PACS (C-FIND, ``[retrieve]
source``) unless ``--series`` names them, and leaves one request per series in the running
node's index. The node takes each as it takes a radiologist's mark: at once when the series'
files are in its spool, after retrieving it from the PACS (C-MOVE or C-GET) when they are not.
Its results go to the destinations as usual. The command then waits, printing each change,
until every series is answered (``--wait 0``: it does not wait)."""

from __future__ import annotations

import argparse
import sys
import time

from cdss_node.config import load_config
from cdss_node.dicom.retrieve import RetrieveFailed, find_series
from cdss_node.store import requests
from cdss_node.uids import is_valid_uid

EXIT_RUNTIME = 1
POLL_S = 1.0
UNTAKEN_HINT_S = 15.0       # the node takes a request within 2 s while it runs


def add_study_command(sub) -> None:
    study = sub.add_parser("analyze-study", help="analyse a study the PACS holds (C-FIND, then "
                           "C-MOVE/C-GET by the running node)", description=__doc__)
    study.add_argument("--study", required=True, help="Study Instance UID")
    study.add_argument("--series", nargs="+", default=[],
                       help="Series Instance UIDs of its CT series (default: all, by C-FIND)")
    study.add_argument("--wait", type=float, default=1800.0,
                       help="seconds to wait for the answers (0: do not wait)")
    study.set_defaults(func=cmd_analyze_study)


def cmd_analyze_study(args: argparse.Namespace) -> int:
    from cdss_node.cli import _existing_index
    from cdss_node.node import INDEX_FILE

    config = load_config(args.config)
    bad = [uid for uid in [args.study, *args.series] if not is_valid_uid(uid)]
    if bad:
        return _fail(f"not a valid UID: {bad[0][:80]!r}")
    series = args.series or _ct_series(config, args.study)
    if series is None:
        return EXIT_RUNTIME
    index = _existing_index(config.data_path / INDEX_FILE)
    if index is None:
        return EXIT_RUNTIME
    ids = [requests.add(index, requests.STUDY, args.study, series_uid=uid) for uid in series]
    for request_id, uid in zip(ids, series):
        print(f"request {request_id}: series {uid}")
    try:
        return _follow(index, ids, args.wait) if args.wait > 0 else 0
    finally:
        index.close()


def _ct_series(config, study_uid: str) -> list[str] | None:
    source = config.retrieve_source
    if source is None:
        _fail("set [retrieve] source (the PACS) to find the study's CT series, or name "
              "them with --series")
        return None
    try:
        found = find_series(source, config.node.ae_title, study_uid)
    except RetrieveFailed as error:
        _fail(str(error))
        return None
    if not found:
        _fail(f"the PACS {source.name} holds no CT series in study {study_uid}")
        return None
    return found


def _follow(index, ids: list[int], wait_s: float) -> int:
    """Print each request's state as it changes, until all have ended or ``wait_s`` passed."""
    seen: dict[int, tuple] = {}
    started = time.monotonic()
    deadline, hinted = started + wait_s, False
    while time.monotonic() < deadline:
        rows = [requests.get(index, request_id) for request_id in ids]
        if not hinted and time.monotonic() - started > UNTAKEN_HINT_S and all(
                row["state"] == requests.RECEIVED and not row["attempts"] for row in rows):
            hinted = True
            print(f"no request taken after {UNTAKEN_HINT_S:.0f} s: is the node running with "
                  "this data_dir? (the requests wait for it)", file=sys.stderr, flush=True)
        for row in rows:
            now = (row["state"], row["detail"])
            if seen.get(row["id"]) != now:
                seen[row["id"]] = now
                detail = f": {row['detail']}" if row["detail"] else ""
                print(f"request {row['id']}: {row['state']}{detail}", flush=True)
        if all(row["state"] in requests.ENDED for row in rows):
            return 0 if all(row["state"] in ("done", "not_evaluable") for row in rows) \
                else EXIT_RUNTIME
        time.sleep(POLL_S)
    return _fail(f"not answered within {wait_s:g} s (the node goes on; see cdss-node status)")


def _fail(message: str) -> int:
    print(f"cdss-node analyze-study: {message}", file=sys.stderr)
    return EXIT_RUNTIME
