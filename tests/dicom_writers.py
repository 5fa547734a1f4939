"""Small DICOM writers for tests: an MR series carrying PHI everywhere, and RTSTRUCT files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"

# A distinctive string in every text attribute a scanner or PACS may fill (PS3.15 basic profile
# attributes and free text), so that any leak into the lake is found by a byte search.
PHI = {
    "PatientName": "Phiname^Zebediah",
    "PatientID": "PHIMRN-4417",
    "PatientBirthDate": "19590321",
    "PatientAddress": "PHIADDR 12 Quince Lane",
    "OtherPatientIDs": "PHIOTHER-9931",
    "PatientComments": "PHIPATCOMMENT likes tea",
    "StudyDate": "20210917",
    "SeriesDate": "20210917",
    "AcquisitionDate": "20210917",
    "ContentDate": "20210917",
    "StudyTime": "101112",
    "StudyID": "PHISTUDYID7",
    "AccessionNumber": "PHIACC55123",
    "StudyDescription": "PHISTUDYDESC brain tumour Zebediah",
    "SeriesDescription": "PHISERIESDESC T1 post PHIMRN-4417",
    "ProtocolName": "PHIPROTOCOL neuro Zebediah",
    "ImageComments": "PHICOMMENT patient moved",
    "InstitutionName": "PHIINSTITUTION Saint Quux Hospital",
    "InstitutionAddress": "PHIINSTADDR 1 Hospital Road",
    "InstitutionalDepartmentName": "PHIDEPT Radiology",
    "ReferringPhysicianName": "Phireferrer^Quentin",
    "PerformingPhysicianName": "Phiperformer^Ursula",
    "OperatorsName": "Phioperator^Wilma",
    "StationName": "PHISTATION01",
    "DeviceSerialNumber": "PHISERIAL8841",
    "RequestedProcedureDescription": "PHIREQPROC MRI head",
    "PerformedProcedureStepDescription": "PHIPPSDESC MRI head",
    "AdditionalPatientHistory": "PHIHISTORY seizures",
    "SequenceName": "PHISEQNAME",
}
# The type 2 patient/study attributes with neutral values (highdicom requires them).
NEUTRAL = {"PatientName": "Anon^", "PatientID": "ANON", "PatientBirthDate": "",
           "PatientSex": "O", "StudyDate": "20000101", "StudyTime": "000000", "StudyID": "1",
           "AccessionNumber": "", "ReferringPhysicianName": ""}
PRIVATE_CREATOR = "PHI PRIVATE CREATOR"
PRIVATE_VALUE = "PHIPRIVATE secret payload 7781"


def phi_needles() -> list[bytes]:
    """Return the byte strings that must never appear in a lake built from `write_mr_series`."""
    values = [v for k, v in PHI.items() if k != "StudyTime"] + [PRIVATE_VALUE, PRIVATE_CREATOR]
    words = set(values)
    for v in values:  # each distinctive word alone too (a truncated or re-joined value)
        words |= {w for w in v.replace("^", " ").split()
                  if (w.lower().startswith("phi") and len(w) >= 6) or w in DISTINCTIVE}
    return sorted({w.encode() for w in words})


DISTINCTIVE = {"Zebediah", "Quentin", "Ursula", "Wilma", "Quince"}


def _new_dataset(sop_class: str) -> Dataset:
    """Return an empty dataset of a SOP class with its file meta and a new instance UID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def write_mr_series(folder: Path, arr: np.ndarray, spacing=(0.8, 0.8, 2.5),
                    origin=(0.0, 0.0, 0.0), phi: dict | None = None,
                    acquisition: dict | None = None, file_name: str = "IM{:04d}.dcm") -> dict:
    """Write a (z, y, x) int16 array as an axial MR series, one file per slice.

    spacing/origin in ITK (x, y, z) mm order. phi: text attributes to set (default PHI, and then
    a private tag too); acquisition: attributes such as EchoTime (default: a typical 3D T1);
    file_name: the slice files' name pattern (formatted with the slice number).
    Returns the series' UIDs: {"StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"}.
    """
    phi = PHI if phi is None else phi
    acq = {"MagneticFieldStrength": 3.0, "RepetitionTime": 2300.0, "EchoTime": 2.98,
           "InversionTime": 900.0, "FlipAngle": 9.0, "MRAcquisitionType": "3D"}
    acq.update(acquisition or {})
    folder.mkdir(parents=True, exist_ok=True)
    uids = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid(),
            "FrameOfReferenceUID": generate_uid()}
    for k in range(arr.shape[0]):
        ds = _new_dataset(MRImageStorage)
        for key, val in uids.items():
            setattr(ds, key, val)
        ds.Modality = "MR"
        for key, val in {**phi, **acq}.items():
            setattr(ds, key, val)
        if phi is PHI:  # and a private tag
            block = ds.private_block(0x0009, PRIVATE_CREATOR, create=True)
            block.add_new(0x01, "LO", PRIVATE_VALUE)
        ds.SeriesNumber = 7
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = arr.shape[1], arr.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.PixelData = arr[k].astype(np.int16).tobytes()
        ds.save_as(folder / file_name.format(k), enforce_file_format=True)
    return uids


def write_rtstruct(path: Path, uids: dict, rois: dict[str, list[np.ndarray]],
                   phi: dict | None = None, roi_frame_uid: str | None = None) -> Path:
    """Write an RTSTRUCT: rois maps ROI name -> closed planar contours ((n, 3) LPS mm arrays);
    an empty list gives an ROI without contours. uids: the image series' UIDs (as returned by
    `write_mr_series`); roi_frame_uid overrides each ROI's ReferencedFrameOfReferenceUID."""
    phi = {} if phi is None else phi
    ds = _new_dataset(RTSTRUCT_STORAGE)
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID = uids["StudyInstanceUID"]
    ds.SeriesInstanceUID = generate_uid()
    for key, val in phi.items():
        setattr(ds, key, val)
    ds.StructureSetLabel = phi.get("SeriesDescription", "RS")[:16]
    ds.StructureSetName = phi.get("ProtocolName", "structures")[:64]

    series = Dataset()
    series.SeriesInstanceUID = uids["SeriesInstanceUID"]
    series.ContourImageSequence = Sequence([])
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = uids["StudyInstanceUID"]
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = uids["FrameOfReferenceUID"]
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

    ds.StructureSetROISequence = Sequence([])
    ds.ROIContourSequence = Sequence([])
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = roi_frame_uid or uids["FrameOfReferenceUID"]
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ROIDisplayColor = [255, 0, 0]
        if contours:
            item.ContourSequence = Sequence([])
            for pts in contours:
                c = Dataset()
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(pts)
                c.ContourData = [f"{v:.6g}" for v in np.asarray(pts, float).ravel()]
                item.ContourSequence.append(c)
        ds.ROIContourSequence.append(item)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def square(x0: float, y0: float, x1: float, y1: float, z: float) -> np.ndarray:
    """Return a closed axis-aligned rectangle contour at height z (mm) as a (4, 3) array."""
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=float)
