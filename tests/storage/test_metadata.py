from __future__ import annotations

import uuid

import pytest

from actors.storage.sd import lvmtags, stamp
from actors.storage.sd import metadata as md
from actors.storage.sd.records import (
    BLANK_UUID,
    Allocation,
    Legality,
    VolumeCreateRequest,
    VolumeFormat,
    VolumeRole,
    check_uuid,
)
from messaging.errors import InvalidParams

SD = "9d1d6b9c-3c4e-4b8e-9d0a-1f2e3d4c5b6a"


def domain() -> md.DomainMetadata:
    return md.DomainMetadata(sd_uuid=SD, name="data one", domain_type="localfs",
                             domain_class="data", version=5)


@pytest.mark.timeout(5)
def test_check_uuid_round_trip() -> None:
    value = str(uuid.uuid4())
    assert check_uuid(value, "x") == value
    assert check_uuid(value.upper(), "x") == value
    bad = ["", "../etc", value.replace("-", ""), "{" + value + "}", "urn:uuid:" + value,
           value + "/..", value[:-1] + "g"]
    for text in bad:
        with pytest.raises(InvalidParams) as info:
            check_uuid(text, "volumeID")
        assert info.value.param == "volumeID"
    with pytest.raises(InvalidParams):
        check_uuid(42, "imageID")


@pytest.mark.timeout(5)
def test_domain_metadata_round_trip_and_checksum() -> None:
    meta = domain()
    text = md.encode_text(meta)
    assert text.endswith(b"\n")
    assert b"GENERATION=0\n" in text
    assert text.splitlines()[-1].startswith(b"CHECKSUM=")
    assert md.decode_text(text) == meta
    tampered = text.replace(b"NAME=data one", b"NAME=data two")
    with pytest.raises(ValueError, match="checksum"):
        md.decode_text(tampered)
    with pytest.raises(ValueError, match="no checksum"):
        md.decode_text(b"SDUUID=" + SD.encode() + b"\n")
    with pytest.raises(ValueError):
        md.decode_text(b"\xff\xfe")


@pytest.mark.timeout(5)
def test_domain_metadata_update_bumps_generation_and_keeps_extra_keys() -> None:
    meta = domain().updated({"POOL_UUID": SD, "MASTER_VERSION": "3"})
    assert meta.generation == 1
    assert meta.pool_uuid == SD
    assert meta.get("MASTER_VERSION") == "3"
    again = md.decode_text(md.encode_text(meta))
    assert again.get("MASTER_VERSION") == "3"
    assert again.updated({}).generation == 2
    for key in ("SDUUID", "GENERATION", "CHECKSUM", "TYPE"):
        with pytest.raises(ValueError, match="cannot be changed"):
            meta.updated({key: "x"})
    with pytest.raises(ValueError, match="one line"):
        meta.updated({"NAME": "a\nb"})
    with pytest.raises(ValueError, match="invalid metadata key"):
        meta.updated({"lower": "x"})
    assert meta.to_wire()["pool"] == [SD]


@pytest.mark.timeout(5)
def test_volume_metadata_json() -> None:
    meta = md.VolumeMetadata.new(img_uuid=SD, format=VolumeFormat.COW,
                                 allocation=Allocation.SPARSE, capacity=1 << 30,
                                 parent_img=None, parent_vol=None, description="d")
    assert meta.legality is Legality.ILLEGAL
    assert meta.parent_vol == BLANK_UUID
    assert not meta.has_parent
    decoded = md.VolumeMetadata.decode(meta.encode())
    assert decoded == meta
    legal = decoded.with_legality(Legality.LEGAL).with_role(VolumeRole.INTERNAL)
    assert md.VolumeMetadata.decode(legal.encode()).role is VolumeRole.INTERNAL
    with pytest.raises(ValueError):
        md.VolumeMetadata.decode(b"[]")
    with pytest.raises(ValueError):
        md.VolumeMetadata.decode(b'{"image": "../x"}')


@pytest.mark.timeout(5)
def test_lvm_tags_round_trip() -> None:
    assert lvmtags.escape("a b=c&d/é") == "a&20b&3Dc&26d/&C3&A9"
    assert lvmtags.unescape(lvmtags.escape("a b=c&d/é")) == "a b=c&d/é"
    meta = domain().updated({"NAME": "Data: one & two"})
    tags = lvmtags.domain_tags(meta)
    assert all(t.startswith("MDT_") for t in tags)
    assert lvmtags.sd_uuid_of(tags) == SD
    assert lvmtags.domain_from_tags([*tags, "other_tag"]) == meta
    with pytest.raises(ValueError, match="checksum"):
        lvmtags.domain_from_tags([t.replace("one", "1") for t in tags])
    with pytest.raises(ValueError, match="no domain metadata"):
        lvmtags.domain_from_tags(["x"])
    vol = md.VolumeMetadata.new(img_uuid=SD, format=VolumeFormat.RAW,
                                allocation=Allocation.PREALLOCATED, capacity=5,
                                parent_img=None, parent_vol=None, description="é" * 400)
    vtags = lvmtags.volume_tags(vol)
    assert vtags[0] == f"IU_{SD}"
    assert all(len(t) <= lvmtags.TAG_MAX for t in vtags)
    back = lvmtags.volume_from_tags(vtags)
    assert back.description == "é" * len(back.description)
    assert 100 < len(back.description) < 400
    short = md.VolumeMetadata.new(img_uuid=SD, format=VolumeFormat.RAW,
                                  allocation=Allocation.PREALLOCATED, capacity=5,
                                  parent_img=None, parent_vol=None, description="x y")
    assert lvmtags.volume_from_tags(lvmtags.volume_tags(short)) == short
    stamped = short.with_legality(short.legality)
    assert stamped.lver == 0  # no guarded write in progress: the version it had
    with stamp.stamping(12):
        stamped = short.with_legality(short.legality)
    assert stamped.lver == 12 and "LVER=12" in ",".join(lvmtags.volume_tags(stamped))
    assert lvmtags.volume_from_tags(lvmtags.volume_tags(stamped)) == stamped
    assert lvmtags.diff(["a", "b"], ["b", "c"]) == (["a"], ["c"])


@pytest.mark.timeout(5)
def test_volume_request_validation_and_json() -> None:
    img, vol, parent = (str(uuid.uuid4()) for _ in range(3))
    req = VolumeCreateRequest(SD, img, vol, 1 << 30, VolumeFormat.COW, Allocation.SPARSE,
                              initial_size=1 << 20, parent_img=img, parent_vol=parent,
                              description="snap")
    assert VolumeCreateRequest.from_json(req.to_json()) == req
    with pytest.raises(InvalidParams, match="volumeID"):
        VolumeCreateRequest(SD, img, "../../etc", 1, VolumeFormat.RAW, Allocation.SPARSE)
    with pytest.raises(InvalidParams, match="size"):
        VolumeCreateRequest(SD, img, vol, 0, VolumeFormat.RAW, Allocation.SPARSE)
    with pytest.raises(InvalidParams, match="cow"):
        VolumeCreateRequest(SD, img, vol, 1, VolumeFormat.RAW, Allocation.SPARSE,
                            parent_img=img, parent_vol=parent)
    with pytest.raises(InvalidParams, match="together"):
        VolumeCreateRequest(SD, img, vol, 1, VolumeFormat.COW, Allocation.SPARSE,
                            parent_vol=parent)
    assert VolumeFormat.parse("cow") is VolumeFormat.COW
    assert Allocation.parse("preallocated") is Allocation.PREALLOCATED
    with pytest.raises(InvalidParams):
        VolumeFormat.parse("vmdk")
