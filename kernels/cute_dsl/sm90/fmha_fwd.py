"""Hopper (sm_90a) FlashAttention forward in CuTe DSL: the project's own kernel (the seed, evolved; see LINEAGE.md).

Structure (work item = one (query tile, head, batch); persistent CTAs, one per SM: non-causal
items are equal, so CTAs walk them round-robin, m-tile fastest; causal items are not (query tile
i reads i+1 KV tiles), so CTAs take them from a global atomic counter, longest first within
groups of heads whose K/V share L2):
  * warpgroup 0 is the producer: its first warp issues TMA loads of the Q tile and of K/V tiles
    into 128B-swizzled shared memory through mbarrier pipelines (`num_stages` deep); it gives
    most of its registers away with setmaxnreg.
  * warpgroups 1..W are consumers, each owning 64 query rows (block_m = 64 * W).  Each runs
    S = Q K^T with WGMMA (both operands in smem), masks, does the online softmax in registers with
    exp2, converts P to bf16 in registers and runs O += P V with WGMMA (P from registers).
  * `intra_wg_overlap`: the QK^T GEMM of the next KV tile is issued before the PV GEMM of the
    current one, so softmax of one tile runs while the tensor cores work on the other.
  * `pingpong_d64` / `pingpong_d128`: a pair of named barriers makes the consumer warpgroups take turns issuing GEMMs,
    so one warpgroup's softmax hides behind the other's GEMMs.  The value "fa3" schedules the
    turns as FlashAttention-3 does (`_sched_fa3` below): the mbarrier waits use the try_wait
    token idiom, only the first consumer warpgroup waits for K and V inside the turns (the others
    follow it through the turn barrier), and without intra-warpgroup overlap a turn is PV(j) +
    QK^T(j+1) instead of QK^T(j) + PV(j).
  * causal: KV tiles above the diagonal are never loaded; only diagonal tiles are masked.  The
    producer warp fetches the next item index (atomicAdd) while it loads the current item and
    hands it to the consumers through an mbarrier-guarded smem ring; the last CTA to finish
    zeroes the counter.  Eager launches share one counter per (device, stream); each launch
    captured in a CUDA graph gets its own, zeroed by a fill node captured with it
    (`_scheduler_counter`).
  * `tiles_by_cost_d64`: head dim 64 runs 192-row tiles unless a padding-aware work model says
    128-row tiles are faster for this seqlen (seqlen 1024 causal: 192 pads to 1152 rows).
  * epilogue: O is normalised, written to smem with stmatrix and stored with one TMA store,
    which clips the rows past the sequence end.  Persistent: O has its own smem buffer, the
    consumers release Q after the item's last QK^T so the producer loads the next item's K and Q
    while they finish PV and the epilogue; otherwise O reuses the Q buffer.

Contract: `attention(q, k, v, causal=False, softmax_scale=None, out=None)` on (batch, seqlen,
heads, head_dim) bf16 CUDA tensors; GQA when k/v have fewer heads; batch 0 or seqlen 0 gives an
empty output and launches nothing.  Compiled kernels are cached per (knobs, dtype, head dim,
causal, GQA ratio); batch, seqlen and head count are dynamic.  Device code reads its arguments
from three frozen structs built once per CTA (`_Buffers`, `_MmaParams`, `_SchedParams`); only
the pipeline states, which advance, are passed and returned separately.

Credits.  This is our own code, written for this project, but its design follows published work:
  * FlashAttention-3 (Shah, Bikshandi, Zhang, Thakkar, Ramani, Dao; github.com/Dao-AILab/
    flash-attention, `hopper/`, BSD-3-Clause) and FlashAttention-4's CuTe DSL Hopper forward
    (`flash_attn/cute/flash_fwd_sm90.py`, Tri Dao et al., BSD-3-Clause): the warp-specialized
    producer/consumer pipeline with setmaxnreg register split (24/240), the intra-warpgroup
    overlap of softmax with the next QK^T GEMM, the pingpong named barriers between consumer
    warpgroups, persistent CTAs, and a dynamic tile scheduler on a global atomic counter with
    longest query tiles first (FA3's DynamicPersistentTileScheduler).  The "fa3" pingpong mode
    follows FA3's warp-scheduler barrier as `hopper/mainloop_fwd_sm90_tma_gmma_ws.hpp` and
    `hopper/flash_fwd_kernel_sm90.h` place it (BSD-3-Clause, Copyright (c) 2024 Jay Shah, Ganesh
    Bikshandi, Ying Zhang, Vijay Thakkar, Pradeep Ramani, Tri Dao): where the turns open and
    close around the two GEMMs, only the first consumer warpgroup waiting for K/V inside a turn,
    and the consumer_try_wait token before each blocking wait; written anew here, no code copied.
  * quack (Tri Dao et al., github.com/Dao-AILab/quack, Apache-2.0 per the LICENSE file in the
    quack-kernels 0.6.5 wheel): `_acc_rows_cols` and `_acc_as_operand_a` follow its
    `layout_utils.convert_layout_acc_mn` / `convert_layout_acc_frgA` (an MMA accumulator viewed
    as rows x columns, and re-viewed as the A operand of the next WGMMA), `_wgmma` its
    `sm90_utils.gemm` (fence, one gemm per K slice, commit, wait).
  * The CUTLASS CuTe DSL examples (NVIDIA, github.com/NVIDIA/cutlass, examples/python/CuTeDSL,
    BSD-3-Clause): the Hopper TMA/WGMMA/PipelineTmaAsync idioms.  The CuTe DSL package itself
    (nvidia-cutlass-dsl) is distributed under NVIDIA's own license agreement.
"""

import functools
import math
import os
import time
from dataclasses import dataclass

import torch

import cutlass
import cutlass.cute as cute
import cutlass.pipeline as pipeline
import cutlass.utils.hopper_helpers as sm90_utils
from cutlass import Float32, Int32, const_expr
from cutlass.cute.nvgpu import cpasync, warpgroup
from cutlass.cutlass_dsl import T, dsl_user_op
from cutlass._mlir.dialects import llvm
from cutlass.utils import LayoutEnum

KNOBS = {
    "block_m_d128": 128,
    "block_n_d128": 128,
    "block_m_d64": 192,
    "block_n_d64": 128,
    "pingpong_d128": False,
    "pingpong_d64": True,
    "num_stages": 2,
    "intra_wg_overlap": True,
    "persistent": True,
    "persistent_causal": True,
    "l2_group_mb": 16,
    "tiles_by_cost_d64": True,
}

KNOB_SPACE = {
    "block_m_d128": [64, 128, 192],
    "block_n_d128": [64, 96, 128, 160, 176],
    "block_m_d64": [64, 128, 192],
    "block_n_d64": [64, 96, 128, 160, 176, 192],
    "pingpong_d128": [True, False, "fa3"],
    "pingpong_d64": ["fa3", True, False],
    "num_stages": [1, 2, 3],
    "intra_wg_overlap": [True, False],
    "persistent": [True, False],
    "persistent_causal": [True, False],
    "l2_group_mb": [4, 8, 16, 32],
    "tiles_by_cost_d64": [True, False],
}

SMEM_LIMIT_BYTES = 227 * 1024
SUPPORTED_HEAD_DIMS = (64, 128)

# Named hardware barriers; id 0 is __syncthreads.
_BAR_EPILOGUE = 1
_BAR_SCHED_FIRST = 2  # one per consumer warpgroup: 2, 3, 4
_SCHED_SLOTS = 2  # work-item indices in flight from the producer warp to the consumers

_LOG2_E = math.log2(math.e)


def tile_config(knobs, head_dim):
    """(block_m, block_n) the knobs select for this head dim."""
    return knobs[f"block_m_d{head_dim}"], knobs[f"block_n_d{head_dim}"]


# d64 with block_m 128 (two consumer warpgroups, no pingpong) ran at 0.85-0.88x the speed of
# block_m 192 (three, pingpong) per unit of work on the H100 (mha_d64, s >= 4096).
_D64_M128_SPEED = 0.87


@functools.lru_cache(maxsize=256)
def _tile_work(seqlen, block_m, block_n, causal):
    """Rows x columns of S the kernel computes, padding included (causal: up to the diagonal)."""
    m_tiles, n_tiles = -(-seqlen // block_m), -(-seqlen // block_n)
    if not causal:
        return m_tiles * n_tiles * block_m * block_n
    return sum(min(n_tiles, -(-((m + 1) * block_m) // block_n)) for m in range(m_tiles)) * block_m * block_n


def effective_knobs(knobs, head_dim, seqlen, causal):
    """The knobs to compile for this call. With `tiles_by_cost_d64`, a d64 problem whose 192-row
    tiles would waste much work on padding (seqlen 1024 causal: the padded last tile is also the
    longest) runs 128-row tiles instead, when a work model says that is faster."""
    if head_dim != 64 or not knobs.get("tiles_by_cost_d64") or knobs["block_m_d64"] != 192:
        return knobs
    n = knobs["block_n_d64"]
    big = _tile_work(seqlen, 192, n, causal)
    small = _tile_work(seqlen, 128, n, causal) / _D64_M128_SPEED
    return dict(knobs, block_m_d64=128, pingpong_d64=False) if small < big else knobs


def pingpong_for(knobs, head_dim):
    """False, True (our turn schedule) or "fa3" (FlashAttention-3's, see `_sched_fa3`)."""
    return knobs[f"pingpong_d{head_dim}"]


def smem_bytes(block_m, block_n, head_dim, num_stages, elem_bytes=2):
    q = block_m * head_dim * elem_bytes
    kv = 2 * num_stages * block_n * head_dim * elem_bytes
    return q + kv + 2048  # mbarriers + 1 KiB alignment of the first buffer, with slack


def fits_separate_o(block_m, block_n, head_dim, num_stages, elem_bytes=2):
    """Whether an O staging buffer of its own fits next to Q and the K/V stages (the persistent
    loop needs it: the next tile's Q loads while this tile's O is being stored)."""
    extra = block_m * head_dim * elem_bytes
    return smem_bytes(block_m, block_n, head_dim, num_stages, elem_bytes) + extra <= SMEM_LIMIT_BYTES


def uses_dynamic_scheduler(causal, persistent_causal, block_m, block_n, head_dim, num_stages):
    """Whether a configuration runs the dynamic (atomic counter) scheduler: persistent causal
    attention, when the O staging buffer fits. Only these launches read and write the counter."""
    return bool(persistent_causal and causal and fits_separate_o(block_m, block_n, head_dim, num_stages, 2))


def check_knobs(knobs, head_dim):
    """Raise ValueError for a knob combination this kernel cannot run."""
    for name, allowed in KNOB_SPACE.items():
        if knobs.get(name) not in allowed:
            raise ValueError(f"knob {name}={knobs.get(name)!r} not in {allowed}")
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {head_dim} unsupported (supported: {SUPPORTED_HEAD_DIMS})")
    block_m, block_n = tile_config(knobs, head_dim)
    need = smem_bytes(block_m, block_n, head_dim, knobs["num_stages"])
    if need > SMEM_LIMIT_BYTES:
        raise ValueError(
            f"block_m={block_m} block_n={block_n} num_stages={knobs['num_stages']} head_dim="
            f"{head_dim} needs {need} B of shared memory > {SMEM_LIMIT_BYTES}"
        )


# --------------------------------------------------------------------------------------------
# small register-layout helpers
# --------------------------------------------------------------------------------------------


def _acc_rows_cols(acc: cute.Tensor) -> cute.Tensor:
    """View a WGMMA accumulator ((2, 2, N/8), M_atoms, N_atoms) as (rows, cols) of this thread."""
    l = cute.make_layout(acc.layout.shape)
    shape = ((l.shape[0][1], l.shape[1]), (l.shape[0][0], l.shape[0][2], l.shape[2]))
    stride = ((l.stride[0][1], l.stride[1]), (l.stride[0][0], l.stride[0][2], l.stride[2]))
    return cute.make_tensor(
        acc.iterator, cute.composition(acc.layout, cute.make_layout(shape, stride=stride))
    )


def _acc_as_operand_a(acc: cute.Tensor) -> cute.Tensor:
    """View a WGMMA accumulator ((2, 2, N/8), M, N_atoms) as the register A operand
    ((2, 2, 2), M, (N/16, N_atoms)) of a following WGMMA whose K is the accumulator's N."""
    l = cute.logical_divide(acc.layout, ((None, None, 2), None, None))
    shape = ((l.shape[0][0], l.shape[0][1], l.shape[0][2][0]), l.shape[1], (l.shape[0][2][1], l.shape[2]))
    stride = (
        (l.stride[0][0], l.stride[0][1], l.stride[0][2][0]),
        l.stride[1],
        (l.stride[0][2][1], l.stride[2]),
    )
    return cute.make_tensor(acc.iterator, cute.make_layout(shape, stride=stride))


@cute.jit
def _wgmma(
    tiled_mma: cute.TiledMma,
    acc: cute.Tensor,
    frag_a: cute.Tensor,
    frag_b: cute.Tensor,
    zero_init: cutlass.Constexpr[bool],
    wait: cutlass.Constexpr[int],
):
    """Issue one warpgroup GEMM over all K slices; wait<0 leaves it in flight."""
    warpgroup.fence()
    atom = cute.make_mma_atom(tiled_mma.op)
    atom.set(warpgroup.Field.ACCUMULATE, not zero_init)
    for k in cutlass.range_constexpr(cute.size(frag_a.shape[2])):
        cute.gemm(atom, acc, frag_a[None, None, k], frag_b[None, None, k], acc)
        atom.set(warpgroup.Field.ACCUMULATE, True)
    warpgroup.commit_group()
    if const_expr(wait >= 0):
        warpgroup.wait_group(wait)


@dsl_user_op
def _pack_bf16x2(lo: Float32, hi: Float32, *, loc=None, ip=None) -> Int32:
    """Two fp32 -> one register of two bf16 (lo in the low half) in a single cvt."""
    return Int32(
        llvm.inline_asm(
            T.i32(),
            [Float32(lo).ir_value(loc=loc, ip=ip), Float32(hi).ir_value(loc=loc, ip=ip)],
            "cvt.rn.bf16x2.f32 $0, $2, $1;",
            "=r,f,f",
            has_side_effects=False,
            is_align_stack=False,
            asm_dialect=llvm.AsmDialect.AD_ATT,
        )
    )


@cute.jit
def _to_bf16(src: cute.Tensor, dst: cute.Tensor):
    """fp32 fragment -> bf16 fragment of the same shape, two elements per instruction
    (the generic conversion falls back to scalar cvts for some tile widths)."""
    dst32 = cute.recast_tensor(dst, Int32)
    for i in cutlass.range_constexpr(cute.size(dst32)):
        dst32[i] = _pack_bf16x2(src[2 * i], src[2 * i + 1])


@cute.jit
def _row_max(S_rc: cute.Tensor, r: cutlass.Constexpr[int], init: Float32) -> Float32:
    # four independent chains instead of one serial chain of fmax
    n = cute.size(S_rc, mode=[1])
    acc = [S_rc[r, 0], S_rc[r, 1], S_rc[r, 2], S_rc[r, 3]]
    for c in cutlass.range_constexpr(4, n):
        acc[c % 4] = cute.arch.fmax(acc[c % 4], S_rc[r, c])
    return cute.arch.fmax(cute.arch.fmax(acc[0], acc[1]), cute.arch.fmax(cute.arch.fmax(acc[2], acc[3]), init))


@cute.jit
def _row_sum(S_rc: cute.Tensor, r: cutlass.Constexpr[int], init: Float32) -> Float32:
    n = cute.size(S_rc, mode=[1])
    acc = [S_rc[r, 0] + init, S_rc[r, 1], S_rc[r, 2], S_rc[r, 3]]
    for c in cutlass.range_constexpr(4, n):
        acc[c % 4] = acc[c % 4] + S_rc[r, c]
    return (acc[0] + acc[1]) + (acc[2] + acc[3])


@cute.jit
def _quad_max(x: Float32) -> Float32:
    # the 4 threads of a quad hold one accumulator row between them
    x = cute.arch.fmax(x, cute.arch.shuffle_sync_bfly(x, offset=1))
    return cute.arch.fmax(x, cute.arch.shuffle_sync_bfly(x, offset=2))


@cute.jit
def _quad_sum(x: Float32) -> Float32:
    x = x + cute.arch.shuffle_sync_bfly(x, offset=1)
    return x + cute.arch.shuffle_sync_bfly(x, offset=2)


# --------------------------------------------------------------------------------------------
# the kernel
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Buffers:
    """Q, K and V of one CTA: the global (s, d, h, b) views, their smem buffers, the TMA atoms
    that load them and the Q and K/V pipelines between the producer warp and the consumers.
    Built once per CTA, before the warp split."""

    mQ: cute.Tensor
    mK: cute.Tensor
    mV: cute.Tensor
    sQ: cute.Tensor
    sK: cute.Tensor
    sV: cute.Tensor
    tma_atom_Q: cute.CopyAtom
    tma_atom_K: cute.CopyAtom
    tma_atom_V: cute.CopyAtom
    pipe_q: object
    pipe_k: object
    pipe_v: object


@dataclass(frozen=True)
class _MmaParams:
    """What a consumer thread's GEMMs, softmax and epilogue read. Built once per CTA; nothing in
    it is reassigned afterwards (the register tensors are written in place), so it can be passed
    into the device loops as one argument. The pipeline states, which do change, stay apart."""

    # global tensors, O staging buffer and its TMA atom, the tiled MMAs, the pipelines
    mQ: cute.Tensor
    mK: cute.Tensor
    mO: cute.Tensor
    sO: cute.Tensor
    tma_atom_O: cute.CopyAtom
    tiled_mma_qk: cute.TiledMma
    tiled_mma_pv: cute.TiledMma
    pipe_q: object
    pipe_k: object
    pipe_v: object
    scale_log2: Float32  # softmax scale * log2(e)
    tidx: Int32  # thread index among the consumer threads
    wg_idx: Int32  # consumer warpgroup index
    # WGMMA operands: Q (smem) for QK^T, K and V^T stages (smem), P (registers) for PV
    tSrQ0: cute.Tensor
    tSrK: cute.Tensor
    tOrVt: cute.Tensor
    tOrP: cute.Tensor
    # accumulators, their (row, column) views and the coordinates of S's elements
    acc_S: cute.Tensor
    acc_O: cute.Tensor
    S_rc: cute.Tensor
    O_rc: cute.Tensor
    tScS: cute.Tensor
    # online-softmax state per accumulator row of this thread
    row_max: cute.Tensor
    row_sum: cute.Tensor
    row_scale: cute.Tensor


@dataclass(frozen=True)
class _SchedParams:
    """The dynamic (causal) scheduler: the smem ring through which the producer warp hands work
    item indices to the consumers, the global atomic counters and the L2 group size."""

    pipe: object
    sTile: cute.Tensor
    counter: cute.Tensor
    group: Int32


class Sm90FlashAttentionForward:
    """One compiled configuration; knobs are constructor arguments, shapes stay dynamic."""

    def __init__(
        self,
        head_dim: int,
        qhead_per_kvhead: int,
        is_causal: bool,
        block_m: int = 128,
        block_n: int = 128,
        num_stages: int = 2,
        intra_wg_overlap: bool = True,
        pingpong=True,  # False, True or "fa3" (FlashAttention-3's turn schedule)
        persistent: bool = True,
        persistent_causal: bool = True,
        dtype=cutlass.BFloat16,
    ):
        assert block_m % 64 == 0 and 64 <= block_m <= 192
        assert block_n % 16 == 0 and 16 <= block_n <= 256
        self.dtype = dtype
        self.head_dim = head_dim
        self.qhead_per_kvhead = qhead_per_kvhead
        self.is_causal = is_causal
        self.block_m = block_m
        self.block_n = block_n
        self.num_stages = num_stages
        self.intra_wg_overlap = intra_wg_overlap
        self.num_mma_wg = block_m // 64
        assert pingpong in (True, False, "fa3"), pingpong
        self.pingpong = bool(pingpong) and self.num_mma_wg >= 2
        self.sched_fa3 = self.pingpong and pingpong == "fa3"
        # persistent CTAs with O staged apart from Q; non-causal items are equal, so a static
        # round-robin balances them; causal items differ in length (query tile i sees i+1 KV
        # tiles), so persistent causal CTAs take items from a global atomic counter, longest
        # first, instead (a fixed round-robin left some SMs with twice the work of others)
        self.dynamic = uses_dynamic_scheduler(
            is_causal, persistent_causal, block_m, block_n, head_dim, num_stages)
        fits_o = fits_separate_o(block_m, block_n, head_dim, num_stages, 2)
        self.persistent = (persistent and not is_causal and fits_o) or self.dynamic
        self.num_mma_threads = 128 * self.num_mma_wg
        self.num_threads = 128 * (self.num_mma_wg + 1)
        # producer gives registers to consumers; totals stay within the 64K register file
        self.producer_regs, self.mma_regs = {1: (56, 256), 2: (24, 240), 3: (32, 160)}[
            self.num_mma_wg
        ]

    # ---- host-side (trace-time) setup -------------------------------------------------------

    def _smem_layout(self, rows, cols, stages):
        atom = warpgroup.make_smem_layout_atom(
            sm90_utils.get_smem_layout_atom(LayoutEnum.ROW_MAJOR, self.dtype, cols), self.dtype
        )
        if stages is None:
            return cute.tile_to_shape(atom, (rows, cols), order=(0, 1))
        return cute.tile_to_shape(atom, (rows, cols, stages), order=(0, 1, 2))

    def _shared_storage(self, sQ_layout, sK_layout, sV_layout, sO_layout):
        """Shared memory: barriers, Q, K/V stages, the dynamic scheduler's ring (persistent causal)
        and an O staging buffer (persistent only; otherwise O reuses Q's buffer). Fields a
        configuration does not use are left out, so its layout carries nothing extra."""
        buf = lambda layout: cute.struct.Align[cute.struct.MemRange[self.dtype, cute.cosize(layout)], 1024]  # noqa: E731
        fields = {
            "mbar_q": cute.struct.MemRange[cutlass.Int64, 2],
            "mbar_k": cute.struct.MemRange[cutlass.Int64, self.num_stages * 2],
            "mbar_v": cute.struct.MemRange[cutlass.Int64, self.num_stages * 2],
        }
        if self.dynamic:
            fields["mbar_sched"] = cute.struct.MemRange[cutlass.Int64, _SCHED_SLOTS * 2]
            fields["sched_tile"] = cute.struct.MemRange[cutlass.Int32, _SCHED_SLOTS]
        fields.update(sQ=buf(sQ_layout), sK=buf(sK_layout), sV=buf(sV_layout))
        if self.persistent:
            fields["sO"] = buf(sO_layout)
        return cute.struct(type("SharedStorage", (), {"__annotations__": fields}))

    @cute.jit
    def __call__(
        self,
        mQ: cute.Tensor,  # (b, s, h, d)
        mK: cute.Tensor,  # (b, s, h_kv, d)
        mV: cute.Tensor,  # (b, s, h_kv, d)
        mO: cute.Tensor,  # (b, s, h, d)
        softmax_scale_log2: Float32,
        max_ctas: Int32,
        mCounter: cute.Tensor,  # (2,) int32, zero at launch (the kernel leaves it zero)
        sched_group: Int32,  # query heads whose items are handed out together (L2 reuse)
        stream,
    ):
        # kernel view: (s, d, h, b) so that a TMA box is (rows, head_dim) of one head
        mQ, mK, mV, mO = [
            cute.make_tensor(t.iterator, cute.select(t.layout, mode=[1, 3, 2, 0]))
            for t in (mQ, mK, mV, mO)
        ]
        d = self.head_dim
        tiled_mma_qk = sm90_utils.make_trivial_tiled_mma(
            self.dtype,
            self.dtype,
            cute.nvgpu.OperandMajorMode.K,
            cute.nvgpu.OperandMajorMode.K,
            Float32,
            (self.num_mma_wg, 1, 1),
            (64, self.block_n),
        )
        tiled_mma_pv = sm90_utils.make_trivial_tiled_mma(
            self.dtype,
            self.dtype,
            cute.nvgpu.OperandMajorMode.K,
            cute.nvgpu.OperandMajorMode.MN,
            Float32,
            (self.num_mma_wg, 1, 1),
            (64, d),
            warpgroup.OperandSource.RMEM,
        )
        sQ_layout = self._smem_layout(self.block_m, d, 1)
        sK_layout = self._smem_layout(self.block_n, d, self.num_stages)
        sV_layout = self._smem_layout(self.block_n, d, self.num_stages)
        sO_layout = self._smem_layout(self.block_m, d, None)

        g2s = cpasync.CopyBulkTensorTileG2SOp()
        tma_atom_Q, tma_Q = cpasync.make_tiled_tma_atom(
            g2s, mQ, cute.select(sQ_layout, mode=[0, 1]), (self.block_m, d)
        )
        tma_atom_K, tma_K = cpasync.make_tiled_tma_atom(
            g2s, mK, cute.select(sK_layout, mode=[0, 1]), (self.block_n, d)
        )
        tma_atom_V, tma_V = cpasync.make_tiled_tma_atom(
            g2s, mV, cute.select(sV_layout, mode=[0, 1]), (self.block_n, d)
        )
        tma_atom_O, tma_O = cpasync.make_tiled_tma_atom(
            cpasync.CopyBulkTensorTileS2GOp(), mO, sO_layout, (self.block_m, d)
        )
        self.bytes_q = cute.size_in_bytes(self.dtype, cute.select(sQ_layout, mode=[0, 1]))
        self.bytes_kv = cute.size_in_bytes(self.dtype, cute.select(sK_layout, mode=[0, 1]))

        SharedStorage = self._shared_storage(sQ_layout, sK_layout, sV_layout, sO_layout)

        num_m_blocks = cute.ceil_div(cute.size(mQ.shape[0]), self.block_m)
        num_tiles = num_m_blocks * cute.size(mQ.shape[2]) * cute.size(mQ.shape[3])
        grid = (num_m_blocks, cute.size(mQ.shape[2]), cute.size(mQ.shape[3]))
        if const_expr(self.persistent):
            grid = (cutlass.min(num_tiles, max_ctas), 1, 1)
        self.kernel(
            tma_Q, tma_K, tma_V, tma_O,
            tma_atom_Q, tma_atom_K, tma_atom_V, tma_atom_O,
            sQ_layout, sK_layout, sV_layout, sO_layout,
            tiled_mma_qk, tiled_mma_pv,
            softmax_scale_log2,
            mCounter,
            sched_group,
            SharedStorage,
        ).launch(
            grid=grid,
            block=[self.num_threads, 1, 1],
            stream=stream,
            min_blocks_per_mp=1,
        )

    # ---- device code -------------------------------------------------------------------------

    @cute.kernel
    def kernel(
        self,
        mQ: cute.Tensor,
        mK: cute.Tensor,
        mV: cute.Tensor,
        mO: cute.Tensor,
        tma_atom_Q: cute.CopyAtom,
        tma_atom_K: cute.CopyAtom,
        tma_atom_V: cute.CopyAtom,
        tma_atom_O: cute.CopyAtom,
        sQ_layout: cute.ComposedLayout,
        sK_layout: cute.ComposedLayout,
        sV_layout: cute.ComposedLayout,
        sO_layout: cute.ComposedLayout,
        tiled_mma_qk: cute.TiledMma,
        tiled_mma_pv: cute.TiledMma,
        softmax_scale_log2: Float32,
        mCounter: cute.Tensor,
        sched_group: Int32,
        SharedStorage: cutlass.Constexpr,
    ):
        warp_idx = cute.arch.make_warp_uniform(cute.arch.warp_idx())
        if warp_idx == 0:
            for atom in (tma_atom_Q, tma_atom_K, tma_atom_V, tma_atom_O):
                cpasync.prefetch_descriptor(atom)

        smem = cutlass.utils.SmemAllocator()
        storage = smem.allocate(SharedStorage)

        producer = pipeline.CooperativeGroup(pipeline.Agent.Thread, 1)
        # the TMA pipeline counts one release per consumer warp (lane 0 signals)
        consumers = pipeline.CooperativeGroup(pipeline.Agent.Thread, self.num_mma_threads // 32)
        pipe_q = pipeline.PipelineTmaAsync.create(
            barrier_storage=storage.mbar_q.data_ptr(), num_stages=1, producer_group=producer,
            consumer_group=consumers, tx_count=self.bytes_q, defer_sync=True,
        )
        pipe_k = pipeline.PipelineTmaAsync.create(
            barrier_storage=storage.mbar_k.data_ptr(), num_stages=self.num_stages,
            producer_group=producer, consumer_group=consumers, tx_count=self.bytes_kv,
            defer_sync=True,
        )
        pipe_v = pipeline.PipelineTmaAsync.create(
            barrier_storage=storage.mbar_v.data_ptr(), num_stages=self.num_stages,
            producer_group=producer, consumer_group=consumers, tx_count=self.bytes_kv,
            defer_sync=True,
        )
        sched = None
        if const_expr(self.dynamic):
            # producer warp -> consumers: the index of the next work item, through a ring of
            # smem slots guarded by mbarriers (every consumer thread reads, then releases)
            pipe_sched = pipeline.PipelineAsync.create(
                barrier_storage=storage.mbar_sched.data_ptr(), num_stages=_SCHED_SLOTS,
                producer_group=producer,
                consumer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, self.num_mma_threads),
                defer_sync=True,
            )
            sTile = storage.sched_tile.get_tensor(cute.make_layout(_SCHED_SLOTS))
            sched = _SchedParams(pipe_sched, sTile, mCounter, sched_group)
        cute.arch.mbarrier_init_fence()
        cute.arch.barrier()

        sQ = storage.sQ.get_tensor(sQ_layout.outer, swizzle=sQ_layout.inner)
        sK = storage.sK.get_tensor(sK_layout.outer, swizzle=sK_layout.inner)
        sV = storage.sV.get_tensor(sV_layout.outer, swizzle=sV_layout.inner)
        if const_expr(self.persistent):
            sO = storage.sO.get_tensor(sO_layout.outer, swizzle=sO_layout.inner)
        else:
            # O reuses Q's buffer once every QK^T GEMM of this tile has finished
            sO = storage.sQ.get_tensor(sO_layout.outer, swizzle=sO_layout.inner)
        # V^T as (d, block_n, stages) for the PV GEMM's B operand
        sVt = cute.composition(
            sV,
            cute.make_ordered_layout(
                (self.head_dim, self.block_n, self.num_stages), order=(1, 0, 2)
            ),
        )

        coords = None
        if const_expr(not self.persistent):
            # the CTA's one work item, worked out once for producer and consumers
            coords = self._tile_coords(mQ, mK, None)

        buf = _Buffers(mQ, mK, mV, sQ, sK, sV, tma_atom_Q, tma_atom_K, tma_atom_V, pipe_q, pipe_k, pipe_v)
        if warp_idx < 4:
            cute.arch.setmaxregister_decrease(self.producer_regs)
            if warp_idx == 0:
                self.load(buf, coords, sched)
        else:
            cute.arch.setmaxregister_increase(self.mma_regs)
            tidx = cute.arch.thread_idx()[0] - 128
            self.mma(buf, mO, sVt, sO, tma_atom_O, tiled_mma_qk, tiled_mma_pv, softmax_scale_log2,
                     tidx, coords, sched)

    @cute.jit
    def _tile_coords(self, mQ, mK, tile):
        """(m_block, head, batch, kv head, n_block_max) of work item `tile` (m_block fastest, so
        CTAs running at the same time share a head's K/V in L2)."""
        if const_expr(self.persistent):
            num_m_blocks = cute.ceil_div(mQ.shape[0], self.block_m)
            num_heads = mQ.shape[2]
            m_block = tile % num_m_blocks
            rest = tile // num_m_blocks
            head_idx = rest % num_heads
            batch_idx = rest // num_heads
        else:
            # one CTA per work item on a (query tile, head, batch) grid
            m_block, head_idx, batch_idx = cute.arch.block_idx()
            if const_expr(self.is_causal):
                # longest rows first: they set the kernel's tail
                m_block = cute.arch.grid_dim()[0] - 1 - m_block
        return self._item(mK, m_block, head_idx, batch_idx)

    @cute.jit
    def _item(self, mK, m_block, head_idx, batch_idx):
        """A work item's coordinates, with its kv head and its number of KV tiles (causal: up to
        the diagonal)."""
        head_kv = head_idx // self.qhead_per_kvhead
        n_block_max = cute.ceil_div(mK.shape[0], self.block_n)
        if const_expr(self.is_causal):
            n_block_max = cutlass.min(
                n_block_max, cute.ceil_div((m_block + 1) * self.block_m, self.block_n)
            )
        return m_block, head_idx, batch_idx, head_kv, n_block_max

    @cute.jit
    def _dynamic_coords(self, mQ, mK, tile, group):
        """Coordinates of item `tile` in the dynamic order: the (head, batch) pairs are cut into
        groups of `group` consecutive query heads; inside a group the query tiles go from the
        last (longest) to the first, all heads of the group at one query tile before the next.
        Items handed out together thus share the group's K/V in L2, and each group ends with
        its shortest items, which fill the gaps the long ones leave."""
        num_m_blocks = cute.ceil_div(mQ.shape[0], self.block_m)
        num_bh = mQ.shape[2] * mQ.shape[3]
        per_group = num_m_blocks * group
        group_idx = tile // per_group
        r = tile - group_idx * per_group
        first_bh = group_idx * group
        size = cutlass.min(group, num_bh - first_bh)  # the last group may be short
        m_block = num_m_blocks - 1 - r // size
        bh = first_bh + r % size
        return self._item(mK, m_block, bh % mQ.shape[2], bh // mQ.shape[2])

    @cute.jit
    def _publish(self, tile, sched: _SchedParams, state):
        """Producer warp: hand work item `tile` (>= the item count: stop) to the consumers."""
        sched.pipe.producer_acquire(state)
        if cute.arch.lane_idx() == 0:
            sched.sTile[state.index] = tile
            sched.pipe.producer_commit(state)

    @cute.jit
    def _receive(self, sched: _SchedParams, state):
        """Consumer thread: the next work item's index."""
        sched.pipe.consumer_wait(state)
        tile = sched.sTile[state.index]
        sched.pipe.consumer_release(state)
        return tile

    @cute.jit
    def _num_tiles(self, mQ):
        return cute.ceil_div(mQ.shape[0], self.block_m) * mQ.shape[2] * mQ.shape[3]

    # ---- producer warp -------------------------------------------------------------------------

    @cute.jit
    def load(self, ld: _Buffers, coords, sched: _SchedParams):
        """The producer warp: TMA loads of every work item of this CTA, in the order the
        consumers take them (dynamic: fetched from the atomic counter one item ahead)."""
        state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, self.num_stages)
        q_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, 1)
        if const_expr(self.dynamic):
            mCounter, group = sched.counter, sched.group
            sched_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, _SCHED_SLOTS)
            num_tiles = self._num_tiles(ld.mQ)
            num_ctas = cute.arch.grid_dim()[0]
            lane = cute.arch.lane_idx()
            tile = Int32(cute.arch.block_idx()[0])  # the first item of every CTA is its own
            while tile < num_tiles:
                self._publish(tile, sched, sched_state)
                sched_state.advance()
                # ask for the next item now: the atomic's round trip hides behind the loads
                nxt = Int32(0)
                if lane == 0:
                    nxt = num_ctas + cute.arch.atomic_add(mCounter.iterator, Int32(1), scope="gpu")
                state, q_state = self._load_tile(
                    ld, self._dynamic_coords(ld.mQ, ld.mK, tile, group), state, q_state)
                tile = cute.arch.shuffle_sync(nxt, 0)
            self._publish(tile, sched, sched_state)
            if lane == 0:
                # The last CTA to finish asking zeroes the counters for the next launch: every
                # CTA's final fetch is ordered before its release-increment of the second one.
                done = cute.arch.atomic_add(mCounter.iterator + 1, Int32(1), sem="acq_rel", scope="gpu")
                if done == num_ctas - 1:
                    cute.arch.atomic_exch(mCounter.iterator, Int32(0), scope="gpu")
                    cute.arch.atomic_exch(mCounter.iterator + 1, Int32(0), scope="gpu")
        elif const_expr(self.persistent):
            for tile in cutlass.range(
                cute.arch.block_idx()[0], self._num_tiles(ld.mQ), cute.arch.grid_dim()[0], unroll=1
            ):
                state, q_state = self._load_tile(
                    ld, self._tile_coords(ld.mQ, ld.mK, tile), state, q_state)
        else:
            self._load_tile(ld, coords, state, q_state)

    @cute.jit
    def _load_tile(self, ld: _Buffers, coords, state, q_state):
        """TMA loads of one work item; returns the advanced producer states."""
        d = self.head_dim
        one = cute.make_layout(1)
        m_block, head_idx, batch_idx, head_kv, n_block_max = coords
        pipe_q, pipe_k, pipe_v = ld.pipe_q, ld.pipe_k, ld.pipe_v
        tma_atom_Q, tma_atom_K, tma_atom_V = ld.tma_atom_Q, ld.tma_atom_K, ld.tma_atom_V
        gQ = cute.local_tile(ld.mQ[None, None, head_idx, batch_idx], (self.block_m, d), (None, 0))
        gK = cute.local_tile(ld.mK[None, None, head_kv, batch_idx], (self.block_n, d), (None, 0))
        gV = cute.local_tile(ld.mV[None, None, head_kv, batch_idx], (self.block_n, d), (None, 0))
        tQs, tQg = cpasync.tma_partition(
            tma_atom_Q, 0, one, cute.group_modes(ld.sQ, 0, 2), cute.group_modes(gQ, 0, 2)
        )
        tKs, tKg = cpasync.tma_partition(
            tma_atom_K, 0, one, cute.group_modes(ld.sK, 0, 2), cute.group_modes(gK, 0, 2)
        )
        tVs, tVg = cpasync.tma_partition(
            tma_atom_V, 0, one, cute.group_modes(ld.sV, 0, 2), cute.group_modes(gV, 0, 2)
        )
        # K of the first (last-in-sequence) tile, then Q, then K one tile ahead of V:
        # the consumer's QK^T of tile j+1 overlaps its PV of tile j.  In the persistent
        # loop this K goes out while the consumers still work on the previous item, and Q
        # as soon as they release it (after their last QK^T GEMM).
        n_last = n_block_max - 1
        pipe_k.producer_acquire(state)
        cute.copy(tma_atom_K, tKg[None, n_last], tKs[None, state.index],
                  tma_bar_ptr=pipe_k.producer_get_barrier(state))
        pipe_q.producer_acquire(q_state)
        cute.copy(tma_atom_Q, tQg[None, m_block], tQs[None, 0],
                  tma_bar_ptr=pipe_q.producer_get_barrier(q_state))
        q_state.advance()
        for i in cutlass.range(n_last, unroll=1):
            prev = state.clone()
            state.advance()
            pipe_k.producer_acquire(state)
            cute.copy(tma_atom_K, tKg[None, n_last - 1 - i], tKs[None, state.index],
                      tma_bar_ptr=pipe_k.producer_get_barrier(state))
            pipe_v.producer_acquire(prev)
            cute.copy(tma_atom_V, tVg[None, n_last - i], tVs[None, prev.index],
                      tma_bar_ptr=pipe_v.producer_get_barrier(prev))
        pipe_v.producer_acquire(state)
        cute.copy(tma_atom_V, tVg[None, 0], tVs[None, state.index],
                  tma_bar_ptr=pipe_v.producer_get_barrier(state))
        state.advance()
        return state, q_state

    # ---- consumer warpgroups -------------------------------------------------------------------

    @cute.jit
    def mma(
        self, buf: _Buffers, mO, sVt, sO, tma_atom_O, tiled_mma_qk, tiled_mma_pv,
        softmax_scale_log2, tidx, coords, sched: _SchedParams,
    ):
        """A consumer thread: builds its fragments once, then runs every work item of this CTA."""
        mQ, mK, sQ, sK = buf.mQ, buf.mK, buf.sQ, buf.sK
        wg_idx = cute.arch.make_warp_uniform(tidx // 128)
        thr_qk = tiled_mma_qk.get_slice(tidx)
        wg_qk = tiled_mma_qk.get_slice(wg_idx * 128)
        wg_pv = tiled_mma_pv.get_slice(wg_idx * 128)
        tSrQ = wg_qk.make_fragment_A(wg_qk.partition_A(sQ))
        tSrK = wg_qk.make_fragment_B(wg_qk.partition_B(sK))
        tOrVt = wg_pv.make_fragment_B(wg_pv.partition_B(sVt))
        tOrP = wg_pv.make_fragment_A(wg_pv.partition_shape_A((self.block_m, self.block_n)))
        acc_S = cute.make_rmem_tensor(
            tiled_mma_qk.partition_shape_C((self.block_m, self.block_n)), Float32
        )
        acc_O = cute.make_rmem_tensor(
            tiled_mma_pv.partition_shape_C((self.block_m, self.head_dim)), Float32
        )
        tSrQ0 = tSrQ[None, None, None, 0]

        # coordinates of this thread's accumulator elements inside a (block_m, block_n) tile
        tScS = _acc_rows_cols(thr_qk.partition_C(cute.make_identity_tensor((self.block_m, self.block_n))))
        S_rc = _acc_rows_cols(acc_S)
        O_rc = _acc_rows_cols(acc_O)
        num_rows = cute.size(S_rc, mode=[0])
        row_max = cute.make_rmem_tensor(num_rows, Float32)
        row_sum = cute.make_rmem_tensor(num_rows, Float32)
        row_scale = cute.make_rmem_tensor(num_rows, Float32)
        p = _MmaParams(
            mQ, mK, mO, sO, tma_atom_O, tiled_mma_qk, tiled_mma_pv, buf.pipe_q, buf.pipe_k, buf.pipe_v,
            softmax_scale_log2, tidx, wg_idx, tSrQ0, tSrK, tOrVt, tOrP, acc_S, acc_O, S_rc, O_rc,
            tScS, row_max, row_sum, row_scale,
        )

        if const_expr(self.pingpong):
            if wg_idx == 0:
                # the first consumer warpgroup opens its own turn
                cute.arch.barrier_arrive(
                    barrier_id=_BAR_SCHED_FIRST, number_of_threads=2 * 128
                )

        kv_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Consumer, self.num_stages)
        q_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Consumer, 1)
        if const_expr(self.dynamic):
            sched_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Consumer, _SCHED_SLOTS)
            num_tiles = self._num_tiles(mQ)
            tile = self._receive(sched, sched_state)
            sched_state.advance()
            while tile < num_tiles:
                kv_state, q_state = self._mma_tile(
                    p, self._dynamic_coords(mQ, mK, tile, sched.group), kv_state, q_state)
                tile = self._receive(sched, sched_state)
                sched_state.advance()
        elif const_expr(self.persistent):
            for tile in cutlass.range(
                cute.arch.block_idx()[0], self._num_tiles(mQ), cute.arch.grid_dim()[0], unroll=1
            ):
                kv_state, q_state = self._mma_tile(
                    p, self._tile_coords(mQ, mK, tile), kv_state, q_state)
        else:
            self._mma_tile(p, coords, kv_state, q_state)
        if const_expr(self.persistent):
            # smem must outlive the last store's reads
            if tidx < 32:
                cute.arch.cp_async_bulk_wait_group(0, read=True)

    @cute.jit
    def _mma_tile(self, p: _MmaParams, coords, kv_state, q_state):
        """One work item on the consumer side; returns the advanced consumer states."""
        seqlen_k = p.mK.shape[0]
        m_block, head_idx, batch_idx, head_kv, n_block_max = coords
        p.acc_O.fill(0.0)
        p.pipe_q.consumer_wait(q_state)

        # ---- first tile (the last in the sequence): always masked ----------------------
        n_block = n_block_max - 1
        if const_expr(self.sched_fa3 and not self.intra_wg_overlap):
            # FA3 without overlap: the turn opens before the item's first QK^T GEMM ...
            self._sched_sync(p.wg_idx)
            self._wait(p.pipe_k, kv_state, p.wg_idx, False)
            _wgmma(p.tiled_mma_qk, p.acc_S, p.tSrQ0, p.tSrK[None, None, None, kv_state.index], True, -1)
            self._sched_arrive(p.wg_idx)
            warpgroup.wait_group(0)
        else:
            # (FA3 with overlap: this GEMM is outside the turns, so every warpgroup waits for K)
            self._wait(p.pipe_k, kv_state, p.wg_idx, False)
            if const_expr(not self.intra_wg_overlap):
                self._sched_sync(p.wg_idx)
            _wgmma(p.tiled_mma_qk, p.acc_S, p.tSrQ0, p.tSrK[None, None, None, kv_state.index], True, 0)
        p.pipe_k.consumer_release(kv_state)
        self._release_q_after_last_qk(n_block, p.pipe_q, q_state)
        self._mask(p.S_rc, p.tScS, m_block, n_block, seqlen_k, True)
        self._softmax(p.S_rc, p.row_max, p.row_sum, p.row_scale, p.scale_log2, True)
        _to_bf16(_acc_as_operand_a(p.acc_S), p.tOrP)
        if const_expr(not self.intra_wg_overlap):
            self._pv_no_overlap(p, kv_state, True)
            kv_state.advance()

        # ---- remaining tiles: diagonal ones masked, the rest not ----------------------
        n_masked = 0
        if const_expr(self.is_causal):
            n_block_min_causal = (m_block * self.block_m) // self.block_n
            n_masked = cutlass.max(n_block_max - 1 - n_block_min_causal, 0)
        for i in cutlass.range(n_masked, unroll=1):
            kv_state = self._step(p, n_block_max - 2 - i, True, kv_state, q_state, m_block, seqlen_k)
        for i in cutlass.range(n_block_max - 1 - n_masked, unroll=1):
            kv_state = self._step(
                p, n_block_max - 2 - n_masked - i, False, kv_state, q_state, m_block, seqlen_k)
        q_state.advance()
        if const_expr(self.sched_fa3 and not self.intra_wg_overlap):
            # ... and closes after its last PV GEMM
            self._sched_arrive(p.wg_idx)

        # ---- last PV GEMM (overlap mode keeps one in hand) ------------------------------
        if const_expr(self.intra_wg_overlap):
            self._wait(p.pipe_v, kv_state, p.wg_idx, False)
            _wgmma(p.tiled_mma_pv, p.acc_O, p.tOrP, p.tOrVt[None, None, None, kv_state.index], False, 0)
            p.pipe_v.consumer_release(kv_state)
            kv_state.advance()

        self._epilogue(p, m_block, head_idx, batch_idx)
        return kv_state, q_state

    @cute.jit
    def _epilogue(self, p: _MmaParams, m_block, head_idx, batch_idx):
        """Normalise O, stage it in smem with stmatrix, store it with one TMA copy."""
        O_rc, row_sum, tidx, sO = p.O_rc, p.row_sum, p.tidx, p.sO
        for r in cutlass.range_constexpr(cute.size(O_rc, mode=[0])):
            total = _quad_sum(row_sum[r])
            bad = total == 0.0 or total != total
            inv = cute.arch.rcp_approx(total if not bad else 1.0)
            O_rc[r, None].store(O_rc[r, None].load() * inv)
        rO = cute.make_fragment_like(p.acc_O, self.dtype)
        rO.store(p.acc_O.load().to(self.dtype))
        if const_expr(self.persistent):
            # the previous work item's store must be done reading sO
            if tidx < 32:
                cute.arch.cp_async_bulk_wait_group(0, read=True)
        # (aliased sO) every warpgroup must be done reading sQ before anyone overwrites it
        cute.arch.barrier(barrier_id=_BAR_EPILOGUE, number_of_threads=self.num_mma_threads)
        st_atom = cute.make_copy_atom(
            cute.nvgpu.warp.StMatrix8x8x16bOp(transpose=False, num_matrices=4), self.dtype
        )
        thr_st = cute.make_tiled_copy_C(st_atom, p.tiled_mma_pv).get_slice(tidx)
        cute.copy(st_atom, thr_st.retile(rO), thr_st.partition_D(sO))
        # make the generic-proxy smem writes visible to the TMA engine
        cute.arch.fence_view_async_shared()
        cute.arch.barrier(barrier_id=_BAR_EPILOGUE, number_of_threads=self.num_mma_threads)
        if tidx < 32:
            gO = cute.local_tile(
                p.mO[None, None, head_idx, batch_idx], (self.block_m, self.head_dim), (m_block, 0)
            )
            tOs, tOg = cpasync.tma_partition(
                p.tma_atom_O, 0, cute.make_layout(1),
                cute.group_modes(sO, 0, 2), cute.group_modes(gO, 0, 2),
            )
            cute.copy(p.tma_atom_O, tOs, tOg)
            cute.arch.cp_async_bulk_commit_group()
            if const_expr(not self.persistent):
                cute.arch.cp_async_bulk_wait_group(0, read=True)

    @cute.jit
    def _step(self, p: _MmaParams, n_block, masked: cutlass.Constexpr[bool], kv_state, q_state,
              m_block, seqlen_k):
        """One KV tile of the main loop; returns the advanced pipeline state."""
        if const_expr(self.intra_wg_overlap):
            v_state = kv_state.clone()
            kv_state.advance()
            self._wait(p.pipe_k, kv_state, p.wg_idx, True)
            self._sched_sync(p.wg_idx)
            _wgmma(p.tiled_mma_qk, p.acc_S, p.tSrQ0, p.tSrK[None, None, None, kv_state.index], True, -1)
            self._wait(p.pipe_v, v_state, p.wg_idx, True)
            _wgmma(p.tiled_mma_pv, p.acc_O, p.tOrP, p.tOrVt[None, None, None, v_state.index], False, -1)
            self._sched_arrive(p.wg_idx)
            warpgroup.wait_group(1)
            p.pipe_k.consumer_release(kv_state)
            self._release_q_after_last_qk(n_block, p.pipe_q, q_state)
            if const_expr(masked):
                self._mask(p.S_rc, p.tScS, m_block, n_block, seqlen_k, False)
            self._softmax(p.S_rc, p.row_max, p.row_sum, p.row_scale, p.scale_log2, False)
            warpgroup.wait_group(0)
            p.pipe_v.consumer_release(v_state)
            _to_bf16(_acc_as_operand_a(p.acc_S), p.tOrP)
            self._rescale(p.O_rc, p.row_scale)
        else:
            self._wait(p.pipe_k, kv_state, p.wg_idx, False)
            if const_expr(self.sched_fa3):
                # still this warpgroup's turn (opened before the previous PV GEMM): issue, pass it on
                _wgmma(p.tiled_mma_qk, p.acc_S, p.tSrQ0, p.tSrK[None, None, None, kv_state.index], True, -1)
                self._sched_arrive(p.wg_idx)
                warpgroup.wait_group(0)
            else:
                self._sched_sync(p.wg_idx)
                _wgmma(p.tiled_mma_qk, p.acc_S, p.tSrQ0, p.tSrK[None, None, None, kv_state.index], True, 0)
            p.pipe_k.consumer_release(kv_state)
            self._release_q_after_last_qk(n_block, p.pipe_q, q_state)
            if const_expr(masked):
                self._mask(p.S_rc, p.tScS, m_block, n_block, seqlen_k, False)
            self._softmax(p.S_rc, p.row_max, p.row_sum, p.row_scale, p.scale_log2, False)
            _to_bf16(_acc_as_operand_a(p.acc_S), p.tOrP)
            self._rescale(p.O_rc, p.row_scale)
            self._pv_no_overlap(p, kv_state, False)
            kv_state.advance()
        return kv_state

    @cute.jit
    def _pv_no_overlap(self, p: _MmaParams, kv_state, zero_init: cutlass.Constexpr[bool]):
        """O (+)= P V without intra-warpgroup overlap: ours ends the turn after this GEMM, FA3's
        opens one before it (and the next QK^T GEMM closes it)."""
        self._wait(p.pipe_v, kv_state, p.wg_idx, False)
        if const_expr(self.sched_fa3):
            self._sched_sync(p.wg_idx)
        _wgmma(p.tiled_mma_pv, p.acc_O, p.tOrP, p.tOrVt[None, None, None, kv_state.index], zero_init, 0)
        if const_expr(not self.sched_fa3):
            self._sched_arrive(p.wg_idx)
        p.pipe_v.consumer_release(kv_state)

    @cute.jit
    def _release_q_after_last_qk(self, n_block, pipe_q, q_state):
        # persistent loop: the producer may load the next work item's Q once the last QK^T
        # GEMM of this one (KV tile 0 comes last) has completed
        if const_expr(self.persistent):
            if n_block == 0:
                pipe_q.consumer_release(q_state)

    @cute.jit
    def _mask(self, S_rc, tScS, m_block, n_block, seqlen_k, check_seqlen: cutlass.Constexpr[bool]):
        """-inf out the columns past the key length and (causal) above the diagonal."""
        col0 = n_block * self.block_n
        for r in cutlass.range_constexpr(cute.size(S_rc, mode=[0])):
            limit = seqlen_k - col0 if const_expr(check_seqlen) else self.block_n
            if const_expr(self.is_causal):
                row = m_block * self.block_m + tScS[r, 0][0]
                limit = cutlass.min(limit, row + 1 - col0)
            for c in cutlass.range_constexpr(cute.size(S_rc, mode=[1])):
                if tScS[0, c][1] >= limit:
                    S_rc[r, c] = -Float32.inf

    @cute.jit
    def _softmax(self, S_rc, row_max, row_sum, row_scale, scale_log2, is_first: cutlass.Constexpr[bool]):
        """Online softmax on this thread's rows; leaves exp2 scores in S and the factor by which
        the running O must shrink in row_scale.  row_sum stays per-thread until the end."""
        for r in cutlass.range_constexpr(cute.size(S_rc, mode=[0])):
            m_local = _row_max(S_rc, r, -Float32.inf if const_expr(is_first) else row_max[r])
            m_new = _quad_max(m_local)
            m_prev = row_max[r]
            row_max[r] = m_new
            # a fully masked row keeps max -inf; use 0 so exp2 gives 0 instead of NaN
            m_safe = m_new if m_new != -Float32.inf else Float32(0.0)
            m_scaled = m_safe * scale_log2
            S_rc[r, None].store(
                cute.math.exp2(S_rc[r, None].load() * scale_log2 - m_scaled, fastmath=True)
            )
            if const_expr(is_first):
                row_scale[r] = Float32(1.0)
                row_sum[r] = _row_sum(S_rc, r, Float32(0.0))
            else:
                scale = cute.math.exp2(m_prev * scale_log2 - m_scaled, fastmath=True)
                row_scale[r] = scale
                row_sum[r] = _row_sum(S_rc, r, row_sum[r] * scale)

    @cute.jit
    def _rescale(self, O_rc, row_scale):
        for r in cutlass.range_constexpr(cute.size(O_rc, mode=[0])):
            O_rc[r, None].store(O_rc[r, None].load() * row_scale[r])

    @cute.jit
    def _wait(self, pipe, state, wg_idx, in_turn: cutlass.Constexpr[bool]):
        """A consumer's wait for a K or V stage. `_sched_fa3` (FlashAttention-3's pingpong,
        `hopper/mainloop_fwd_sm90_tma_gmma_ws.hpp`, Shah, Bikshandi, Zhang, Thakkar, Ramani, Dao;
        BSD-3-Clause; this is our own code following its design): one mbarrier try_wait first and
        the blocking wait only if that failed (its consumer_try_wait token), and for a GEMM issued
        inside a turn (`in_turn`) only the first consumer warpgroup waits: the others take their
        turn for the same stage after it, through the turn barrier, so the stage has landed."""
        if const_expr(self.sched_fa3):
            if const_expr(in_turn):
                if wg_idx == 0:
                    pipe.consumer_wait(state, pipe.consumer_try_wait(state))
            else:
                pipe.consumer_wait(state, pipe.consumer_try_wait(state))
        else:
            pipe.consumer_wait(state)

    @cute.jit
    def _sched_sync(self, wg_idx):
        if const_expr(self.pingpong):
            cute.arch.barrier(barrier_id=_BAR_SCHED_FIRST + wg_idx, number_of_threads=2 * 128)

    @cute.jit
    def _sched_arrive(self, wg_idx):
        if const_expr(self.pingpong):
            nxt = wg_idx + 1
            if nxt == self.num_mma_wg:
                nxt = 0
            cute.arch.barrier_arrive(barrier_id=_BAR_SCHED_FIRST + nxt, number_of_threads=2 * 128)


# --------------------------------------------------------------------------------------------
# host entry: compile cache and launch
# --------------------------------------------------------------------------------------------

_CACHE = {}
COMPILE_SECONDS = {}  # cache key -> seconds spent compiling (for reports)


_TVM_FFI = None


def _use_tvm_ffi():
    """Launch through TVM FFI (torch tensors passed directly, current torch stream) when the
    package is there; otherwise through DLPack-wrapped tensors and an explicit stream."""
    global _TVM_FFI
    if _TVM_FFI is None:
        try:
            import tvm_ffi  # noqa: F401

            _TVM_FFI = os.environ.get("FMHA_SM90_NO_TVM_FFI", "0") != "1"
        except ImportError:
            _TVM_FFI = False
    return _TVM_FFI


_NUM_SMS = {}


def _num_sms(device):
    """Persistent grid size: one CTA per SM (the kernel's smem allows no second)."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _NUM_SMS:
        _NUM_SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _NUM_SMS[idx]


_COUNTERS = {}  # (device, stream handle) -> int32[2]: the eager launches' scheduler counters
_DIRTY = set()  # keys of counters a failed launch call may have left non-zero


def _scheduler_counter(device, dynamic):
    """The dynamic scheduler's two int32 counters for a launch on torch's current stream, zero
    when the kernel starts (it leaves them zero when it ends: its last CTA resets them).

    * Eager launches share one counter per (device, stream): launches in one stream run one
      after another, and another stream gets its own, so kernels running at once never share
      one. It is zeroed once at creation, and again before the next launch if a launch call
      raised (an aborted launch: whether the kernel ran is then unknown to us).
    * Under CUDA graph capture every captured launch gets a counter of its own, allocated in
      the graph's memory pool and zeroed by a fill node captured just before the kernel, so
      each replay starts from zero whatever an earlier replay left, and two graphs replayed at
      once on two streams never share a counter. Nothing made during a capture is cached.
    Launches that do not use the dynamic scheduler get a counter they never touch.
    Returns (counter, key); key is None for a captured launch."""
    if torch.cuda.is_current_stream_capturing():
        counter = torch.empty(2, dtype=torch.int32, device=device)
        if dynamic:
            counter.zero_()
        return counter, None
    key = (device, torch.cuda.current_stream(device).cuda_stream)
    counter = _COUNTERS.get(key)
    if counter is None:
        counter = _COUNTERS[key] = torch.zeros(2, dtype=torch.int32, device=device)
    elif key in _DIRTY:
        counter.zero_()
    _DIRTY.discard(key)
    return counter, key


def sched_group(knobs, seqlen_k, head_dim, qhead_per_kvhead, num_bh, elem_bytes=2):
    """Query heads per group of the dynamic causal order: as many as keep the K/V they read
    within `l2_group_mb` (heads sharing a KV head count once), at least one."""
    kv_bytes = 2 * seqlen_k * head_dim * elem_bytes  # K and V of one KV head
    kv_heads = max(1, (knobs["l2_group_mb"] << 20) // kv_bytes)
    return max(1, min(num_bh, kv_heads * qhead_per_kvhead))


def _fake_bshd(dtype, head_dim):
    stride = (cute.sym_int64(divisibility=8), cute.sym_int64(divisibility=8), head_dim, 1)
    shape = (cute.sym_int(), cute.sym_int(), cute.sym_int(), head_dim)
    return cute.runtime.make_fake_tensor(dtype, shape, stride=stride, assumed_align=16)


def compile_kernel(knobs, head_dim, causal, qhead_per_kvhead, dtype=cutlass.BFloat16, tvm_ffi=None):
    """Compile one configuration for fake (shape-dynamic) tensors; no GPU needed.
    Returns (compiled function, seconds spent in cute.compile)."""
    check_knobs(knobs, head_dim)
    block_m, block_n = tile_config(knobs, head_dim)
    kern = Sm90FlashAttentionForward(
        head_dim, qhead_per_kvhead, causal, block_m=block_m, block_n=block_n,
        num_stages=knobs["num_stages"], intra_wg_overlap=knobs["intra_wg_overlap"],
        pingpong=pingpong_for(knobs, head_dim), persistent=knobs["persistent"],
        persistent_causal=knobs["persistent_causal"], dtype=dtype,
    )
    if tvm_ffi is None:
        tvm_ffi = _use_tvm_ffi()
    fq, fk, fv, fo = (_fake_bshd(dtype, head_dim) for _ in range(4))
    counter = cute.runtime.make_fake_tensor(cutlass.Int32, (2,), stride=(1,), assumed_align=8)
    stream = cute.runtime.make_fake_stream(use_tvm_ffi_env_stream=tvm_ffi)
    t0 = time.perf_counter()
    compiled = cute.compile(
        kern, fq, fk, fv, fo, Float32(1.0), Int32(132), counter, Int32(1), stream,
        options="--gpu-arch sm_90a" + (" --enable-tvm-ffi" if tvm_ffi else ""),
    )
    return compiled, time.perf_counter() - t0


def _key(knobs, dtype, head_dim, causal, ratio):
    block_m, block_n = tile_config(knobs, head_dim)
    return (block_m, block_n, knobs["num_stages"], knobs["intra_wg_overlap"], pingpong_for(knobs, head_dim),
            knobs["persistent"], knobs["persistent_causal"], str(dtype), head_dim, bool(causal), ratio)


def attention(q, k, v, causal=False, softmax_scale=None, out=None, knobs=None):
    """softmax(q k^T * scale) v for (batch, seqlen, heads, head_dim) bf16 CUDA tensors."""
    knobs = dict(KNOBS if knobs is None else knobs)
    if not (q.is_cuda and k.is_cuda and v.is_cuda):
        raise ValueError("q, k, v must be CUDA tensors")
    if q.dtype != torch.bfloat16 or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"bf16 q/k/v required, got {q.dtype}/{k.dtype}/{v.dtype}")
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        raise ValueError(f"expected (b, s, h, d) tensors, got {tuple(q.shape)} {tuple(k.shape)} {tuple(v.shape)}")
    b, sq, hq, d = q.shape
    bk, sk, hk, dk = k.shape
    if bk != b or dk != d:
        raise ValueError("q and k/v must share batch and head_dim")
    if hk == 0 or hq % hk != 0:
        if hq == 0 and hk == 0:
            return _empty_result(q, out)
        raise ValueError(f"q heads {hq} must be a multiple of kv heads {hk}")
    if sq != sk:
        raise ValueError("seqlen_q != seqlen_k is not supported")
    check_knobs(knobs, d)
    if q.numel() == 0:  # batch 0, seqlen 0 or no heads: nothing to compute, nothing to launch
        return _empty_result(q, out)
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(d)
    # TMA wants 16-byte aligned base addresses and row strides (head_dim 64/128 keeps the latter)
    q, k, v = (t if t.is_contiguous() and t.data_ptr() % 16 == 0 else t.contiguous().clone()
               for t in (q, k, v))
    if out is None:
        out = torch.empty_like(q)
    else:
        _check_out(q, out)
    ratio = hq // hk
    knobs = effective_knobs(knobs, d, sq, causal)
    key = _key(knobs, cutlass.BFloat16, d, causal, ratio)
    if key not in _CACHE:
        compiled, secs = compile_kernel(knobs, d, causal, ratio)
        _CACHE[key] = compiled
        COMPILE_SECONDS[key] = secs
    scale_log2 = Float32(softmax_scale * _LOG2_E)
    max_ctas = Int32(_num_sms(q.device))
    block_m, block_n = tile_config(knobs, d)
    dynamic = uses_dynamic_scheduler(causal, knobs["persistent_causal"], block_m, block_n, d,
                                     knobs["num_stages"])
    counter, counter_key = _scheduler_counter(q.device, dynamic)
    group = Int32(sched_group(knobs, sk, d, ratio, b * hq))
    try:
        if _use_tvm_ffi():
            _CACHE[key](q, k, v, out, scale_log2, max_ctas, counter, group)
        else:
            from cutlass.cute.runtime import from_dlpack
            import cuda.bindings.driver as cuda

            args = [from_dlpack(t.detach(), assumed_align=16).mark_layout_dynamic(leading_dim=3)
                    for t in (q, k, v, out)]
            stream = cuda.CUstream(torch.cuda.current_stream().cuda_stream)
            _CACHE[key](*args, scale_log2, max_ctas, from_dlpack(counter, assumed_align=8), group, stream)
    except BaseException:
        if dynamic and counter_key is not None:
            _DIRTY.add(counter_key)  # the next launch on this stream zeroes it first
        raise
    return out


def _check_out(q, out):
    if (out.shape != q.shape or out.dtype != q.dtype or not out.is_contiguous()
            or out.data_ptr() % 16 != 0 or out.device != q.device):
        raise ValueError("out must be a contiguous, 16-byte aligned bf16 tensor shaped like q")


def _empty_result(q, out):
    """The (empty) output of a problem with no rows to compute: batch 0, seqlen 0 or no heads."""
    if out is None:
        return torch.empty_like(q)
    if out.shape != q.shape or out.dtype != q.dtype or out.device != q.device:
        raise ValueError("out must be a bf16 tensor shaped like q")
    return out
