"""Files CPT Studio ships inside its package: the demo corpus and its probes, presets and lm-eval
task templates. Read them with `cpt_studio.core.paths.resource_path`."""
