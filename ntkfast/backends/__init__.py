"""Inner kernels.  Backends share the tile plan of ``ntkfast.tiling``; they differ only here."""
