"""Model source ``local``: a model directory already on this host (airgapped use)."""
