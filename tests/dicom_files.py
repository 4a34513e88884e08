"""DICOM files the tests write themselves from known arrays (pydicom writes them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

#: Identifying values planted in every written file; none may leave headstart.
PLANTED = {
    "PatientName": "Zorblatt^Quintessa",
    "PatientID": "PID-7741-XQ",
    "PatientBirthDate": "19320417",
    "InstitutionName": "Saint Wyvern Clinic",
    "ReferringPhysicianName": "Dr^Hollowmere",
    "AccessionNumber": "ACC99321Z",
    "StudyDescription": "Thorax Wyvern study",
}


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    modality: str = "CT",
    frames: bool = False,
    preamble: bool = True,
    identifying: bool = True,
) -> Path:
    """``pixels``: (H, W) or (frames, H, W) ints, or (H, W, 3) uint8 for RGB."""
    pixels = np.asarray(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    if identifying:
        for keyword, value in PLANTED.items():
            setattr(ds, keyword, value)
    colour = photometric == "RGB"
    shape = pixels.shape[1:] if frames else pixels.shape
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(pixels.dtype, np.signedinteger) else 0
    if frames:
        ds.NumberOfFrames = int(pixels.shape[0])
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0.0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("<"))).tobytes()
    ds.save_as(path, enforce_file_format=preamble)
    if not preamble:  # no 128-byte preamble and no DICM marker: a bare dataset
        ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)
    return path


def pydicom_file(name: str) -> Path:
    """A file shipped inside pydicom (no download), or skip."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"pydicom's test file {name} is not in this install")
    return Path(found)
