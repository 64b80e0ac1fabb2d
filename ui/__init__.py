"""Gradio tabs. Each module exposes `build(state)`; it wires components to core/training functions only."""
