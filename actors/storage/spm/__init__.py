"""The SPM: the lease keeper process, the writer process, and their vdsmd side (docs/spm.md)."""
