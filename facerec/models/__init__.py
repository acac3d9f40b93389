"""Networks as declared objects: each states its input, normalisation, template, weights and licence.

Weights load lazily on first use, never at import.
"""
