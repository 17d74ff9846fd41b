"""CPT Studio's headless engine. Never imports PySide6, pyqtgraph or gui (import-linter contract)."""

__version__ = "0.1.0"
