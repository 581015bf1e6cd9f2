"""carbonx benchmarks: replay order files, put the engine beside its peers."""
