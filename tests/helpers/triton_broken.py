"""A kernel that cannot compile, for the compile check's own test."""
import triton
import triton.language as tl


@triton.jit
def broken(x_ptr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(x_ptr + i, tl.dot(tl.load(x_ptr + i), 3.0))  # a matrix product of a vector and a number
