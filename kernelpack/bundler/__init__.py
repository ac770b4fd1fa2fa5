"""The bundler: follows imports from an entry script and packs them into one kernel.py."""
