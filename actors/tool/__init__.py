"""vdsm-tool: host preparation, checks and registration (plain modules, no actors)."""
