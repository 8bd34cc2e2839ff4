"""Storage domains: the on-disk layout, metadata and the backends behind one interface.

See :mod:`actors.storage.sd.backend` for the interface, :mod:`actors.storage.sd.filelayout`
for the layout of file and loop domains and :mod:`actors.storage.sd.lvmdomain` for LVM.
"""
