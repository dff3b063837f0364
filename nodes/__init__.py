"""Node definitions, the registry, custom package loading and the ComfyUI V1 compatibility layer."""
