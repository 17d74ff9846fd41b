"""The Linux desktop entry and AppStream metadata, shipped as cpt_studio.resources.desktop."""
