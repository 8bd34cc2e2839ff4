"""Network configuration verbs (bridges, VLANs, bonds with a safe config and rollback)."""

from messaging.schema.types import AnyValue, Bool, Field, Int, MapOf, Str, Struct
from messaging.schema.verbs import Verb

NET_NAME = Field("network", Str(min_len=1, max_len=15, pattern=r"[A-Za-z0-9_.-]+"))

SETUP_OPTIONS = Struct(
    (
        Field("connectivityCheck", Bool(), required=False, default=False),
        Field("connectivityTimeout", Int(min=1, max=600), required=False, default=120),
    ),
    name="options",
)

VERBS = (
    Verb(
        "Host.getNetworkCapabilities",
        "Networks, bridges, nics, bondings and vlans of this host.",
        result="map",
        implemented=False,
    ),
    Verb(
        "Host.setupNetworks",
        "Apply a set of network changes atomically, with rollback on failure.",
        (
            Field("networks", MapOf(AnyValue())),
            Field("bondings", MapOf(AnyValue()), required=False, default={}),
            Field("options", SETUP_OPTIONS, required=False, default={}),
        ),
        aliases=("setupNetworks",), implemented=False,
        timeout=180.0,
    ),
    Verb(
        "Host.setSafeNetworkConfig",
        "Persist the current network configuration as the one to restore at boot.",
        aliases=("setSafeNetworkConfig",), implemented=False,
    ),
    Verb(
        "Host.addNetwork",
        "Add a bridged network (2011 verb).",
        (
            Field("bridge", Str(min_len=1, max_len=15, pattern=r"[A-Za-z0-9_.-]+")),
            Field("vlan", Str(max_len=4), required=False),
            Field("bond", Str(max_len=15), required=False),
            Field("nics", AnyValue(), required=False),
            Field("options", MapOf(AnyValue()), required=False, default={}),
        ),
        aliases=("addNetwork",), implemented=False,
        timeout=180.0,
    ),
    Verb(
        "Host.delNetwork",
        "Remove a network (2011 verb).",
        (
            Field("bridge", Str(min_len=1, max_len=15, pattern=r"[A-Za-z0-9_.-]+")),
            Field("options", MapOf(AnyValue()), required=False, default={}),
        ),
        aliases=("delNetwork",), implemented=False,
        timeout=180.0,
    ),
    Verb(
        "Host.editNetwork",
        "Replace a network (2011 verb).",
        (
            Field("oldBridge", Str(min_len=1, max_len=15)),
            Field("newBridge", Str(min_len=1, max_len=15)),
            Field("options", MapOf(AnyValue()), required=False, default={}),
        ),
        aliases=("editNetwork",), implemented=False,
        timeout=180.0,
    ),
)
