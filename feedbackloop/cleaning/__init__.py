"""The cleaner's pure core: decode, validate, de-duplicate, impute, filter, normalize, encode."""
