"""DICOM files the tests write themselves from known arrays (pydicom writes them): tiny,
with chosen pixel-module facts, and identifying attributes planted so that a test can see
they never come out. The one writer for every DICOM test."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="the dicom extra is not installed")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid  # noqa: E402

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
#: The planted values as pieces a text could show (a name's parts, not its ^ form).
IDENTIFYING = ("Zorblatt", "Quintessa", "PID-7741-XQ", "19320417", "Wyvern", "Hollowmere",
               "ACC99321Z")  # fmt: skip


def dicom_dataset(
    pixels: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    modality: str = "CT",
    frames: bool = False,
    identifying: bool = True,
    **attributes: object,
) -> Dataset:
    """``pixels``: (H, W) or, with ``frames``, (frames, H, W) ints stored at their dtype's
    width (8 or 16 bits; wider ints are stored as 16-bit of the same signedness), or
    (H, W, 3) uint8 for RGB; None: a file with no pixel data. ``attributes``: any other
    attribute by keyword (``VOILUTFunction="SIGMOID"``), set last, so it may override."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
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
    if pixels is None:
        return ds
    pixels = np.asarray(pixels)
    if pixels.dtype.itemsize > 2:
        signed = np.issubdtype(pixels.dtype, np.signedinteger)
        pixels = pixels.astype(np.int16 if signed else np.uint16)
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
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("<"))).tobytes()
    return ds


def write_dicom(path: Path, pixels: np.ndarray | None, *, preamble: bool = True, **facts) -> Path:
    """A file of :func:`dicom_dataset`; ``preamble=False``: a bare dataset, with no
    128-byte preamble and no DICM marker."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = dicom_dataset(pixels, **facts)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)
    return path


def dicom_bytes(pixels: np.ndarray | None, **facts) -> bytes:
    buffer = BytesIO()
    dicom_dataset(pixels, **facts).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ramp(rows: int, columns: int, top: int = 4000, seed: int = 0) -> np.ndarray:
    """12-bit stored values rising left to right, with a little noise (distinct bytes per
    seed), as uint16."""
    values = np.linspace(0, top, columns)[None, :].repeat(rows, axis=0)
    noise = np.random.default_rng(seed).integers(0, 8, (rows, columns))
    return (values + noise).clip(0, top).astype(np.uint16)


def pydicom_file(name: str) -> Path:
    """A file shipped inside pydicom (never downloaded: a missing one skips the test)."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"pydicom's test file {name} is not in this install")
    return Path(found)
