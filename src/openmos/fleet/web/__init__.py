"""The fleet dashboard (FastAPI app + plain JS/SVG page)."""
