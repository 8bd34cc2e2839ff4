"""LVM domain metadata kept as VG and LV tags.

Why tags: every LVM command commits the VG metadata atomically (with LVM's own sequence
number and checksum, on every PV), so one ``vgchange``/``lvchange`` that deletes the old tags
and adds the new ones is an atomic metadata write; and tags are editable on a kernel without
device-mapper, where no metadata LV could be activated and written.

- Domain: the same ``KEY=value`` lines as a file domain's metadata (with ``GENERATION`` and
  ``CHECKSUM``), one VG tag each: ``MDT_<KEY>=<escaped value>``.
- Volume: ``IU_<imgUUID>`` (selectable image membership) and ``MD_<KEY>=<escaped value>``
  for each field of the volume metadata.

Values are escaped into LVM's tag alphabet: bytes outside ``[A-Za-z0-9_+.-/:#!]`` become
``&XX`` (hex of the UTF-8 byte). A tag holds at most 1024 characters, so a long description
is cut to fit (vdsm's block domains cut it too).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from actors.storage.sd import metadata as md

DOMAIN_PREFIX = "MDT_"
VOLUME_PREFIX = "MD_"
IMAGE_PREFIX = "IU_"
TAG_MAX = 1024
_SAFE = re.compile(r"[A-Za-z0-9_+.\-/:#!]")
_ESCAPE = re.compile(r"&([0-9A-F]{2})")
_VOLUME_KEYS = {"image": "IMAGE", "format": "FORMAT", "type": "TYPE", "capacity": "CAPACITY",
                "legality": "LEGALITY", "voltype": "VOLTYPE", "parent_image": "PARENT_IMAGE",
                "parent": "PARENT", "description": "DESCRIPTION", "ctime": "CTIME",
                "lver": "LVER"}
_BY_TAG_KEY = {v: k for k, v in _VOLUME_KEYS.items()}


def escape(value: str) -> str:
    out = []
    for char in value:
        if _SAFE.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"&{byte:02X}" for byte in char.encode())
    return "".join(out)


def unescape(text: str) -> str:
    return bytes(_unescape_bytes(text)).decode("utf-8", "replace")


def _unescape_bytes(text: str) -> bytearray:
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos:m.start()].encode()
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += text[pos:].encode()
    return out


def domain_tags(meta: md.DomainMetadata) -> tuple[str, ...]:
    tags = []
    for line in md.encode_lines(meta):
        key, _, value = line.partition("=")
        tags.append(f"{DOMAIN_PREFIX}{key}={escape(value)}")
    return tuple(tags)


def domain_from_tags(tags: Iterable[str]) -> md.DomainMetadata:
    """Parse and verify (ValueError when corrupt or absent)."""
    lines = [f"{tag[len(DOMAIN_PREFIX):].partition('=')[0]}="
             f"{unescape(tag.partition('=')[2])}"
             for tag in tags if tag.startswith(DOMAIN_PREFIX)]
    if not lines:
        raise ValueError("the volume group holds no domain metadata")
    return md.decode_lines(lines)


def sd_uuid_of(tags: Iterable[str]) -> str | None:
    """The domain UUID a VG's tags name, without verifying the rest."""
    for tag in tags:
        if tag.startswith(f"{DOMAIN_PREFIX}SDUUID="):
            return tag.partition("=")[2]
    return None


def _fit(key: str, value: str) -> str:
    tag = f"{VOLUME_PREFIX}{key}={escape(value)}"
    while len(tag) > TAG_MAX and value:
        value = value[: max(0, len(value) - max(1, (len(tag) - TAG_MAX) // 9))]
        tag = f"{VOLUME_PREFIX}{key}={escape(value)}"
    return tag


def volume_tags(meta: md.VolumeMetadata) -> tuple[str, ...]:
    tags = [f"{IMAGE_PREFIX}{meta.img_uuid}"]
    for field, value in meta.to_json().items():
        tags.append(_fit(_VOLUME_KEYS[field], str(value)))
    return tuple(tags)


def volume_from_tags(tags: Iterable[str]) -> md.VolumeMetadata:
    """Parse (ValueError when a field is missing or malformed)."""
    data: dict[str, str] = {}
    for tag in tags:
        if tag.startswith(VOLUME_PREFIX):
            key, _, value = tag[len(VOLUME_PREFIX):].partition("=")
            if key in _BY_TAG_KEY:
                data[_BY_TAG_KEY[key]] = unescape(value)
    return md.VolumeMetadata.from_json(data)


def image_of(tags: Iterable[str]) -> str | None:
    for tag in tags:
        if tag.startswith(IMAGE_PREFIX):
            return tag[len(IMAGE_PREFIX):]
    return None


def diff(old: Iterable[str], new: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(delete, add)`` turning the tag set ``old`` into ``new``."""
    before, after = set(old), set(new)
    return sorted(before - after), sorted(after - before)
