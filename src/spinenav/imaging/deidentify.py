"""De-identify DICOM datasets (PS3.15 Basic Application Level Confidentiality Profile) and write a
CT :class:`Volume` as a de-identified DICOM series.

:func:`deidentify` applies the Basic Profile, PS3.15 Annex E Table E.1-1 (the action of each of its
456 attributes is in :data:`BASIC_PROFILE_ACTIONS`), then sweeps what the table cannot list:

* private attributes (odd groups), curves (groups 50xx) and overlays (groups 60xx) are removed;
* every remaining person name (VR PN) is emptied, every remaining date, time or date-time
  (DA, DT, TM) and free text (ST, LT, UT) is removed: stricter than the table, which keeps a few
  (e.g. Date of Last Calibration), because any date narrows down who and when;
* every UID that is not a registered DICOM UID (1.2.840.10008...) or a class, transfer syntax or
  coding scheme UID is replaced by ``2.25.<uuid5>`` hashed from the old UID and `uid_salt`: the
  same input gives the same output in every file, so a series stays a series and references
  between files still match.

The table's choices "X/Z", "X/D", "X/Z/D" and "X/Z/U*" resolve to X (remove): right for the
classic image IODs spinenav writes and reads (CT, MR), where those attributes are Type 3. "Z/D"
resolves to Z (empty), "D" gives a dummy value, and a sequence marked Z or D is emptied.
"""

from __future__ import annotations

import copy
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from spinenav.atomic import atomic_folder
from spinenav.imaging.volume import Volume

#: Salt for the UID hash. Keep it to get the same new UIDs across runs (so series exported on
#: different days still link up); use a secret per project to make the mapping unguessable.
DEFAULT_UID_SALT = "spinenav"

#: Written into DeidentificationMethod (0012,0063); LO, at most 64 characters.
DEIDENTIFICATION_METHOD = "PS3.15 Basic Application Level Confidentiality Profile; spinenav"

#: The code of the Basic Profile in DeidentificationMethodCodeSequence (CID 7050).
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")

_NAMESPACE = uuid.UUID("6b1c2d0e-5a4f-4f7e-9d43-2f1b8e7c5a10")  # spinenav's uuid5 namespace

#: Basic Profile actions by keyword, PS3.15 Table E.1-1 (resolved as the module docstring says):
#: X remove, Z empty, D dummy value, U new UID.
_PROFILE_KEYWORDS = {
    "X": """
        AcquisitionComments AcquisitionContextSequence AcquisitionDate AcquisitionDateTime
        AcquisitionDeviceProcessingDescription AcquisitionProtocolDescription AcquisitionTime
        ActualHumanPerformersSequence AdditionalPatientHistory AddressTrial AdmissionID
        AdmittingDate AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription AdmittingTime
        AffectedSOPInstanceUID Allergies Arbitrary AuthorObserverSequence BarcodeValue
        BeamDescription BolusDescription BranchOfService CameraOwnerName CassetteID
        ClinicalTrialProtocolEthicsCommitteeApprovalNumber ClinicalTrialSeriesDescription
        ClinicalTrialSeriesID ClinicalTrialTimePointDescription CommentsOnRadiationDose
        CommentsOnThePerformedProcedureStep CompensatorDescription
        ConfidentialityConstraintOnPatientDataDescription ConsultingPhysicianIdentificationSequence
        ContainerComponentID ContainerDescription ContentCreatorIdentificationCodeSequence
        ContributionDescription CountryOfResidence CurrentObserverTrial CurrentPatientLocation
        CurveDate CurveTime CustodialOrganizationSequence DataSetTrailingPadding
        DecompositionDescription DerivationDescription DetectorID DeviceDescription
        DeviceSerialNumber DeviceSettingDescription DigitalSignaturesSequence
        DischargeDiagnosisDescription DistributionAddress DistributionName DoseReferenceDescription
        EndAcquisitionDateTime EntityDescription EntityName EquipmentFrameOfReferenceDescription
        EthnicGroup ExpectedCompletionDateTime FirstTreatmentDate FixationDeviceDescription
        FractionGroupDescription FrameComments GPSAltitude GPSAltitudeRef GPSAreaInformation GPSDOP
        GPSDateStamp GPSDestBearing GPSDestBearingRef GPSDestDistance GPSDestDistanceRef
        GPSDestLatitude GPSDestLatitudeRef GPSDestLongitude GPSDestLongitudeRef GPSDifferential
        GPSImgDirection GPSImgDirectionRef GPSLatitude GPSLatitudeRef GPSLongitude GPSLongitudeRef
        GPSMapDatum GPSMeasureMode GPSProcessingMethod GPSSatellites GPSSpeed GPSSpeedRef GPSStatus
        GPSTimeStamp GPSTrack GPSTrackRef GPSVersionID GantryID GeneratorID HumanPerformerName
        HumanPerformerOrganization IconImageSequence IdentifyingComments ImageComments
        ImagePresentationComments ImagingServiceRequestComments Impressions InstanceCoercionDateTime
        InstanceOriginStatus InstitutionAddress InstitutionCodeSequence InstitutionName
        InstitutionalDepartmentName InstitutionalDepartmentTypeCodeSequence
        InsurancePlanIdentification IntendedPhaseEndDate IntendedPhaseStartDate
        IntendedRecipientsOfResultsIdentificationSequence InterpretationApproverSequence
        InterpretationAuthor InterpretationDiagnosisDescription InterpretationIDIssuer
        InterpretationRecorder InterpretationText InterpretationTranscriber IssuerOfAdmissionID
        IssuerOfAdmissionIDSequence IssuerOfPatientID IssuerOfServiceEpisodeID
        IssuerOfServiceEpisodeIDSequence LabelText LastMenstrualDate LensMake LensModel
        LensSerialNumber LensSpecification LongDeviceDescription MAC MakerNote MedicalAlerts
        MedicalRecordLocator MilitaryRank ModifiedAttributesSequence ModifiedImageDescription
        ModifyingDeviceID MostRecentTreatmentDate MultienergyAcquisitionDescription
        NameOfPhysiciansReadingStudy NamesOfIntendedRecipientsOfResults
        NonconformingDataElementValue NonconformingModifiedAttributesSequence ObservationDateTrial
        ObservationTimeTrial Occupation OperatorIdentificationSequence OperatorsName
        OrderCallbackPhoneNumber OrderCallbackTelecomInformation OrderEnteredBy OrderEntererLocation
        OriginalAttributesSequence OtherPatientIDs OtherPatientIDsSequence OtherPatientNames
        OverlayDate OverlayTime ParticipantSequence PatientAddress PatientAge PatientBirthName
        PatientBirthTime PatientComments PatientInstitutionResidence
        PatientInsurancePlanCodeSequence PatientMotherBirthName PatientPrimaryLanguageCodeSequence
        PatientPrimaryLanguageModifierCodeSequence PatientReligiousPreference PatientSexNeutered
        PatientSize PatientState PatientTelecomInformation PatientTelephoneNumbers
        PatientTransportArrangements PatientWeight PerformedLocation
        PerformedProcedureStepDescription PerformedProcedureStepEndDate
        PerformedProcedureStepEndDateTime PerformedProcedureStepEndTime PerformedProcedureStepID
        PerformedProcedureStepStartDate PerformedProcedureStepStartDateTime
        PerformedProcedureStepStartTime PerformedStationAETitle
        PerformedStationGeographicLocationCodeSequence PerformedStationName
        PerformedStationNameCodeSequence PerformingPhysicianIdentificationSequence
        PerformingPhysicianName PersonAddress PersonTelecomInformation PersonTelephoneNumbers
        PhysicianApprovingInterpretation PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence
        PhysiciansReadingStudyIdentificationSequence PlateID PreMedication PregnancyStatus
        PrescriptionDescription PriorTreatmentDoseDescription ProcedureStepCancellationDateTime
        ProtocolName ROIDescription ROIGenerationDescription ROIObservationDescription
        ROIObservationLabel RTPlanDate RTPlanDescription RTPlanName RTPlanTime
        RTTreatmentApproachLabel ReasonForOmissionDescription
        ReasonForRequestedProcedureCodeSequence ReasonForStudy ReasonForTheImagingServiceRequest
        ReasonForTheRequestedProcedure ReasonForVisit ReasonForVisitCodeSequence
        ReferencedDigitalSignatureSequence ReferencedImageSequence ReferencedPatientAliasSequence
        ReferencedPatientPhotoSequence ReferencedPatientSequence
        ReferencedPerformedProcedureStepSequence ReferencedSOPInstanceMACSequence
        ReferencedStudySequence ReferringPhysicianAddress ReferringPhysicianIdentificationSequence
        ReferringPhysicianTelephoneNumbers RegionOfResidence RequestAttributesSequence
        RequestedContrastAgent RequestedProcedureComments RequestedProcedureDescription
        RequestedProcedureID RequestedProcedureLocation RequestedSeriesDescription
        RequestingPhysician RequestingService RespiratoryMotionCompensationTechniqueDescription
        ResponsibleOrganization ResponsiblePerson ResultsComments ResultsDistributionListSequence
        ResultsIDIssuer ReviewerName ScheduledHumanPerformersSequence
        ScheduledPatientInstitutionResidence ScheduledPerformingPhysicianIdentificationSequence
        ScheduledPerformingPhysicianName ScheduledProcedureStepDescription
        ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
        ScheduledProcedureStepExpirationDateTime ScheduledProcedureStepID
        ScheduledProcedureStepLocation ScheduledProcedureStepModificationDateTime
        ScheduledProcedureStepStartDate ScheduledProcedureStepStartDateTime
        ScheduledProcedureStepStartTime ScheduledStationAETitle
        ScheduledStationGeographicLocationCodeSequence ScheduledStationName
        ScheduledStationNameCodeSequence ScheduledStudyLocation ScheduledStudyLocationAETitle
        SeriesDate SeriesDescription SeriesTime ServiceEpisodeDescription ServiceEpisodeID
        SetupTechniqueDescription ShieldingDeviceDescription SlideIdentifier SmokingStatus
        SourceImageSequence SourceManufacturer SourceSerialNumber SpecialNeeds
        SpecimenAccessionNumber SpecimenDetailedDescription SpecimenShortDescription
        StartAcquisitionDateTime StationName StructureSetDescription StructureSetName
        StructureSetTime StudyComments StudyDescription StudyIDIssuer TelephoneNumberTrial
        TextComments TextString TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject
        TopicTitle TransducerIdentificationSequence TreatmentDate TreatmentMachineName TreatmentTime
        UDISequence UniqueDeviceIdentifier VerbalSourceIdentifierCodeSequenceTrial VerbalSourceTrial
        VisitComments XRayDetectorLabel
    """,
    "Z": """
        AccessionNumber ClinicalTrialCoordinatingCenterName ClinicalTrialProtocolName
        ClinicalTrialSiteID ClinicalTrialSiteName ClinicalTrialTimePointID
        ConceptualVolumeCombinationDescription ConceptualVolumeDescription ConsultingPhysicianName
        ContentCreatorName ContentDate ContentTime ContrastBolusAgent DeviceAlternateIdentifier
        FillerOrderNumberImagingServiceRequest FractionationNotes
        IssuerOfTheContainerIdentifierSequence IssuerOfTheSpecimenIdentifierSequence
        ManufacturerDeviceIdentifier PatientBirthDate PatientID PatientName PatientSex
        PlacerOrderNumberImagingServiceRequest PrescriptionNotes PrescriptionNotesSequence
        ROIInterpreter ROIName RTAccessoryDeviceSlotID RTAccessoryHolderSlotID
        RTPhysicianIntentNarrative RadiationGenerationModeDescription ReasonForSuperseding
        ReferringPhysicianName SpecimenPreparationSequence StructureSetDate StudyDate StudyID
        StudyTime TreatmentTechniqueNotes VerifyingObserverIdentificationCodeSequence
    """,
    "D": """
        AcquisitionFieldOfViewLabel ClinicalTrialProtocolEthicsCommitteeName ClinicalTrialProtocolID
        ClinicalTrialSponsorName ClinicalTrialSubjectID ClinicalTrialSubjectReadingID
        ContainerIdentifier ContentSequence DeviceLabel EntityLabel EntityLongLabel FlowIdentifier
        FlowIdentifierSequence FrameOriginTimestamp GraphicAnnotationSequence
        ImpedanceMeasurementDateTime InterlockDateTime InterlockDescription
        InterlockOriginDescription OverrideDateTime PersonIdentificationCodeSequence PersonName
        RTPlanLabel RTPrescriptionLabel RTToleranceSetLabel RadiationDoseIdentificationLabel
        RadiationDoseInVivoMeasurementLabel RadiationGenerationModeLabel
        RecordedRTControlPointDateTime SourceEndDateTime SourceIdentifier SourceStartDateTime
        SpecimenIdentifier StructureSetLabel TreatmentPositionGroupLabel TreatmentSite
        TreatmentToleranceViolationDateTime TreatmentToleranceViolationDescription UserContentLabel
        UserContentLongLabel VerifyingObserverName VerifyingObserverSequence VerifyingOrganization
        XRayDetectorID XRaySourceID
    """,
    "U": """
        ConcatenationUID ConceptualVolumeUID ConstituentConceptualVolumeUID DeviceUID
        DigitalSignatureUID DimensionOrganizationUID DoseReferenceUID DosimetricObjectiveUID
        FailedSOPInstanceUIDList FiducialUID FrameOfReferenceUID InstanceCreatorUID
        IrradiationEventUID LargePaletteColorLookupTableUID ManufacturerDeviceClassUID
        MediaStorageSOPInstanceUID MultiplexGroupUID ObservationSubjectUIDTrial ObservationUID
        PaletteColorLookupTableUID PatientSetupUID PresentationDisplayCollectionUID
        PresentationSequenceCollectionUID RTTreatmentPhaseUID ReferencedConceptualVolumeUID
        ReferencedDoseReferenceUID ReferencedDosimetricObjectiveUID ReferencedFiducialsUID
        ReferencedFrameOfReferenceUID ReferencedGeneralPurposeScheduledProcedureStepTransactionUID
        ReferencedObservationUIDTrial ReferencedSOPInstanceUID ReferencedSOPInstanceUIDInFile
        RelatedFrameOfReferenceUID RequestedSOPInstanceUID SOPInstanceUID SeriesInstanceUID
        SourceConceptualVolumeUID SpecimenUID StorageMediaFileSetUID StudyInstanceUID
        SynchronizationFrameOfReferenceUID TargetUID TemplateExtensionCreatorUID
        TemplateExtensionOrganizationUID TrackingUID TransactionUID TreatmentPositionGroupUID
        TreatmentSessionUID UID
    """,
}

#: Tag -> action ("X", "Z", "D" or "U") for every attribute of the Basic Profile table.
BASIC_PROFILE_ACTIONS: dict[int, str] = {
    tag_for_keyword(keyword): action  # type: ignore[misc]
    for action, keywords in _PROFILE_KEYWORDS.items() for keyword in keywords.split()
}

#: UID attributes that name a kind of thing (a class, an encoding, a terminology), not an
#: instance: never replaced.
_KEPT_UID_KEYWORDS = frozenset({
    "TransferSyntaxUID", "CodingSchemeUID", "ContextUID", "MappingResourceUID",
    "ContextGroupExtensionCreatorUID", "ImplementationClassUID",
})
_FILE_META_REMOVED = ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                      "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID",
                      "PrivateInformation")
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY_BY_VR = {"PN": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000",
                "AS": "000Y", "DS": "0", "IS": "0"}


def deidentify(ds: Dataset, *, uid_salt: str = DEFAULT_UID_SALT) -> Dataset:
    """A de-identified copy of `ds` (the input is not changed).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        One DICOM instance, with or without pixel data and file meta information.
    uid_salt : str, optional
        Mixed into the hash that derives each new UID. Same salt, same old UID -> same new UID.

    Returns
    -------
    pydicom.dataset.Dataset
        The copy, with the Basic Profile applied (see the module docstring), and
        PatientIdentityRemoved "YES", DeidentificationMethod, DeidentificationMethodCodeSequence
        (113100, DCM) and LongitudinalTemporalInformationModified "REMOVED" added.

    Examples
    --------
    >>> ds = Dataset()
    >>> ds.PatientName, ds.SeriesInstanceUID = "Doe^Jane", "1.2.3.4"
    >>> out = deidentify(ds)
    >>> str(out.PatientName), out.SeriesInstanceUID == deidentify(ds).SeriesInstanceUID
    ('', True)
    >>> out.PatientIdentityRemoved
    'YES'
    """
    if not isinstance(ds, Dataset):
        raise TypeError(f"deidentify expects a pydicom Dataset, got {type(ds).__name__}")
    out = copy.deepcopy(ds)
    if getattr(out, "preamble", None):
        out.preamble = b"\0" * 128  # a preamble may hold another format's header (TIFF)
    _clean(out, uid_salt)
    file_meta = getattr(out, "file_meta", None)
    if file_meta is not None:
        for keyword in _FILE_META_REMOVED:
            if keyword in file_meta:
                delattr(file_meta, keyword)
        if "MediaStorageSOPInstanceUID" in file_meta:
            file_meta.MediaStorageSOPInstanceUID = new_uid(
                str(file_meta.MediaStorageSOPInstanceUID), uid_salt=uid_salt)
    _mark_deidentified(out)
    return out


def new_uid(old_uid: str, *, uid_salt: str = DEFAULT_UID_SALT) -> str:
    """The replacement of `old_uid`: ``2.25.`` + the decimal of a uuid5 of salt and UID.

    An empty UID stays empty. At most 44 characters (a UID may have 64).

    >>> new_uid("1.2.3") == new_uid("1.2.3") != new_uid("1.2.4")
    True
    """
    old_uid = str(old_uid).strip()
    if not old_uid:
        return ""
    return f"2.25.{uuid.uuid5(_NAMESPACE, uid_salt + '|' + old_uid).int}"


def _clean(ds: Dataset, uid_salt: str) -> None:
    """Apply the profile to `ds` in place, recursing into sequences."""
    for elem in list(ds):
        tag = elem.tag
        group = tag.group
        if tag.is_private or 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
            del ds[tag]
            continue
        action = BASIC_PROFILE_ACTIONS.get(int(tag))
        if action == "X":
            del ds[tag]
        elif action == "Z" or (action == "D" and elem.VR == "SQ"):
            elem.value = Sequence() if elem.VR == "SQ" else empty_value_for_VR(elem.VR)
        elif action == "D":
            elem.value = _dummy(elem)
        elif action == "U" or elem.VR == "UI":
            if action == "U" or _is_instance_uid(elem):
                elem.value = _map_uids(elem.value, uid_salt)
        elif elem.VR == "SQ":
            for item in elem.value:
                _clean(item, uid_salt)
        elif elem.VR == "PN":
            elem.value = empty_value_for_VR("PN")
        elif elem.VR in ("DA", "DT", "TM", "ST", "LT", "UT"):
            del ds[tag]


def _is_instance_uid(elem: DataElement) -> bool:
    keyword = elem.keyword or ""
    if keyword.endswith("ClassUID") or keyword in _KEPT_UID_KEYWORDS:
        return False
    values = elem.value if isinstance(elem.value, (list, tuple, pydicom.multival.MultiValue)) \
        else [elem.value]
    return any(v and UID(str(v)).is_private for v in values)


def _map_uids(value: object, uid_salt: str) -> object:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [_map_one_uid(v, uid_salt) for v in value]
    return _map_one_uid(value, uid_salt)


def _map_one_uid(value: object, uid_salt: str) -> str:
    text = str(value or "").strip()
    if not text or not UID(text).is_private:  # keep empty and registered DICOM UIDs
        return text
    return new_uid(text, uid_salt=uid_salt)


def _dummy(elem: DataElement) -> object:
    vr = elem.VR
    if vr in _DUMMY_BY_VR:
        return _DUMMY_BY_VR[vr]
    if vr in ("AE", "CS", "LO", "SH", "LT", "ST", "UT", "UC", "UR"):
        return _DUMMY_TEXT
    return empty_value_for_VR(vr)  # numbers, binary: no meaningful dummy, so empty


def _mark_deidentified(ds: Dataset) -> None:
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE_CODE
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    ds.LongitudinalTemporalInformationModified = "REMOVED"


# ------------------------------------------------------------------------------------ writing
def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike[str],
    *,
    series_description: str = "spinenav export",
    series_number: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write a CT `volume` as a de-identified DICOM CT series, one file per k slice.

    Parameters
    ----------
    volume : Volume
        CT in HU (``modality`` "CT", not a label map), array (I, J, K). The i and j axes must be
        perpendicular (they become the row and column directions of the slices); k may be
        oblique to them (a gantry-tilted grid is written as a tilted series).
    folder : path-like
        Folder to create. It must not exist (or be empty) unless `overwrite`.
    series_description : str, optional
        SeriesDescription (LO, at most 64 characters).
    series_number : int, optional
        SeriesNumber.
    overwrite : bool, optional
        Replace an existing `folder` and everything in it.

    Returns
    -------
    Path
        `folder`, holding ``slice_0001.dcm`` ... one file per k, InstanceNumber k + 1.

    Notes
    -----
    Files are CT Image Storage, explicit VR little endian, signed 16-bit pixels. Integer HU
    within int16 are stored exactly (RescaleSlope 1, RescaleIntercept 0); other values are
    quantised over their range to 65535 levels (error at most half a RescaleSlope). Geometry:
    ImageOrientationPatient = the unit i and j directions, PixelSpacing = (j step, i step) in mm,
    ImagePositionPatient = ``affine @ (0, 0, k)``. Study, series, frame of reference and instance
    UIDs are new and random; patient name, ID, birth date, sex, study date and time and the
    referring physician are present but empty (Type 2); PatientIdentityRemoved is YES. The files
    are written into a hidden temporary folder beside `folder`, renamed into place at the end.

    Raises
    ------
    ValueError
        A label map or non-CT volume, non-finite values, i and j not perpendicular, a description
        longer than 64 characters, or an existing non-empty `folder` without `overwrite`.
    """
    target = Path(folder)
    _check_writable(volume, target, series_description=series_description, overwrite=overwrite)
    pixels, slope, intercept = _stored_pixels(volume)
    datasets = _slice_datasets(volume, pixels, slope, intercept,
                               series_description=series_description,
                               series_number=int(series_number))
    with atomic_folder(target) as tmp:  # an existing folder is empty, or `overwrite` allowed it
        for k, ds in enumerate(datasets):
            pydicom.dcmwrite(tmp / f"slice_{k + 1:04d}.dcm", ds, enforce_file_format=True)
    return target


def _check_writable(volume: Volume, target: Path, *, series_description: str,
                    overwrite: bool) -> None:
    if not isinstance(volume, Volume):
        raise TypeError(f"write_dicom_series expects a Volume, got {type(volume).__name__}")
    if volume.is_label or volume.modality != "CT":
        what = "a label map" if volume.is_label else f"a {volume.modality} volume"
        raise ValueError(f"write_dicom_series writes CT intensities (HU); got {what}")
    if not np.all(np.isfinite(volume.array)):
        raise ValueError("write_dicom_series: the volume holds NaN or infinite values")
    d = volume.direction
    cos_ij = float(d[:, 0] @ d[:, 1])
    if abs(cos_ij) > 1e-6:
        angle_deg = math.degrees(math.acos(max(-1.0, min(1.0, cos_ij))))
        raise ValueError(
            f"write_dicom_series: the i and j axes are {angle_deg:.4f} "
            "deg apart, not perpendicular; a DICOM slice needs perpendicular rows and columns: "
            "resample the volume first (resample_to_orthogonal)")
    if len(series_description) > 64:
        raise ValueError(f"series_description has {len(series_description)} characters; DICOM "
                         "allows 64")
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"{target}: exists and is a file; choose a folder name")
        if any(target.iterdir()) and not overwrite:
            raise ValueError(f"{target}: folder exists and is not empty; choose another folder or "
                             "pass overwrite=True to replace it")


def _stored_pixels(volume: Volume) -> tuple[np.ndarray, float, float]:
    """int16 stored values (I, J, K) with RescaleSlope and RescaleIntercept."""
    a = volume.array
    info = np.iinfo(np.int16)
    lo, hi = float(a.min()), float(a.max())
    integral = np.issubdtype(a.dtype, np.integer) or bool(np.all(a == np.round(a)))
    if integral and info.min <= lo and hi <= info.max:
        return a.astype(np.int16), 1.0, 0.0
    slope = (hi - lo) / (int(info.max) - int(info.min)) if hi > lo else 1.0
    intercept = lo - info.min * slope
    stored = np.clip(np.rint((a.astype(np.float64) - intercept) / slope), info.min, info.max)
    return stored.astype(np.int16), slope, intercept


def _ds_values(values: np.ndarray) -> list[str]:
    return [format_number_as_ds(float(v) + 0.0) for v in values]  # + 0.0: no "-0.0"


def _slice_datasets(volume: Volume, pixels: np.ndarray, slope: float, intercept: float, *,
                    series_description: str, series_number: int) -> Iterator[Dataset]:
    ni, nj, nk = volume.shape
    spacing = volume.spacing_mm
    d = volume.direction
    iop = np.concatenate([d[:, 0], d[:, 1]])
    normal = np.cross(d[:, 0], d[:, 1])
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    meta = volume.meta
    for k in range(nk):
        ipp = volume.world_from_index([0.0, 0.0, float(k)])
        sop_uid = generate_uid()
        file_meta = FileMetaDataset()
        file_meta.MediaStorageSOPClassUID = CTImageStorage
        file_meta.MediaStorageSOPInstanceUID = sop_uid
        file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = file_meta
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "", "", ""
        ds.Modality = "CT"
        ds.Manufacturer = "spinenav"
        ds.ReferringPhysicianName = ""
        ds.SeriesDescription = series_description
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", "", "", ""
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyID = ""
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = ""
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = _ds_values(ipp)
        ds.ImageOrientationPatient = _ds_values(iop)
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = format_number_as_ds(float(ipp @ normal) + 0.0)
        ds.PixelSpacing = _ds_values(np.array([spacing[1], spacing[0]]))  # row, column spacing
        ds.SliceThickness = format_number_as_ds(float(meta.get("slice_thickness_mm", spacing[2])))
        if "kvp_kv" in meta:
            ds.KVP = format_number_as_ds(float(meta["kvp_kv"]))
        else:
            ds.KVP = ""
        if meta.get("convolution_kernel"):
            ds.ConvolutionKernel = str(meta["convolution_kernel"]).split("\\")
        ds.PatientPosition = str(meta.get("patient_position", ""))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = nj, ni
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = format_number_as_ds(float(intercept) + 0.0)
        ds.RescaleSlope = format_number_as_ds(float(slope))
        ds.RescaleType = "HU"
        ds.BurnedInAnnotation = "NO"
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).astype("<i2").tobytes()
        ds["PixelData"].VR = "OW"
        _mark_deidentified(ds)
        yield ds

