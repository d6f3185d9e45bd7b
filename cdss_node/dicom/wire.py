"""What the node accepts from a peer on the wire: the bounds that keep a hostile or broken
peer from exhausting its memory, time or connections.

The receiver gives its pynetdicom AE a ``WireLimits`` (``attach``); the node's patches of
pynetdicom (``pdu_reader``, ``dataset_sink``, ``dimse_fast``, ``services``) act only on the
associations of an AE that carries one, and leave every other AE in the process (the node's
own sender, the PACS peers of the tests) to pynetdicom's own code.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import association, dul

MIB = 1024 * 1024
# An A-ASSOCIATE-RQ with the most presentation contexts PS3.8 allows (128) of 20 transfer
# syntaxes each, and two user identity fields of the largest size, is about 320 KiB.
MAX_ASSOCIATION_PDU_BYTES = 512 * 1024
# A-RELEASE-RQ/RP and A-ABORT have 4 bytes of content (PS3.8 9.3.6-9.3.8).
MAX_SHORT_PDU_BYTES = 64
# A command set is a few hundred bytes (PS3.7 9.3, 10.3); group 0000 only.
MAX_COMMAND_BYTES = 64 * 1024
# Datasets up to this size are assembled in memory; larger ones go to a file as they arrive.
SPILL_BYTES = 4 * MIB
# A dataset's header walk stops here: a CT header has a few hundred elements, an enhanced
# multi-frame CT of 2000 frames some 50 000 with its functional groups.
MAX_DATASET_ELEMENTS = 250_000


@dataclass(frozen=True)
class WireLimits:
    max_pdu_bytes: int          # P-DATA-TF: the Maximum Length Received the node announces
    pdu_timeout_s: float        # a PDU, once its first byte arrived, must arrive whole in this
    max_dataset_bytes: int      # a larger C-STORE dataset is read, discarded and refused
    spill_dir: Path             # where datasets over SPILL_BYTES are written as they arrive
    reserve_bytes: int = 0      # free disk kept in reserve while a dataset is spilled
    spill_bytes: int = SPILL_BYTES

    def max_pdu_length(self, pdu_type: int) -> int:
        """The largest length field accepted for a PDU of this type (PS3.8 9.3)."""
        if pdu_type == 0x04:
            return self.max_pdu_bytes
        if pdu_type in (0x01, 0x02):
            return MAX_ASSOCIATION_PDU_BYTES
        return MAX_SHORT_PDU_BYTES


def attach(ae, limits: WireLimits) -> None:
    """Put ``ae``'s associations under ``limits`` and the node's fast paths."""
    ae.cdss_limits = limits


def limits_of(ae) -> WireLimits | None:
    return getattr(ae, "cdss_limits", None)


def limits_here() -> WireLimits | None:
    """The limits of the association whose reactor thread (association or DUL) runs now."""
    thread = threading.current_thread()
    if isinstance(thread, association.Association):
        return limits_of(thread.ae)
    if isinstance(thread, dul.DULServiceProvider):
        assoc = getattr(thread, "assoc", None)
        return limits_of(assoc.ae) if assoc is not None else None
    return None
