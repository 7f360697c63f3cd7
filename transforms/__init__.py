"""exemplar's stages, one module each: listing, sampling, decoding, writing,
the TFT graph and metadata."""
