"""What headstart never lets out of a DICOM file: the attributes that identify a person, an
institution, a device or a visit, and the scrubbing of their values from third-party
messages (a decoder's complaint may quote what it was parsing)."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["IDENTIFYING_KEYWORDS", "scrub"]

#: Attributes of the DICOM basic de-identification profile (PS3.15 table E.1-1) that
#: name or point to a person, an institution, a device or a visit. headstart never reads
#: them; their values are only looked up to scrub them from third-party messages.
IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
    "PatientAge", "PatientSize", "PatientWeight", "PatientAddress",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "PatientBirthName",
    "OtherPatientIDs", "OtherPatientNames", "IssuerOfPatientID", "MedicalRecordLocator",
    "EthnicGroup", "Occupation", "MilitaryRank", "BranchOfService", "CountryOfResidence",
    "RegionOfResidence", "PatientReligiousPreference", "AdditionalPatientHistory",
    "PatientComments", "MedicalAlerts", "Allergies", "PregnancyStatus",
    "ResponsiblePerson", "ResponsibleOrganization", "PatientInsurancePlanCodeSequence",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
    "OperatorsName", "ScheduledPerformingPhysicianName", "AccessionNumber", "StudyID",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime",
    "AcquisitionTime", "ContentTime", "AcquisitionDateTime", "StudyInstanceUID",
    "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "StationName",
    "DeviceSerialNumber", "StudyDescription", "SeriesDescription", "ProtocolName",
    "RequestedProcedureDescription", "PerformedProcedureStepDescription",
    "AdmittingDiagnosesDescription", "DerivationDescription", "ImageComments",
    "InstanceCreatorUID", "IssuerOfAdmissionID", "AdmissionID", "PerformedLocation",
    "CurrentPatientLocation", "ReasonForStudy", "RequestedProcedureID",
)  # fmt: skip


def scrub(text: str, ds: Any) -> str:
    """``text`` with every identifying value found in ``ds`` replaced by ``<removed>``."""
    from pydicom.datadict import tag_for_keyword

    for keyword in IDENTIFYING_KEYWORDS:
        tag = tag_for_keyword(keyword)
        if tag is None or tag not in ds:
            continue
        raw = ds.get_item(tag).value
        if isinstance(raw, bytes | bytearray):
            raw = bytes(raw).decode("latin-1", "replace")
        for piece in {str(raw), *re.split(r"[\\^=]", str(raw))}:
            piece = piece.strip(" \x00")
            if len(piece) >= 2:
                text = text.replace(piece, "<removed>")
    return text
