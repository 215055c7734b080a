"""IP-Adapter model code: formats, projections, attention. Imports torch/safetensors only, never the host."""
