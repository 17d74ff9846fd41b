"""CPT Studio desktop app (PySide6 + pyqtgraph): thin over core; never trains or evaluates itself."""
