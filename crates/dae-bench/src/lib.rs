//! Benchmark programs for the dae engine; see `src/bin`. Nothing here is part of the product.
