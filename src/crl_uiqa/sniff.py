"""What a file is, from its first bytes (never from its name): the web page's uploads, and a file whose name
says one thing and whose bytes another (a PNG named ``.dcm``).

Only the formats a scan can be are recognised:

=========  ==============================================  =========
kind       magic bytes                                     stored as
=========  ==============================================  =========
video      ``ftyp`` at offset 4 (MP4, M4V; MOV: brand qt)  ``.mp4`` / ``.mov``
video      ``RIFF`` .... ``AVI `` (AVI)                     ``.avi``
dicom      ``DICM`` at offset 128 (DICOM Part 10)          ``.dcm``
image      ``\\x89PNG\\r\\n\\x1a\\n`` (PNG)                    ``.png``
image      ``\\xff\\xd8\\xff`` (JPEG)                         ``.jpg``
image      ``II*\\0`` / ``MM\\0*`` (TIFF), ``BM`` (BMP)        ``.tif`` / ``.bmp``
=========  ==============================================  =========

The suffix under which the server stores the file comes from this table, so
the decoders see the type the content has, whatever the upload was called.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

__all__ = ["Sniffed", "sniff", "SNIFF_BYTES", "UnsupportedContent", "VIDEO_EXTENSIONS", "DICOM_EXTENSIONS", "is_dicom_file"]

#: Bytes needed to recognise every supported format (DICOM's marker ends at 132).
SNIFF_BYTES = 132

#: File name extensions of videos and of DICOM files (which are also recognised by their bytes,
#: :func:`is_dicom_file`: DICOM files often have no extension).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".ogv"})
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic"})


def is_dicom_file(path) -> bool:
    """Whether the file at ``path`` starts with the DICOM preamble (128 bytes then ``DICM``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError:
        return False
    return len(head) == SNIFF_BYTES and head[128:132] == b"DICM"


class UnsupportedContent(InputError):
    """The bytes are none of the supported scan formats."""


@dataclass(frozen=True)
class Sniffed:
    """A recognised format: ``kind`` ("video", "dicom" or "image"), a short name and the suffix to store it under."""

    kind: str
    format: str
    suffix: str


def sniff(head: bytes) -> Sniffed:
    """The format of a file from its first :data:`SNIFF_BYTES` bytes.

    Raises
    ------
    UnsupportedContent
        When the bytes match no supported format (the message says what was expected).
    """
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return Sniffed("video", "MOV", ".mov")
        return Sniffed("video", "MP4", ".mp4")
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Sniffed("video", "AVI", ".avi")
    if len(head) >= 132 and head[128:132] == b"DICM":
        return Sniffed("dicom", "DICOM", ".dcm")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "PNG", ".png")
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "JPEG", ".jpg")
    if head.startswith(b"II*\x00") or head.startswith(b"MM\x00*"):
        return Sniffed("image", "TIFF", ".tif")
    if head.startswith(b"BM") and len(head) >= 26:
        return Sniffed("image", "BMP", ".bmp")
    if not head:
        raise UnsupportedContent("the file is empty")
    raise UnsupportedContent(
        "the content is not a supported scan: expected an MP4/MOV or AVI video, a DICOM file (DICM marker), "
        "or PNG/JPEG/TIFF/BMP images"
    )
