"""Text generation behind one interface.

- :mod:`~resources.generation.interface` - ``SamplingParams``, the ``Generator`` protocol, token counts, progress lines
- :mod:`~resources.generation.transformers_backend` - ``TransformersGenerator`` (CPU, tests, one GPU)
- :mod:`~resources.generation.vllm_backend` - ``VLLMGenerator`` (the optional ``gpu`` extra, CUDA only)
- :mod:`~resources.generation.chunk_cache` - ``ChunkedGeneration``: fixed chunks saved as they finish, resumable
"""
