"""Property tests: the receiver's checks never raise on any bytes a peer may send.

``scan_dataset`` → ``instance_header`` → ``image_problem`` (the path of ``Receiver._store``)
must always end in a ``StoreProblem``, an ``InstanceHeader`` and None, for valid datasets
mutated byte by byte (flipped, cut, inserted, deleted) and for random bytes, in the implicit
and explicit little-endian syntaxes; and fast, since it runs before every C-STORE answer.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless
from pynetdicom.dsutils import encode

from cdss_node.dicom import checks
from cdss_node.dicom.checks import InstanceHeader, StoreProblem
from cdss_node.dicom.header_scan import HeaderScan

CT = "1.2.840.10008.5.1.4.1.1.2"
SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# CDSS_FUZZ_EXAMPLES=5000: a longer, random (not derandomized) search, for a person to run
EXAMPLES = int(os.environ.get("CDSS_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXAMPLES or 400, derandomize=not EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _ct(encapsulated: bool = False) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = CT, "1.2.3.4.5"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.4"
    ds.Modality = "CT"
    ds.PatientName = "FUZZ^ÄÖ"
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "1", "99X", "x"
    ds.CTDIPhantomTypeCodeSequence = [item, item]
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 8, 8, 16, 1
    ds.NumberOfFrames = "1"
    if encapsulated:
        ds.PixelData = encapsulate([b"\x01" * 31, b"\x02" * 16])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = np.arange(64, dtype="<u2").tobytes()
    return ds


def _valid(syntax: UID, encapsulated: bool = False) -> bytes:
    return encode(_ct(encapsulated), syntax.is_implicit_VR, True)


BASES = {(str(s), False): _valid(s) for s in SYNTAXES}
BASES[(str(ExplicitVRLittleEndian), True)] = _valid(ExplicitVRLittleEndian, True)


def receiver_checks(raw: bytes, syntax: UID) -> object:
    """What ``Receiver._store`` does before writing: one of its three outcomes."""
    scan = checks.scan_dataset(raw, syntax)
    if isinstance(scan, StoreProblem):
        return scan
    assert isinstance(scan, HeaderScan)
    header = checks.instance_header(scan, CT, "1.2.3.4.5")
    if isinstance(header, StoreProblem):
        return header
    assert isinstance(header, InstanceHeader)
    problem = checks.image_problem(scan, syntax)
    assert problem is None or isinstance(problem, StoreProblem)
    return problem or header


def _apply(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for op, where, value in edits:
        at = where % (len(buf) + 1)
        if op == "flip" and buf:
            buf[at % len(buf)] ^= value[0] if value else 0xFF
        elif op == "cut":
            del buf[at:]
        elif op == "insert":
            buf[at:at] = value
        elif op == "delete":
            del buf[at:at + len(value) + 1]
        elif op == "overwrite":
            buf[at:at + len(value)] = value
    return bytes(buf)


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "delete", "overwrite"]),
                           st.integers(0, 10_000),
                           st.one_of(st.binary(min_size=1, max_size=12),
                                     st.sampled_from([b"\xff\xff\xff\xff", b"\xfe\xff\x00\xe0",
                                                      b"\xfe\xff\xdd\xe0", b"SQ\x00\x00",
                                                      b"OB\x00\x00\xff\xff\xff\xff"]))),
                 min_size=1, max_size=6)


def test_valid_bases_are_accepted():
    for (syntax, encapsulated), raw in BASES.items():
        ts = UID(JPEGLSLossless if encapsulated else syntax)
        assert isinstance(receiver_checks(raw, ts), InstanceHeader)


@FUZZ
@given(base=st.sampled_from(sorted(BASES)), edits=EDITS)
def test_mutated_datasets_never_raise(base, edits):
    syntax, encapsulated = base
    raw = _apply(BASES[base], edits)
    for ts in (UID(syntax), UID(JPEGLSLossless) if encapsulated else UID(syntax)):
        receiver_checks(raw, ts)


@FUZZ
@given(raw=st.binary(max_size=2048), syntax=st.sampled_from(SYNTAXES))
def test_random_bytes_never_raise(raw, syntax):
    receiver_checks(raw, UID(syntax))


@FUZZ
@given(prefix=st.binary(max_size=64), tag=st.integers(0, 0xFFFFFFFF),
       length=st.integers(0, 0xFFFFFFFF), syntax=st.sampled_from(SYNTAXES))
def test_any_element_header_never_raises(prefix, tag, length, syntax):
    """An element with any tag and any 32-bit length, after a valid dataset's bytes."""
    header = tag.to_bytes(4, "little")
    raw = BASES[(str(syntax), False)] + prefix + header + length.to_bytes(4, "little")
    receiver_checks(raw, UID(syntax))


def test_deeply_nested_sequences_are_refused_not_raised():
    """Undefined-length sequences nested thousands deep (a crafted dataset) end in a status."""
    depth = 20_000
    open_sq = b"\x08\x00\x15\x11" + b"\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    close_sq = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    raw = BASES[(str(ImplicitVRLittleEndian), False)] + open_sq * depth + close_sq * depth
    assert isinstance(receiver_checks(raw, ImplicitVRLittleEndian), StoreProblem)
