"""Fused attention kernels (Pallas) behind `jattn.dot_product_attention`.

`pallas_attention` holds a Pallas forward kernel (Triton on GPU, Mosaic on
TPU, interpret mode on CPU); its backward pass is the blockwise backward of
`jattn.blockwise`. Select it with `implementation="pallas"`.
"""
