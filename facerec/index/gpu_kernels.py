"""Triton kernels for the torch search kinds: int8 scans that write only what the next stage needs.

Why: on a GPU a search is bound by the bytes it reads and the kernels it launches, not by arithmetic.
Rows are int8 codes with one fp32 scale each (half the bytes of fp16), and a scan writes the maximum of
each group of G rows instead of every score, so a batch never writes a (queries x rows) matrix. The
groups with the best maxima contain the best rows (a group holding one of the top k has a maximum at
least the k-th score), so the caller (facerec.index.torch_search) re-scans only those groups row by row
and re-scores the best rows exactly in fp32. This module imports triton alone; callers allocate.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def segment_scan(q_ptr, codes_ptr, scale_ptr, dead_ptr, start_ptr, length_ptr, out_ptr, segments, chunks,
                 D: tl.constexpr, BLOCK: tl.constexpr, G: tl.constexpr, BD: tl.constexpr):
    """Program (query b, segment p, chunk c): rows start + c*BLOCK ... of segment p of query b, scored
    against fp32 query b on the CUDA cores (memory-bound), written as BLOCK // G group maxima (-inf for
    rows past the segment's length or deleted). Segments: inverted lists, or all rows, or stage-2 groups."""
    pid = tl.program_id(0)
    seg = pid // chunks
    chunk = pid % chunks
    b = seg // segments
    start = tl.load(start_ptr + seg)
    length = tl.load(length_ptr + seg)
    offs = chunk * BLOCK + tl.arange(0, BLOCK)
    valid = offs < length
    rows = start + offs
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for d0 in tl.static_range(0, D, BD):
        dd = d0 + tl.arange(0, BD)
        x = tl.load(codes_ptr + rows[:, None] * D + dd[None, :], mask=valid[:, None], other=0)
        qv = tl.load(q_ptr + b * D + dd)
        acc += tl.sum(x.to(tl.float32) * qv[None, :], axis=1)
    s = acc * tl.load(scale_ptr + rows, mask=valid, other=0.0)
    dead = tl.load(dead_ptr + rows, mask=valid, other=1)
    s = tl.where(valid & (dead == 0), s, float("-inf"))
    if G > 1:
        s = tl.max(tl.reshape(s, (BLOCK // G, G)), axis=1)
    tl.store(out_ptr + pid * (BLOCK // G) + tl.arange(0, BLOCK // G), s)


@triton.jit
def int8_group_max(qc_ptr, qs_ptr, codes_ptr, scale_ptr, dead_ptr, out_ptr, B, N, row0, out_stride,
                   D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, G: tl.constexpr):
    """Program (query tile, row tile): int8 x int8 -> int32 tensor-core product of BM queries and BN rows
    (row0 + ...), scaled to cosines, reduced to BN // G group maxima per query. Query tiles vary fastest,
    so the programs running together share row tiles through L2 and each row is read from memory once."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(B, BM)
    pid_m = pid % num_m
    pid_n = pid // num_m
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    m_ok = offs_m < B
    n_ok = offs_n < N
    rows = (row0 + offs_n).to(tl.int64)
    acc = tl.zeros((BM, BN), dtype=tl.int32)
    for k0 in tl.static_range(0, D, BK):
        kk = k0 + tl.arange(0, BK)
        a = tl.load(qc_ptr + offs_m[:, None] * D + kk[None, :], mask=m_ok[:, None], other=0)
        x = tl.load(codes_ptr + rows[:, None] * D + kk[None, :], mask=n_ok[:, None], other=0)
        acc = tl.dot(a, tl.trans(x), acc, out_dtype=tl.int32)
    qs = tl.load(qs_ptr + offs_m, mask=m_ok, other=0.0)
    xs = tl.load(scale_ptr + rows, mask=n_ok, other=0.0)
    s = acc.to(tl.float32) * qs[:, None] * xs[None, :]
    dead = tl.load(dead_ptr + rows, mask=n_ok, other=1)
    s = tl.where((n_ok & (dead == 0))[None, :], s, float("-inf"))
    if G == BN:  # one group a tile: a plain row reduction, no reshape of the accumulator layout
        tl.store(out_ptr + offs_m * out_stride + pid_n, tl.max(s, axis=1), mask=m_ok)
    else:
        s = tl.max(tl.reshape(s, (BM, BN // G, G)), axis=2)
        offs_g = pid_n * (BN // G) + tl.arange(0, BN // G)
        tl.store(out_ptr + offs_m[:, None] * out_stride + offs_g[None, :], s, mask=m_ok[:, None])
