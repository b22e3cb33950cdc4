"""pydecode inside serving engines (vLLM, SGLang). Nothing here is imported by ``import pydecode``: each engine loads
its subpackage through its own plugin entry points, so installing pydecode patches nothing."""
