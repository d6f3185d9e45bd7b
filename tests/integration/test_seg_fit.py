"""``cdss-train seg-fit`` trains the node's U-Net on hybrid cases and ``seg-export`` writes
weights that the node's LungTumorMask segmenter loads. A smoke run: two batches, one epoch
(learning is shown by the run in the issue note and README, which takes minutes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cdss_node.pipeline.unet_segment import LungTumorMaskSegmenter
from tests.integration.test_segmentation_real_ct import load
from tests.conftest import REPO
from training.seg_fit import dicom_seg_cases, export, hybrid_training_cases
from training.segmentation_eval import volume_of

pytestmark = pytest.mark.integration
SAMPLE = REPO / "sample_dicom" / "series"


def test_seg_fit_checkpoints_and_seg_export_gives_weights_the_node_loads(tmp_path):
    load("ts-thorax")  # skips (or fails in CI) without the real CTs
    run = subprocess.run([sys.executable, "-m", "training", "seg-fit", str(tmp_path / "fit"),
                          "--hybrid", "1", "--validation", "1", "--epochs", "1",
                          "--iterations", "2", "--device", "cpu"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    history = json.loads((tmp_path / "fit" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1] and len(history[0]["validation_dice"]) == 1
    assert (tmp_path / "fit" / "best.pt").is_file() and (tmp_path / "fit" / "last.pt").is_file()
    weights = tmp_path / "unet.pt"
    digest = export(tmp_path / "fit" / "best.pt", weights)
    segmenter = LungTumorMaskSegmenter(weights, device="cpu", roi_size=(48, 64, 64))
    assert segmenter.version == f"weights sha256:{digest[:16]}"
    case = hybrid_training_cases(1, first_seed=1)[0]
    found = segmenter.segment(volume_of(case.hu, case.spacing_mm))
    assert found.mask.shape == case.mask.shape


def test_seg_export_refuses_a_checkpoint_of_another_network(tmp_path):
    torch.save({"model": {"conv.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(RuntimeError, match="state_dict"):
        export(tmp_path / "other.pt", tmp_path / "unet.pt")
    assert not (tmp_path / "unet.pt").exists()


def test_a_dicom_ct_with_its_seg_is_a_training_case(tmp_path):
    out = tmp_path / "analysed"
    run = subprocess.run([sys.executable, "-m", "cdss_node", "analyze", str(SAMPLE), "--out",
                          str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    case_dir = tmp_path / "data" / "sample"
    shutil.copytree(SAMPLE, case_dir)
    shutil.copy(out / "seg.dcm", case_dir / "seg.dcm")
    (case,) = dicom_seg_cases(tmp_path / "data")
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "tumor_mask.nii.gz"))) > 0
    assert case.name == "sample" and case.hu.shape == truth.shape
    assert np.array_equal(case.mask, truth) and truth.any()
