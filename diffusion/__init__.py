"""The diffusion engine (torch): model families, architectures, loading, sampling, memory."""
