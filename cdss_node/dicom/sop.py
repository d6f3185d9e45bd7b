"""What the node accepts: the CT storage SOP classes and the transfer syntaxes it can decode.

Every transfer syntax listed here has a decoder installed with the package (pylibjpeg with its
libjpeg, openjpeg and RLE plugins), so the pipeline can read whatever the receiver stored.
"""

from __future__ import annotations

from pydicom import uid
from pynetdicom.sop_class import (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
)

STORAGE_SOP_CLASSES = (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
)

UNCOMPRESSED = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
)

COMPRESSED = (
    uid.JPEGLosslessSV1,          # JPEG Lossless, first-order prediction (process 14, SV1)
    uid.JPEGLossless,             # JPEG Lossless (process 14)
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.RLELossless,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
)

TRANSFER_SYNTAXES = [*UNCOMPRESSED, *COMPRESSED]
