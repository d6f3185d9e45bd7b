"""Writing a phantom as a CT series: pixel round trip, geometry, header facts, UIDs, dciodvfy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from cdss_node.dicom.ct_series import PatientFacts, write_ct_series, write_truth
from cdss_node.synthetic.phantom import ChestPhantom, PhantomSpec, make_chest_phantom
from tests.conftest import require_tool

SPEC = PhantomSpec(rows=96, columns=96, slices=20, pixel_spacing_mm=4.0, slice_spacing_mm=2.5)


@pytest.fixture(scope="module")
def phantom() -> ChestPhantom:
    return make_chest_phantom(SPEC)


@pytest.fixture(scope="module")
def written(phantom, tmp_path_factory) -> list[Path]:
    return write_ct_series(phantom, tmp_path_factory.mktemp("ct") / "series")


@pytest.fixture(scope="module")
def datasets(written) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path) for path in written]


def _uids(datasets: list[pydicom.Dataset]) -> list[tuple[str, ...]]:
    return [(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.SOPInstanceUID)
            for ds in datasets]


def test_one_file_per_slice_in_order(written, datasets):
    assert [p.name for p in written] == [f"CT{k:06d}.dcm" for k in range(1, 21)]
    assert [ds.InstanceNumber for ds in datasets] == list(range(1, 21))
    for ds in datasets:
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == CTImageStorage == ds.file_meta.MediaStorageSOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_modality_lut_gives_the_phantom_hu_back(phantom, datasets):
    for k, ds in enumerate(datasets):
        assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 12, 0)
        assert ds.RescaleType == "HU"
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        assert np.array_equal(hu, phantom.hu[k]), f"slice {k}"


def test_positions_step_along_the_slice_normal_by_the_spacing(datasets):
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    along = [float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float)))
             for ds in datasets]
    steps = np.diff(along)
    assert np.all(steps < 0) or np.all(steps > 0)
    assert np.allclose(np.abs(steps), SPEC.slice_spacing_mm)
    for ds, position in zip(datasets, along):
        assert list(ds.ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
        assert float(ds.SliceLocation) == pytest.approx(position)
        assert [float(v) for v in ds.PixelSpacing] == [SPEC.pixel_spacing_mm] * 2
        assert float(ds.SliceThickness) == SPEC.slice_spacing_mm


def test_header_holds_the_clinical_facts(datasets):
    ds = datasets[0]
    assert (ds.PatientName, ds.PatientID, ds.PatientBirthDate) == (
        "SYNTHETIC^PHANTOM", "SYN0001", "19610412")
    assert ds.PatientSex == "M"
    assert ds.PatientAge == "064Y"
    assert float(ds.PatientSize) == pytest.approx(1.72)
    assert float(ds.PatientWeight) == pytest.approx(70.0)
    assert ds.SmokingStatus == "YES"
    assert (ds.Modality, ds.BodyPartExamined, ds.PatientPosition) == ("CT", "CHEST", "HFS")
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert ds.Manufacturer == "CDSS synthetic phantom"
    assert "Synthetic phantom, no patient" in ds.ImageComments
    assert [float(v) for v in ds.WindowCenter] == [-600, 40]
    assert [float(v) for v in ds.WindowWidth] == [1500, 400]


def test_other_patient_facts_reach_the_header(phantom, tmp_path):
    patient = PatientFacts(sex="F", age_years=7, size_m=1.2, weight_kg=23.5,
                           smoking_status="NO", patient_id="SYN0002")
    ds = pydicom.dcmread(write_ct_series(phantom, tmp_path, patient)[0])
    assert (ds.PatientSex, ds.PatientAge, ds.SmokingStatus) == ("F", "007Y", "NO")
    assert float(ds.PatientSize) == 1.2 and float(ds.PatientWeight) == 23.5


@pytest.mark.parametrize(("field", "value"), [
    ("sex", "X"), ("age_years", -1), ("smoking_status", "SOMETIMES"), ("size_m", 17.2),
    ("weight_kg", float("inf")), ("birth_date", "1961-04-12"), ("patient_id", ""),
])
def test_bad_patient_facts_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field}: expected"):
        PatientFacts(**{field: value})


def test_same_seed_gives_the_same_uids(phantom, datasets, tmp_path):
    again = [pydicom.dcmread(p) for p in write_ct_series(phantom, tmp_path / "again")]
    assert _uids(again) == _uids(datasets)
    other = [pydicom.dcmread(p) for p in write_ct_series(phantom, tmp_path / "other",
                                                          uid_seed="another")]
    assert not set(_uids(other)[0]) & set(_uids(datasets)[0])


def test_uids_are_valid_and_distinct(datasets):
    rows = _uids(datasets)
    assert len({row[:3] for row in rows}) == 1, "one study, series and frame of reference"
    instances = [row[3] for row in rows]
    assert len(set(instances)) == len(instances)
    for uid in {*rows[0][:3], *instances}:
        assert UID(uid).is_valid, uid
    assert len(set(rows[0][:3])) == 3


def test_truth_matches_the_series(phantom, datasets, tmp_path):
    write_truth(phantom, tmp_path)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["series_instance_uid"] == datasets[0].SeriesInstanceUID
    assert truth["study_instance_uid"] == datasets[0].StudyInstanceUID
    assert truth["tumor_centre_voxel_zyx"] == list(phantom.tumor_centre_voxel)
    assert truth["tumor_volume_mm3"] == phantom.tumor_volume_mm3
    assert truth["patient"]["smoking_status"] == "YES"
    assert truth["spec"]["rows"] == SPEC.rows
    with np.load(tmp_path / "tumor_mask.npz") as saved:
        assert np.array_equal(saved["tumor_mask"], phantom.tumor_mask)
        assert saved["tumor_mask"].dtype == bool
        assert tuple(saved["spacing_mm"]) == phantom.spacing_mm


def _tool_output(tool: str, paths: list[Path]) -> list[str]:
    done = subprocess.run([require_tool(tool), *map(str, paths)], capture_output=True,
                          text=True, timeout=120)
    return (done.stdout + done.stderr).splitlines()


def test_dciodvfy_finds_no_errors(written):
    for path in (written[0], written[len(written) // 2], written[-1]):
        lines = _tool_output("dciodvfy", [path])
        errors = [line for line in lines if "Error" in line]
        assert not errors, "\n".join(lines)
        assert any("CTImage" in line for line in lines), "dciodvfy did not recognise a CT image"


def test_dcentvfy_finds_the_series_consistent(written):
    lines = _tool_output("dcentvfy", written)
    assert not [line for line in lines if "Error" in line or "Warning" in line], "\n".join(lines)
