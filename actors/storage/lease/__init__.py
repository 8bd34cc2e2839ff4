"""The on-disk lease algorithms: host ids (delta leases) and resource leases (Disk Paxos).

A plain, standard-library-only layer (plus ``messaging.errors``) for the lease keeper
process, whose renewal path must never stall: no actors, no ZeroMQ, no libvirt here. See
docs/storage-leases.md for the formats, the algorithms and the timing argument.
"""
