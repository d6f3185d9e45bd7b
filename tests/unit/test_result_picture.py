"""The result image's pixels and caption: the slice at square pixels and 512 columns, the
outlines in their colours, the caption in lines that fit, and the intended use a model's
training data calls for."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import numpy as np

from cdss_node.dicom.result_image import NOT_FOR_CLINICAL_USE, RESEARCH_USE, caption
from cdss_node.dicom.result_picture import (PRIMARY_RGB, WIDTH, WARNING_COLOUR, Caption,
                                            Outline, lung_window, render)
from cdss_node.dicom.seg import Equipment
from cdss_node.dicom.sr import ReportedModel

CAPTION = Caption(("AI prediction: EGFR mutant, probability 0.800",), "NOT FOR CLINICAL USE")


def test_lung_window_maps_minus_1350_and_150_hu_to_black_and_white():
    assert lung_window(np.array([-2000.0, -1350.0, -600.0, 150.0, 3000.0])).tolist() == \
        [0, 0, 127, 255, 255]


def test_the_slice_is_shown_at_square_pixels_and_512_columns_above_the_caption():
    slice_hu = np.full((100, 200), -600.0, dtype=np.float32)
    alone = render(None, (1.0, 1.0), [], CAPTION)
    square = render(slice_hu, (1.0, 1.0), [], CAPTION)
    tall = render(slice_hu, (2.0, 1.0), [], CAPTION)        # rows twice as far apart
    assert alone.shape[1] == square.shape[1] == WIDTH and alone.shape[2] == 3
    assert square.shape[0] == 256 + alone.shape[0] and tall.shape[0] == 512 + alone.shape[0]
    assert np.array_equal(square[256:], alone)               # the caption below, unchanged
    assert np.all(square[:256] == 127)                       # lung window grey, no outline


def test_an_outline_is_drawn_in_its_colour_where_it_lies():
    slice_hu = np.full((128, 128), -1000.0, dtype=np.float32)
    square = np.array([[32, 32], [96, 32], [96, 96], [32, 96], [32, 32]], dtype=np.float32)
    picture = render(slice_hu, (0.7, 0.7), [Outline(square, PRIMARY_RGB)], CAPTION)
    red = np.all(picture[:WIDTH] == PRIMARY_RGB, axis=-1)
    rows, columns = np.nonzero(red)
    assert rows.min() >= 126 and rows.max() <= 386 and columns.min() >= 126
    assert red[256, 128] and not red[256, 256]               # on the edge, not inside


def test_a_long_caption_wraps_within_the_width_and_the_warning_is_red():
    one = render(None, (1.0, 1.0), [], Caption(("short",), "warning"))
    many = render(None, (1.0, 1.0), [], Caption(("word " * 200,), "warning"))
    assert many.shape == (many.shape[0], WIDTH, 3) and many.shape[0] > 5 * one.shape[0]
    assert np.any(np.all(one == WARNING_COLOUR, axis=-1))


def _analysis(lossy: bool = False):
    return SimpleNamespace(
        status="ok", quality_flags=(SimpleNamespace(sentence="The lungs run off the scan."),),
        prediction=SimpleNamespace(label="EGFR mutant", probability=0.8123, threshold=0.5),
        tumor=SimpleNamespace(volume_mm3=12345.0, other_candidates=1),
        volume=SimpleNamespace(lossy_compressed=lossy), mark=None)


def test_the_caption_says_result_model_date_and_the_intended_use_of_its_training_data():
    when = datetime.datetime(2026, 12, 2, 9, 30, tzinfo=datetime.timezone.utc)
    synthetic = ReportedModel("Model A", "1.2", "ab" * 32, synthetic=True)
    hospital = ReportedModel("Model B", "2.0", "cd" * 32, synthetic=False)
    shown = caption(_analysis(lossy=True), synthetic, Equipment("0.1.0"), when)
    text = " ".join(shown.lines)
    assert shown.warning == NOT_FOR_CLINICAL_USE
    for said in ("EGFR mutant, probability 0.812 (threshold 0.500)", "12.3 ml",
                 "other lesion candidates in yellow", "lossy-compressed",
                 "Quality: The lungs run off the scan.", "Model A 1.2 (sha256 abababababab)",
                 "2026-12-02 09:30 UTC"):
        assert said in text, said
    assert caption(_analysis(), hospital, Equipment("0.1.0"), when).warning == RESEARCH_USE
