"""The multimodal EGFR network, its model bundle and the fivefold inference."""
