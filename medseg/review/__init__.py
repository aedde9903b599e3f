"""Review outputs for radiologists: overlays (PNG), the HTML review report."""
