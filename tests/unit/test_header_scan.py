"""The lean header walk agrees with pydicom, and finds truncation wherever the cut falls."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filereader import data_element_generator
from pydicom.sequence import Sequence
from pynetdicom.dsutils import encode

from cdss_node.dicom.header_scan import HeaderScan, Truncated

SYNTAXES = [(True, True), (False, True), (False, False)]  # implicit LE, explicit LE, explicit BE

text = st.text(alphabet="ABCDEFGH 0123456789", min_size=0, max_size=9)


def item(draw_text: str) -> Dataset:
    ds = Dataset()
    ds.CodeValue = draw_text or "X"
    ds.CodeMeaning = "meaning"
    return ds


@st.composite
def datasets(draw) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3." + str(draw(st.integers(1, 10**9)))
    ds.PatientName = draw(text)
    ds.Rows, ds.Columns = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    ds.BitsAllocated = 16
    if draw(st.booleans()):
        seq = Sequence([item(draw(text)) for _ in range(draw(st.integers(0, 3)))])
        ds.ReferencedImageSequence = seq
        ds["ReferencedImageSequence"].is_undefined_length = draw(st.booleans())
        for nested in seq:
            nested.is_undefined_length_sequence_item = draw(st.booleans())
    if draw(st.booleans()):
        ds.ImageComments = draw(text)
    ds.PixelData = bytes(draw(st.binary(min_size=0, max_size=64)))
    return ds


def pydicom_elements(raw: bytes, implicit: bool, little: bool) -> dict[int, tuple | None]:
    """(value offset, length) of each top-level element as pydicom's reader finds them; None
    for the sequences it parses on the spot (it keeps no offset for those)."""
    return {int(e.tag): (e.value_tell, e.length) if hasattr(e, "value_tell") else None
            for e in data_element_generator(BytesIO(raw), implicit, little)}


@settings(max_examples=150, deadline=None)
@given(datasets(), st.sampled_from(SYNTAXES))
def test_offsets_and_lengths_agree_with_pydicom(ds, syntax):
    implicit, little = syntax
    raw = encode(ds, implicit, little)
    scan = HeaderScan(raw, implicit, little)
    expected = pydicom_elements(raw, implicit, little)
    assert set(scan.elements) == set(expected)
    for tag, where in expected.items():
        if where is not None:
            assert (scan.elements[tag].offset, scan.elements[tag].length) == where
    assert scan.end == len(raw)
    assert scan.text(0x00080018) == ds.SOPInstanceUID
    assert scan.us(0x00280010) == ds.Rows


@settings(max_examples=60, deadline=None)
@given(datasets(), st.sampled_from(SYNTAXES), st.floats(0.0, 0.999))
def test_any_cut_inside_an_element_is_found(ds, syntax, where):
    implicit, little = syntax
    raw = encode(ds, implicit, little)
    boundaries = element_boundaries(raw, implicit, little)
    cut = int(where * len(raw))
    if cut in boundaries:
        HeaderScan(raw[:cut], implicit, little)  # a dataset that simply has fewer elements
    else:
        with pytest.raises(Truncated):
            HeaderScan(raw[:cut], implicit, little)


def element_boundaries(raw: bytes, implicit: bool, little: bool) -> set[int]:
    """Where top-level elements end (the walk itself is checked against pydicom above)."""
    return {0} | {e.end for e in HeaderScan(raw, implicit, little).elements.values()}


def test_encapsulated_pixel_data_is_skipped_to_its_delimiter():
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    ds.PixelData = encapsulate([b"\x01" * 101, b"\x02" * 50])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    raw = encode(ds, False, True)
    scan = HeaderScan(raw, False, True)
    assert scan.end == len(raw) and 0x7FE00010 in scan
    with pytest.raises(Truncated):
        HeaderScan(raw[:-8], False, True)


def test_real_ct_slice(tmp_path):
    from tests.conftest import write_series

    path = write_series(tmp_path, rows=64, slices=8).files[0]
    ds = pydicom.dcmread(path)
    raw = encode(ds, False, True)
    scan = HeaderScan(raw, False, True)
    assert scan.text(0x0020000E) == ds.SeriesInstanceUID
    assert scan.elements[0x7FE00010].length == ds.Rows * ds.Columns * 2
    assert np.isfinite(len(scan.elements))


@pytest.mark.parametrize("explicit", [False, True])
def test_millions_of_tiny_elements_are_refused_at_the_element_bound(explicit):
    """16 MB of 12-byte private elements (1.4 million): the walk stops at MAX_ELEMENTS
    instead of holding a core for seconds (a 1.5 GB dataset of them held one for minutes);
    bench/hostile.py's note gives the time."""
    import struct

    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    from cdss_node.dicom import checks
    from cdss_node.dicom.header_scan import MAX_ELEMENTS

    header = struct.Struct("<HH2sH" if explicit else "<HHI")
    n = 16 * 1024 * 1024 // 12
    data = b"".join((header.pack(0x0009, 0x1000 + i % 0xEFFF, b"LO", 4) if explicit else
                     header.pack(0x0009, 0x1000 + i % 0xEFFF, 4)) + b"abcd" for i in range(n))
    syntax = ExplicitVRLittleEndian if explicit else ImplicitVRLittleEndian
    problem = checks.scan_dataset(data, syntax)
    assert problem == checks.StoreProblem(
        checks.CANNOT_UNDERSTAND, f"dataset cannot be parsed (more than {MAX_ELEMENTS} data "
                                  "elements)")
    assert isinstance(checks.scan_dataset(data[:12 * 1000], syntax), HeaderScan)
