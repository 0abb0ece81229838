"""What a person reads after the run: report.md, report.png, report.html, the
terminal summary, comparisons (``write``, ``markdown``, ``html``, ``plot``,
``terminal``, ``tables``, ``series``), and exports as CSV or TensorBoard (``export``).
"""
