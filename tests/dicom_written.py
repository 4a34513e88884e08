"""DICOM files written by the tests (pydicom writes them): tiny, with chosen pixel-module
facts, and identifying attributes planted so that a test can see they never come out."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="the dicom extra is not installed")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

# Planted in every file written here; none of them may appear in anything headstart says.
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "MRN-7731-SECRET"
INSTITUTION = "St Elsewhere Clinic"
IDENTIFYING = ("Doe", "Jane", PATIENT_ID, "Elsewhere")


def dicom_dataset(
    pixels: np.ndarray | None,
    *,
    modality: str = "CT",
    bits: int = 12,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
) -> Dataset:
    """A single-frame gray image (or, with ``pixels`` None, a file without pixel data)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.InstitutionName = INSTITUTION
    if pixels is None:
        return ds
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    return ds


def write_dicom(path: Path, pixels: np.ndarray | None, **facts: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dicom_dataset(pixels, **facts).save_as(path, enforce_file_format=True)  # type: ignore[arg-type]
    return path


def dicom_bytes(pixels: np.ndarray | None, **facts: object) -> bytes:
    buffer = BytesIO()
    dicom_dataset(pixels, **facts).save_as(buffer, enforce_file_format=True)  # type: ignore[arg-type]
    return buffer.getvalue()


def ramp(rows: int, columns: int, top: int = 4000, seed: int = 0) -> np.ndarray:
    """Stored values rising left to right, with a little noise (distinct bytes per seed)."""
    values = np.linspace(0, top, columns)[None, :].repeat(rows, axis=0)
    noise = np.random.default_rng(seed).integers(0, 8, (rows, columns))
    return (values + noise).clip(0, top).astype(np.int64)


def shipped_file(name: str) -> Path:
    """A file pydicom ships (never downloaded: a missing one skips the test)."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"pydicom does not ship {name} here")
    return Path(found)
