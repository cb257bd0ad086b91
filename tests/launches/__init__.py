"""Tests that start processes: the `tspin-trl` command, `accelerate launch` with two processes or two nodes, vLLM
engines, the examples, the configuration matrix, the docs' commands and the GPU check's script."""
