"""Tissue characterisation from the maps: extracellular volume (:mod:`.ecv`), AHA segments
(:mod:`.segments`) and their bull's-eye plot (:mod:`.bullseye`). Numpy in, numbers out."""
