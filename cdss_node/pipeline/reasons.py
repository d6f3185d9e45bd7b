"""Why a series is not evaluable: coded reasons for the index, result.json and the SR.

No standard code exists for these, so they use the node's private coding scheme (designator
``99CDSS``, as PS3.16 8.2 allows for private schemes beginning with "99").
"""

from __future__ import annotations

from enum import Enum

CODING_SCHEME = "99CDSS"


class _Coded(Enum):
    """A member is (code value, code meaning, the sentence the radiologist reads)."""

    def __init__(self, code: str, meaning: str, sentence: str):
        self.code = code
        self.meaning = meaning
        self.sentence = sentence


class NotEvaluableReason(_Coded):
    """(code value, code meaning, what the radiologist reads)."""

    NOT_CT = ("NE001", "Not a CT series",
              "The series is not a CT image series; only chest CT is analysed.")
    LOCALIZER = ("NE002", "Localizer only",
                 "The series holds only localizer (scout) images.")
    TOO_FEW_SLICES = ("NE003", "Too few slices",
                      "The series has too few axial slices to cover the chest.")
    MISSING_SLICES = ("NE004", "Missing slices",
                      "Slices are missing from the series (a gap along the scan axis).")
    MIXED_ORIENTATION = ("NE005", "Mixed orientation",
                         "The images of the series do not share one orientation.")
    MULTIPLE_SERIES = ("NE006", "More than one series",
                       "The images given belong to more than one series.")
    INCONSISTENT_GEOMETRY = ("NE007", "Inconsistent geometry",
                             "Image sizes, pixel spacing or positions differ within the series, "
                             "or slices share a position.")
    GANTRY_TILT = ("NE008", "Gantry tilt",
                   "The slices are tilted against the scan axis (gantry tilt).")
    UNREADABLE = ("NE009", "Unreadable images",
                  "Images of the series could not be read or decoded.")
    NO_TUMOR_FOUND = ("NE010", "No lung tumor found",
                      "No lung tumor was found, so no EGFR prediction was made.")
    UNSUPPORTED_IMAGE_SIZE = ("NE011", "Unsupported image size",
                              "The image matrix is outside the sizes the node analyses "
                              "(16 to 4096 pixels a side).")
    LUNGS_NOT_COVERED = ("NE012", "Lungs not covered",
                         "The scan does not cover the lungs (its range or field of view holds "
                         "too little lung to look for a tumor).")
    # a radiologist's mark (an SR from the viewer) that the node cannot act on
    MARK_WITHOUT_IMAGE = ("NE013", "Mark not on a CT image",
                          "The radiologist's mark names no image of a CT series the node "
                          "can analyse (no image reference, or an image outside the series).")
    MARK_OUTSIDE_LUNGS = ("NE014", "Mark outside the lungs",
                          "The radiologist's mark lies outside the lung fields; the node "
                          "looks for lung tumors only.")
    SERIES_NOT_RETRIEVABLE = ("NE015", "Series not retrievable",
                              "The CT series is no longer held by the node and the PACS did "
                              "not deliver it.")
    NO_LESION_AT_MARK = ("NE016", "No lesion at the mark",
                         "No lesion was found at or near the radiologist's mark.")


class QualityFlag(_Coded):
    """What the radiologist should know about an analysed (or refused) case: (code value, code
    meaning, sentence). Private scheme ``99CDSS`` as the reasons."""

    LUNGS_NOT_COVERED = ("QF001", "Lungs not covered by the scan",
                         "The scan's range or field of view holds too little lung.")
    LUNGS_INCOMPLETE = ("QF002", "Lungs cut by the scan",
                        "The lungs run off the scan's first or last slice or its field of "
                        "view: a tumor outside it cannot be seen.")
    LUNG_VOLUME_IMPLAUSIBLE = ("QF003", "Lung volume implausible",
                               "The lung fields found are of an implausible volume for whole "
                               "adult lungs; check the outline.")
    TUMOR_TRUNCATED = ("QF004", "Tumor truncated by the scan",
                       "The tumor runs off the scan's edge: its size and shape features are "
                       "not trustworthy.")
    SIMILAR_CANDIDATES = ("QF005", "Several candidates of similar size",
                          "Other lesion candidates of similar size were found (in the SEG as "
                          "\"other lesion candidate\"); the largest was analysed.")

