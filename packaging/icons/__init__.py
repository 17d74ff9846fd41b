"""The app icon (SVG and PNG sizes), shipped as cpt_studio.resources.icons."""
