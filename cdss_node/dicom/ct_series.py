"""Write a synthetic :class:`ChestPhantom` as a CT Image Storage series, plus its ground truth.

One file per slice (``CT000001.dcm`` is the most cranial slice, phantom index 0), Explicit VR
Little Endian with File Meta. Stored values are ``HU + 1024`` as 12-bit unsigned integers, so the
modality LUT (RescaleSlope 1, RescaleIntercept -1024, RescaleType HU) gives the phantom's HU back
exactly. Every UID is derived from ``uid_seed`` and the phantom's spec, so the same call always
writes the same files; write different phantoms with different seeds or specs.

Dates and times are fixed so that the output is byte-for-byte reproducible. The header says, in
ImageComments, that the images are a synthetic phantom and show no patient.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from cdss_node.synthetic.phantom import ANATOMY_VERSION, ChestPhantom, grid_axes_mm

STUDY_DATE, STUDY_TIME = "20250612", "093000"
SERIES_TIME, ACQUISITION_TIME, CONTENT_TIME = "093512", "093520", "093545"
SYNTHETIC_COMMENT = "Synthetic phantom, no patient"
MANUFACTURER = "CDSS synthetic phantom"
RESCALE_INTERCEPT = -1024
BITS_STORED = 12
SMOKING_STATUSES = ("YES", "NO", "UNKNOWN")


def _require(ok: bool, name: str, expected: str, found: object) -> None:
    if not ok:
        raise ValueError(f"{name}: expected {expected}, found {found!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class PatientFacts:
    """The patient header facts of a synthetic series (all invented); checks itself."""

    name: str = "SYNTHETIC^PHANTOM"
    patient_id: str = "SYN0001"
    birth_date: str = "19610412"
    sex: str = "M"
    age_years: int = 64
    size_m: float = 1.72
    weight_kg: float = 70.0
    smoking_status: str = "YES"  # (0010,21A0) Smoking Status: YES / NO / UNKNOWN

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and 0 < len(self.name) <= 64 and "\\" not in self.name,
                 "name", "a PN of 1..64 characters", self.name)
        _require(isinstance(self.patient_id, str) and 0 < len(self.patient_id) <= 64,
                 "patient_id", "1..64 characters", self.patient_id)
        _require(isinstance(self.birth_date, str) and re.fullmatch(r"\d{8}", self.birth_date)
                 is not None, "birth_date", "a DA YYYYMMDD", self.birth_date)
        _require(self.sex in ("M", "F", "O"), "sex", "M, F or O", self.sex)
        _require(isinstance(self.age_years, int) and 0 <= self.age_years <= 130, "age_years",
                 "an int in 0..130", self.age_years)
        _require(_is_number(self.size_m) and 0.3 <= self.size_m <= 2.5, "size_m",
                 "0.3..2.5 m", self.size_m)
        _require(_is_number(self.weight_kg) and 1 <= self.weight_kg <= 400, "weight_kg",
                 "1..400 kg", self.weight_kg)
        _require(self.smoking_status in SMOKING_STATUSES, "smoking_status",
                 " / ".join(SMOKING_STATUSES), self.smoking_status)

    @property
    def dicom_age(self) -> str:
        """(0010,1010) Patient's Age as an AS value, e.g. ``"064Y"``."""
        return f"{self.age_years:03d}Y"


@dataclass(frozen=True)
class SeriesUids:
    """The UIDs of one written series; instances in slice order."""

    study: str
    series: str
    frame_of_reference: str
    instances: tuple[str, ...]


def series_uids(phantom: ChestPhantom, patient: PatientFacts, uid_seed: str,
                series_description: str = "SYNTHETIC CHEST CT") -> SeriesUids:
    """Deterministic UIDs: study and frame of reference per (seed, patient), the rest per series.

    The phantom's coordinates are body-fixed, so every series of one study shares its frame.
    """
    study_key = [uid_seed, patient.patient_id]
    series = str(generate_uid(entropy_srcs=[*study_key, phantom.spec.identity(),
                                            f"anatomy {ANATOMY_VERSION}", series_description,
                                            "series"]))
    instances = tuple(str(generate_uid(entropy_srcs=[series, "instance", str(k)]))
                      for k in range(phantom.spec.slices))
    return SeriesUids(study=str(generate_uid(entropy_srcs=[*study_key, "study"])), series=series,
                      frame_of_reference=str(generate_uid(entropy_srcs=[*study_key, "frame"])),
                      instances=instances)


def write_ct_series(phantom: ChestPhantom, out_dir: Path, patient: PatientFacts = PatientFacts(),
                    *, uid_seed: str = "cdss-sample",
                    series_description: str = "SYNTHETIC CHEST CT") -> list[Path]:
    """Write one CT Image Storage file per slice into ``out_dir``; returns the paths in order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    uids = series_uids(phantom, patient, uid_seed, series_description)
    paths = []
    for k in range(phantom.spec.slices):
        ds = _slice_dataset(phantom, patient, uids, series_description, k)
        path = out_dir / f"CT{k + 1:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _slice_dataset(phantom: ChestPhantom, patient: PatientFacts, uids: SeriesUids,
                   series_description: str, k: int) -> Dataset:
    """The complete dataset of slice ``k``, module by module, with its File Meta."""
    ds = Dataset()
    _sop_common(ds, uids.instances[k])
    _patient(ds, patient)
    _general_study(ds, uids, patient)
    _general_series(ds, uids, series_description)
    _equipment(ds)
    _general_image(ds, k)
    _image_plane(ds, phantom, k)
    _image_pixel(ds, phantom.hu[k])
    _ct_image(ds, phantom)
    _voi_lut(ds)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _ds(value: float) -> DSfloat:
    return DSfloat(float(value), auto_format=True)


def _sop_common(ds: Dataset, instance_uid: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate, ds.InstanceCreationTime = STUDY_DATE, CONTENT_TIME
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = instance_uid


def _patient(ds: Dataset, patient: PatientFacts) -> None:
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientComments = SYNTHETIC_COMMENT


def _general_study(ds: Dataset, uids: SeriesUids, patient: PatientFacts) -> None:
    ds.StudyDate, ds.StudyTime = STUDY_DATE, STUDY_TIME
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CT CHEST WITHOUT CONTRAST"
    ds.StudyInstanceUID = uids.study
    ds.StudyID = "1"
    ds.PatientAge = patient.dicom_age
    ds.PatientSize = _ds(patient.size_m)
    ds.PatientWeight = _ds(patient.weight_kg)
    ds.SmokingStatus = patient.smoking_status


def _general_series(ds: Dataset, uids: SeriesUids, series_description: str) -> None:
    ds.Modality = "CT"
    ds.SeriesInstanceUID = uids.series
    ds.SeriesNumber = 2
    ds.SeriesDate, ds.SeriesTime = STUDY_DATE, SERIES_TIME
    ds.SeriesDescription = series_description
    ds.ProtocolName = "CHEST"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.PositionReferenceIndicator = ""


def _equipment(ds: Dataset) -> None:
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = "CDSS synthetic data"
    ds.StationName = "SYNTHETIC"
    ds.ManufacturerModelName = "cdss_node.synthetic.phantom"
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = f"anatomy {ANATOMY_VERSION}"


def _general_image(ds: Dataset, k: int) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = k + 1
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate, ds.AcquisitionTime = STUDY_DATE, ACQUISITION_TIME
    ds.ContentDate, ds.ContentTime = STUDY_DATE, CONTENT_TIME
    ds.ImageComments = SYNTHETIC_COMMENT
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"


def _image_plane(ds: Dataset, phantom: ChestPhantom, k: int) -> None:
    """Axial plane; x to the patient's left, y to the back, z falling with the slice index."""
    z, y, x = grid_axes_mm(phantom.spec)
    ds.PixelSpacing = [_ds(phantom.spec.pixel_spacing_mm)] * 2
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.ImagePositionPatient = [_ds(x[0]), _ds(y[0]), _ds(z[k])]
    ds.SliceThickness = _ds(phantom.spec.slice_spacing_mm)
    ds.SpacingBetweenSlices = _ds(phantom.spec.slice_spacing_mm)
    ds.SliceLocation = _ds(z[k])


def _image_pixel(ds: Dataset, hu_slice: np.ndarray) -> None:
    """Stored value = HU + 1024 (0..4095, 12 bits stored, unsigned)."""
    stored = (hu_slice.astype(np.int32) - RESCALE_INTERCEPT).astype("<u2")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = hu_slice.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, BITS_STORED, BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"


def _ct_image(ds: Dataset, phantom: ChestPhantom) -> None:
    """CT Image module acquisition facts of a plausible non-contrast helical chest CT."""
    ds.RescaleIntercept, ds.RescaleSlope = str(RESCALE_INTERCEPT), "1"
    ds.RescaleType = "HU"
    ds.KVP = "120"
    ds.ScanOptions = "HELICAL MODE"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = _ds(phantom.spec.columns * phantom.spec.pixel_spacing_mm)
    ds.DistanceSourceToDetector, ds.DistanceSourceToPatient = "1040", "570"
    ds.GantryDetectorTilt, ds.TableHeight = "0", "150"
    ds.RotationDirection = "CW"
    ds.ExposureTime, ds.XRayTubeCurrent, ds.Exposure = "500", "200", "100"
    ds.FilterType = "BODY FILTER"
    ds.GeneratorPower = "24"
    ds.FocalSpots = "1.2"
    ds.ConvolutionKernel = "STANDARD"
    ds.RevolutionTime = 0.5
    ds.SingleCollimationWidth, ds.TotalCollimationWidth = 0.625, 40.0
    ds.TableSpeed, ds.TableFeedPerRotation, ds.SpiralPitchFactor = 78.75, 39.375, 0.984375
    ds.CTDIvol = 8.0
    phantom_type = Dataset()
    phantom_type.CodeValue, phantom_type.CodingSchemeDesignator = "113691", "DCM"
    phantom_type.CodeMeaning = "IEC Body Dosimetry Phantom"
    ds.CTDIPhantomTypeCodeSequence = [phantom_type]


def _voi_lut(ds: Dataset) -> None:
    ds.WindowCenter = ["-600", "40"]
    ds.WindowWidth = ["1500", "400"]
    ds.WindowCenterWidthExplanation = ["LUNG", "MEDIASTINUM"]


def write_truth(phantom: ChestPhantom, out_dir: Path, patient: PatientFacts = PatientFacts(), *,
                uid_seed: str = "cdss-sample",
                series_description: str = "SYNTHETIC CHEST CT") -> None:
    """Write ``tumor_mask.npz`` and ``truth.json`` for a series written with the same arguments.

    ``tumor_mask.npz`` (``np.savez_compressed``) holds ``tumor_mask`` and ``lung_mask`` as plain
    bool arrays (not bit-packed), z-y-x with index 0 = ``CT000001.dcm``, and ``spacing_mm``
    (z, y, x) as float64.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "tumor_mask.npz", tumor_mask=phantom.tumor_mask,
                        lung_mask=phantom.lung_mask,
                        spacing_mm=np.asarray(phantom.spacing_mm, dtype=np.float64))
    truth = _truth_record(phantom, patient, series_uids(phantom, patient, uid_seed,
                                                        series_description))
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")


def _truth_record(phantom: ChestPhantom, patient: PatientFacts, uids: SeriesUids) -> dict:
    z, y, x = grid_axes_mm(phantom.spec)
    kz, ky, kx = phantom.tumor_centre_voxel
    return {
        "description": SYNTHETIC_COMMENT,
        "anatomy_version": ANATOMY_VERSION,
        "spec": dataclasses.asdict(phantom.spec),
        "array_axes": "z-y-x; array slice k is CT000001.dcm for k=0, InstanceNumber k+1",
        "spacing_mm_zyx": list(phantom.spacing_mm),
        "tumor_centre_voxel_zyx": [kz, ky, kx],
        "tumor_centre_patient_mm_lps": [float(x[kx]), float(y[ky]), float(z[kz])],
        "tumor_voxels": int(np.count_nonzero(phantom.tumor_mask)),
        "tumor_volume_mm3": phantom.tumor_volume_mm3,
        "tumor_location": "right lung",
        "patient": dataclasses.asdict(patient),
        "study_instance_uid": uids.study,
        "series_instance_uid": uids.series,
        "frame_of_reference_uid": uids.frame_of_reference,
    }
