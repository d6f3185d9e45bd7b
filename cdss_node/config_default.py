"""``cdss-node config-default``: the complete default configuration as a commented TOML file.

The text is made from the same field definitions that ``config.load_config`` validates against,
so the printed file and the built-in defaults cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap

from cdss_node.config import ENV_PREFIX, SECTIONS, field_default

HEADER = """\
# Configuration of the CDSS EGFR node.
# Every key is optional: a missing key takes the value shown here.
# Each key can be overridden by an environment variable CDSS_<SECTION>_<KEY>,
# e.g. CDSS_NODE_PORT=11113; lists are comma-separated there.
# Check a file with: cdss-node check-config FILE
"""

DESTINATIONS = """\
# Where results (SEG, SR and the result image) are sent: one [[destinations]] table per peer.
# No destination is configured by default. Example:
# [[destinations]]
# name = "pacs"
# ae_title = "ORTHANC"
# host = "127.0.0.1"
# port = 4242
# DICOM over TLS to that peer (its certificate must name host):
# tls = true
# tls_ca = "/etc/cdss-node/pacs-ca.pem"   # CA of the peer's certificate ("": the system's CAs)
# tls_cert = "/etc/cdss-node/node.pem"    # the node's certificate, if the peer requires one
# tls_key = "/etc/cdss-node/node.key"
"""


def toml_value(value: object) -> str:
    """A TOML literal for the simple values the config uses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def render_default_config() -> str:
    parts = [HEADER]
    for section, cls in SECTIONS.items():
        lines = [f"[{section}]"]
        for f in dataclasses.fields(cls):
            env = f"{ENV_PREFIX}{section}_{f.name}".upper()
            lines.extend(textwrap.wrap(f.metadata["help"], 78, initial_indent="# ",
                                       subsequent_indent="# "))
            lines.append(f"# env: {env}")
            lines.append(f"{f.name} = {toml_value(field_default(f))}")
        parts.append("\n".join(lines) + "\n")
    parts.append(DESTINATIONS)
    return "\n".join(parts)
