"""The optional metrics endpoint: what the agent keeps in memory, in Prometheus' text format.

:mod:`.collector` reads the boards at each scrape (host stats, the VM board, the storage
monitors' board, the actor directory); :mod:`.requests` counts the API's requests and their
latency by verb (the API server tells it about each one); :mod:`.server` serves both over
HTTP on ``[metrics] listen``. A scrape asks no actor and never calls libvirt.
"""
