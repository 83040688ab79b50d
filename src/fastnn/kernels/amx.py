"""bfloat16 and uint8 x int8 matrix products in two kernel families with
one data layout: Intel AMX tiles (Sapphire Rapids and later) and AVX-512
(``vdpbf16ps`` with AVX512-BF16: AMD Zen 4 and later, Intel Cooper Lake;
``vpdpbusd`` with AVX512-VNNI: also Intel Cascade Lake and Ice Lake).

numba cannot express these instructions, so each kernel is written once in
LLVM IR and compiled with llvmlite, the LLVM binding numba itself runs on (no
new dependency). It is called through ctypes, which releases the GIL: one
call per (query block, index tile), several threads at once.

The packed right operand (``pack_b``: pairs of bfloat16 values per column in
groups of 16 columns; ``pack_b_s8``: quads of int8) is what an AMX tile row
holds and also what one 512-bit register holds for 16 columns, so the AVX-512
kernels read the same arrays: a K step broadcasts one pair (quad) of a row of
``A`` to the 16 lanes and multiplies it with 64 bytes of ``B``. Both
families add exact products in float32 (bfloat16) or int32 (int8), so the
error bound below holds for either; they differ only in the order of the
float32 additions, which no answer depends on.

``C[i, j] = sum_t A[i, t] * B[t, j]`` with ``A`` and ``B`` rounded to
bfloat16 by ``to_bf16`` and float32 accumulation. A bfloat16 product is exact
in float32, so the only rounding is the accumulation: for any summation
order ``|C - exact| <= (K + 1) u32 sum_t |A[i, t] B[t, j]|`` (``u32`` =
2**-24), plus 2**-126 per term for the flushing of subnormal values
(``to_bf16`` already flushes its subnormal outputs to zero, so the inputs
the hardware sees are the ones the caller bounds).

Families (``kernel_family()``, chosen once per process from the CPU flags):
``'amx'`` where the CPU reports AMX-BF16, Linux grants the process the tile
data state (``arch_prctl(ARCH_REQ_XCOMP_PERM)``) and a self-test product
equals numpy's; else ``'avx512'`` where it reports AVX512-BF16 (and, for the
int8 product, AVX512-VNNI) and the self-test passes; else none, and callers
use their portable float32 BLAS / numba path. ``FASTNN_AMX=0`` turns AMX
off, ``FASTNN_AVX512=0`` the AVX-512 family; every public function also takes
``family=`` to force one (``ValueError`` where the CPU cannot run it).
"""

import ctypes
import os
import threading

import numpy as np

from . import cpu

__all__ = ["FAMILIES", "kernel_family", "available", "bf16_bits", "to_bf16", "from_bf16", "pack_b", "gemm",
           "gemm_filter", "FilterPlan", "available_int8", "pack_b_s8", "gemm_u8s8", "KB",
           "aligned"]

KB = 32          # bfloat16 values per tile row (64 bytes): K is padded to this
LINE = 64        # cache line: tile rows should start on one
_lock = threading.Lock()
_state = {}      # ("usable", family, op): bool, "tile_state", "engine", "funcs"

_DECLS = """
declare x86_amx @llvm.x86.tileloadd64.internal(i16, i16, ptr, i64)
declare x86_amx @llvm.x86.tdpbf16ps.internal(i16, i16, i16, x86_amx, x86_amx, x86_amx)
declare x86_amx @llvm.x86.tdpbusd.internal(i16, i16, i16, x86_amx, x86_amx, x86_amx)
declare void @llvm.x86.tilestored64.internal(i16, i16, ptr, i64, x86_amx)
declare x86_amx @llvm.x86.tilezero.internal(i16, i16)
declare void @llvm.masked.compressstore.v16f32(<16 x float>, ptr, <16 x i1>)
declare void @llvm.masked.compressstore.v16i32(<16 x i32>, ptr, <16 x i1>)
declare i16 @llvm.ctpop.i16(i16)
"""


def _k_loop_ir(kb, dp):
    """The unrolled K loop of a 2 x 2 block of 16 x 16 tiles (``dp``: the
    tile product instruction), from zeroed accumulators ``%c.._0`` to
    ``%c.._<kb>``; rows of A at ``%pa0``/``%pa1`` (``%lda`` bytes apart),
    the two 16-column groups of packed B at ``%pb0``/``%pb1``."""
    out = ["".join(f"  %c{r}_0 = call x86_amx @llvm.x86.tilezero.internal(i16 16, i16 64)\n"
                   for r in ("00", "01", "10", "11"))]
    for t in range(kb):
        n = t + 1
        out.append(f"""
  %a0p_{t} = getelementptr i8, ptr %pa0, i64 {t * 64}
  %a1p_{t} = getelementptr i8, ptr %pa1, i64 {t * 64}
  %b0p_{t} = getelementptr i8, ptr %pb0, i64 {t * 1024}
  %b1p_{t} = getelementptr i8, ptr %pb1, i64 {t * 1024}
  %a0_{t} = call x86_amx @llvm.x86.tileloadd64.internal(i16 16, i16 64, ptr %a0p_{t}, i64 %lda)
  %a1_{t} = call x86_amx @llvm.x86.tileloadd64.internal(i16 16, i16 64, ptr %a1p_{t}, i64 %lda)
  %b0_{t} = call x86_amx @llvm.x86.tileloadd64.internal(i16 16, i16 64, ptr %b0p_{t}, i64 64)
  %b1_{t} = call x86_amx @llvm.x86.tileloadd64.internal(i16 16, i16 64, ptr %b1p_{t}, i64 64)
  %c00_{n} = call x86_amx @llvm.x86.{dp}.internal(i16 16, i16 64, i16 64, x86_amx %c00_{t}, x86_amx %a0_{t}, x86_amx %b0_{t})
  %c01_{n} = call x86_amx @llvm.x86.{dp}.internal(i16 16, i16 64, i16 64, x86_amx %c01_{t}, x86_amx %a0_{t}, x86_amx %b1_{t})
  %c10_{n} = call x86_amx @llvm.x86.{dp}.internal(i16 16, i16 64, i16 64, x86_amx %c10_{t}, x86_amx %a1_{t}, x86_amx %b0_{t})
  %c11_{n} = call x86_amx @llvm.x86.{dp}.internal(i16 16, i16 64, i16 64, x86_amx %c11_{t}, x86_amx %a1_{t}, x86_amx %b1_{t})
""")
    return "".join(out)


def _kernel_ir(kb, op="bf16"):
    """LLVM IR of ``gemm_<op>_<kb>(A, lda, B, C, ldc, mq, nj)``: ``mq`` rows
    of ``A`` (multiple of 32, ``lda`` bytes apart, ``kb`` blocks of 64
    bytes each: 32 bfloat16 or 64 uint8) times ``nj`` packed columns of
    ``B`` (multiple of 32, see ``pack_b``/``pack_b_s8``) into ``C``
    (``ldc`` bytes per row; float32 for ``op='bf16'``, int32 for
    ``op='u8s8'``: uint8 times int8, exact). 2 x 2 blocks of 16 x 16 tiles
    (four accumulators, two A and two B tiles: the eight tile registers);
    the K loop is unrolled, so no tile value crosses a loop edge."""
    blk = kb * 1024                     # bytes of one 16-column group of B
    dp = "tdpbf16ps" if op == "bf16" else "tdpbusd"
    out = [f"""
define void @gemm_{op}_{kb}(ptr %A, i64 %lda, ptr %B, ptr %C, i64 %ldc, i64 %mq, i64 %nj) #0 {{
entry:
  %ng = udiv i64 %nj, 16
  %empty = icmp ult i64 %mq, 32
  %empty2 = icmp ult i64 %nj, 32
  %none = or i1 %empty, %empty2
  br i1 %none, label %exit, label %iloop
iloop:
  %i = phi i64 [0, %entry], [%inext, %iend]
  %i16 = add i64 %i, 16
  %ia0 = mul i64 %i, %lda
  %ia1 = mul i64 %i16, %lda
  %pa0 = getelementptr i8, ptr %A, i64 %ia0
  %pa1 = getelementptr i8, ptr %A, i64 %ia1
  %ic0 = mul i64 %i, %ldc
  %ic1 = mul i64 %i16, %ldc
  %pc0 = getelementptr i8, ptr %C, i64 %ic0
  %pc1 = getelementptr i8, ptr %C, i64 %ic1
  br label %gloop
gloop:
  %g = phi i64 [0, %iloop], [%gnext, %gloop]
  %g1 = add i64 %g, 1
  %bo0 = mul i64 %g, {blk}
  %bo1 = mul i64 %g1, {blk}
  %pb0 = getelementptr i8, ptr %B, i64 %bo0
  %pb1 = getelementptr i8, ptr %B, i64 %bo1
  %co0 = mul i64 %g, 64
  %co1 = add i64 %co0, 64
  %pc00 = getelementptr i8, ptr %pc0, i64 %co0
  %pc01 = getelementptr i8, ptr %pc0, i64 %co1
  %pc10 = getelementptr i8, ptr %pc1, i64 %co0
  %pc11 = getelementptr i8, ptr %pc1, i64 %co1
"""]
    out.append(_k_loop_ir(kb, dp))
    out.append(f"""
  call void @llvm.x86.tilestored64.internal(i16 16, i16 64, ptr %pc00, i64 %ldc, x86_amx %c00_{kb})
  call void @llvm.x86.tilestored64.internal(i16 16, i16 64, ptr %pc01, i64 %ldc, x86_amx %c01_{kb})
  call void @llvm.x86.tilestored64.internal(i16 16, i16 64, ptr %pc10, i64 %ldc, x86_amx %c10_{kb})
  call void @llvm.x86.tilestored64.internal(i16 16, i16 64, ptr %pc11, i64 %ldc, x86_amx %c11_{kb})
  %gnext = add i64 %g, 2
  %gdone = icmp uge i64 %gnext, %ng
  br i1 %gdone, label %iend, label %gloop
iend:
  %inext = add i64 %i, 32
  %idone = icmp uge i64 %inext, %mq
  br i1 %idone, label %exit, label %iloop
exit:
  ret void
}}
""")
    return "".join(out)


def _filter_kernel_ir(kb):
    """LLVM IR of ``filter_bf16_<kb>(A, lda, B, mq, nj, T, OK, OJ, ldo, CNT)``:
    the product of ``gemm_bf16_<kb>`` without storing it. Each 2 x 2 block
    of tiles goes to a 4 KB scratch (in L1); per row ``r`` the values
    ``<= T[r]`` are appended (AVX-512 compress stores) to row ``r`` of
    ``OK`` (float32) and their columns to row ``r`` of ``OJ`` (int32), both
    ``ldo`` bytes per row, ``CNT[r]`` (int32) counting them. Loops: pairs of
    16-column groups outside (their B tiles stay in L1), rows inside, so
    each row's values arrive in column order. ``OK``/``OJ`` need room for
    ``nj`` values per row."""
    blk = kb * 1024
    out = [f"""
define void @filter_bf16_{kb}(ptr %A, i64 %lda, ptr %B, i64 %mq, i64 %nj, ptr %T, ptr %OK,
                              ptr %OJ, i64 %ldo, ptr %CNT) #0 {{
entry:
  %scr = alloca [1024 x float], align 64
  %s01 = getelementptr i8, ptr %scr, i64 64
  %s10 = getelementptr i8, ptr %scr, i64 2048
  %s11 = getelementptr i8, ptr %scr, i64 2112
  %ng = udiv i64 %nj, 16
  %empty = icmp ult i64 %mq, 32
  %empty2 = icmp ult i64 %nj, 32
  %none = or i1 %empty, %empty2
  br i1 %none, label %exit, label %gloop
gloop:
  %g = phi i64 [0, %entry], [%gnext, %gend]
  %g1 = add i64 %g, 1
  %bo0 = mul i64 %g, {blk}
  %bo1 = mul i64 %g1, {blk}
  %pb0 = getelementptr i8, ptr %B, i64 %bo0
  %pb1 = getelementptr i8, ptr %B, i64 %bo1
  br label %iloop
iloop:
  %i = phi i64 [0, %gloop], [%inext, %rdone]
  %i16 = add i64 %i, 16
  %ia0 = mul i64 %i, %lda
  %ia1 = mul i64 %i16, %lda
  %pa0 = getelementptr i8, ptr %A, i64 %ia0
  %pa1 = getelementptr i8, ptr %A, i64 %ia1
"""]
    out.append(_k_loop_ir(kb, "tdpbf16ps"))
    out.append(f"""
  call void @llvm.x86.tilestored64.internal(i16 16, i16 64, ptr %scr, i64 128, x86_amx %c00_{kb})
  call void @llvm.x86.tilestored64.internal(i16 16, i16 64, ptr %s01, i64 128, x86_amx %c01_{kb})
  call void @llvm.x86.tilestored64.internal(i16 16, i16 64, ptr %s10, i64 128, x86_amx %c10_{kb})
  call void @llvm.x86.tilestored64.internal(i16 16, i16 64, ptr %s11, i64 128, x86_amx %c11_{kb})
  br label %rloop
rloop:
  %r = phi i64 [0, %iloop], [%rnext, %h1done]
  %row = add i64 %i, %r
  %tp = getelementptr float, ptr %T, i64 %row
  %t = load float, ptr %tp
  %tv0 = insertelement <16 x float> poison, float %t, i64 0
  %tv = shufflevector <16 x float> %tv0, <16 x float> poison, <16 x i32> zeroinitializer
  %so = mul i64 %r, 128
  %sp0 = getelementptr i8, ptr %scr, i64 %so
  %sp1 = getelementptr i8, ptr %sp0, i64 64
  %v0 = load <16 x float>, ptr %sp0, align 64
  %v1 = load <16 x float>, ptr %sp1, align 64
  %m0 = fcmp ole <16 x float> %v0, %tv
  %m1 = fcmp ole <16 x float> %v1, %tv
  %b0 = bitcast <16 x i1> %m0 to i16
  %b1 = bitcast <16 x i1> %m1 to i16
  %bb = or i16 %b0, %b1
  %any = icmp ne i16 %bb, 0
  br i1 %any, label %emit, label %h1done
emit:
  %cp = getelementptr i32, ptr %CNT, i64 %row
  %ro = mul i64 %row, %ldo
  %kr = getelementptr i8, ptr %OK, i64 %ro
  %jr = getelementptr i8, ptr %OJ, i64 %ro
  %cnt0 = load i32, ptr %cp
  %c0 = sext i32 %cnt0 to i64
  %kp0 = getelementptr float, ptr %kr, i64 %c0
  %jp0 = getelementptr i32, ptr %jr, i64 %c0
  %gb0 = trunc i64 %g to i32
  %gc0 = shl i32 %gb0, 4
  %gv0i = insertelement <16 x i32> poison, i32 %gc0, i64 0
  %gv0 = shufflevector <16 x i32> %gv0i, <16 x i32> poison, <16 x i32> zeroinitializer
  %jv0 = add <16 x i32> %gv0, <i32 0, i32 1, i32 2, i32 3, i32 4, i32 5, i32 6, i32 7, i32 8, i32 9, i32 10, i32 11, i32 12, i32 13, i32 14, i32 15>
  call void @llvm.masked.compressstore.v16f32(<16 x float> %v0, ptr %kp0, <16 x i1> %m0)
  call void @llvm.masked.compressstore.v16i32(<16 x i32> %jv0, ptr %jp0, <16 x i1> %m0)
  %p0 = call i16 @llvm.ctpop.i16(i16 %b0)
  %p0w = zext i16 %p0 to i32
  %cnt1 = add i32 %cnt0, %p0w
  %c1 = sext i32 %cnt1 to i64
  %kp1 = getelementptr float, ptr %kr, i64 %c1
  %jp1 = getelementptr i32, ptr %jr, i64 %c1
  %jv1 = add <16 x i32> %jv0, <i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16>
  call void @llvm.masked.compressstore.v16f32(<16 x float> %v1, ptr %kp1, <16 x i1> %m1)
  call void @llvm.masked.compressstore.v16i32(<16 x i32> %jv1, ptr %jp1, <16 x i1> %m1)
  %p1 = call i16 @llvm.ctpop.i16(i16 %b1)
  %p1w = zext i16 %p1 to i32
  %cnt2 = add i32 %cnt1, %p1w
  store i32 %cnt2, ptr %cp
  br label %h1done
h1done:
  %rnext = add i64 %r, 1
  %rend = icmp uge i64 %rnext, 32
  br i1 %rend, label %rdone, label %rloop
rdone:
  %inext = add i64 %i, 32
  %idone = icmp uge i64 %inext, %mq
  br i1 %idone, label %gend, label %iloop
gend:
  %gnext = add i64 %g, 2
  %gdone = icmp uge i64 %gnext, %ng
  br i1 %gdone, label %exit, label %gloop
exit:
  ret void
}}
""")
    return "".join(out)


# rows of A per register block of the AVX-512 kernels: 8 rows x 32 columns
# are 16 zmm accumulators, plus 2 B registers and the broadcasts (of 32)
_ROWS = 8

_DECLS_AVX512 = """
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
declare <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32>, <16 x i32>, <16 x i32>)
declare void @llvm.masked.compressstore.v16f32(<16 x float>, ptr, <16 x i1>)
declare void @llvm.masked.compressstore.v16i32(<16 x i32>, ptr, <16 x i1>)
declare i16 @llvm.ctpop.i16(i16)
"""


def _avx512_k_loop_ir(n_steps, op, rows, head, label):
    """The K loop of a block as an LLVM loop (phi accumulators): an unrolled
    K loop lets LLVM hoist every B load and spill the accumulators. Enters
    from block ``head``; leaves in block ``{label}_end`` with the sums in
    ``%acc{r}_{h}_{label}``."""
    vt = "<16 x float>" if op == "bf16" else "<16 x i32>"
    out = []
    for r in range(rows):
        out.append(f"  %ro{r}_{label} = mul i64 %lda, {r}\n"
                   f"  %pa{r}_{label} = getelementptr i8, ptr %pa, i64 %ro{r}_{label}\n")
    out.append(f"  br label %{label}\n{label}:\n  %t_{label} = phi i64 [0, %{head}], [%tn_{label}, %{label}]\n")
    for r in range(rows):
        for h in (0, 1):
            out.append(f"  %x{r}_{h}_{label} = phi {vt} [zeroinitializer, %{head}], [%y{r}_{h}_{label}, %{label}]\n")
    out.append(f"""  %bo_{label} = shl i64 %t_{label}, 6
  %pq0_{label} = getelementptr i8, ptr %pb0, i64 %bo_{label}
  %pq1_{label} = getelementptr i8, ptr %pb1, i64 %bo_{label}
  %q0_{label} = load <16 x i32>, ptr %pq0_{label}, align 4
  %q1_{label} = load <16 x i32>, ptr %pq1_{label}, align 4
  %ao_{label} = shl i64 %t_{label}, 2
""")
    if op == "bf16":
        out.append(f"  %q0h_{label} = bitcast <16 x i32> %q0_{label} to <32 x bfloat>\n"
                   f"  %q1h_{label} = bitcast <16 x i32> %q1_{label} to <32 x bfloat>\n")
    for r in range(rows):
        out.append(f"""  %ap{r}_{label} = getelementptr i8, ptr %pa{r}_{label}, i64 %ao_{label}
  %as{r}_{label} = load i32, ptr %ap{r}_{label}, align 4
  %ai{r}_{label} = insertelement <16 x i32> poison, i32 %as{r}_{label}, i64 0
  %av{r}_{label} = shufflevector <16 x i32> %ai{r}_{label}, <16 x i32> poison, <16 x i32> zeroinitializer
""")
        if op == "bf16":
            out.append(f"""  %ah{r}_{label} = bitcast <16 x i32> %av{r}_{label} to <32 x bfloat>
  %y{r}_0_{label} = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %x{r}_0_{label}, <32 x bfloat> %ah{r}_{label}, <32 x bfloat> %q0h_{label})
  %y{r}_1_{label} = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %x{r}_1_{label}, <32 x bfloat> %ah{r}_{label}, <32 x bfloat> %q1h_{label})
""")
        else:
            out.append(f"""  %y{r}_0_{label} = call <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32> %x{r}_0_{label}, <16 x i32> %av{r}_{label}, <16 x i32> %q0_{label})
  %y{r}_1_{label} = call <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32> %x{r}_1_{label}, <16 x i32> %av{r}_{label}, <16 x i32> %q1_{label})
""")
    out.append(f"""  %tn_{label} = add i64 %t_{label}, 1
  %td_{label} = icmp uge i64 %tn_{label}, {n_steps}
  br i1 %td_{label}, label %{label}_end, label %{label}
{label}_end:
""")
    return "".join(out)


def _avx512_group_head(rows, blk):
    """The entry and the head of the loop over pairs of 16-column groups
    shared by the AVX-512 kernels (``%pb0``/``%pb1``: the pair's packed B;
    nothing to do for fewer than ``rows`` rows or 32 columns)."""
    return f"""entry:
  %ng = udiv i64 %nj, 16
  %empty = icmp ult i64 %mq, {rows}
  %empty2 = icmp ult i64 %nj, 32
  %none = or i1 %empty, %empty2
  br i1 %none, label %exit, label %gloop
gloop:
  %g = phi i64 [0, %entry], [%gnext, %gend]
  %g1 = add i64 %g, 1
  %bo0 = mul i64 %g, {blk}
  %bo1 = mul i64 %g1, {blk}
  %pb0 = getelementptr i8, ptr %B, i64 %bo0
  %pb1 = getelementptr i8, ptr %B, i64 %bo1
"""


def _avx512_kernel_ir(kb, op="bf16", rows=_ROWS):
    """LLVM IR of ``gemm_{op}_{kb}(A, lda, B, C, ldc, mq, nj)`` on AVX-512, the
    contract of the AMX kernel of that name (``_kernel_ir``): pairs of
    16-column groups outside (their 2 x 64 x kb x 16 bytes of B stay in L1),
    blocks of ``rows`` rows of A inside, ``rows`` x 32 accumulators in
    registers."""
    n_steps = kb * 16            # bf16: K = 32 kb values, pairs; u8s8: K = 64 kb, quads
    blk = kb * 1024
    vt = "<16 x float>" if op == "bf16" else "<16 x i32>"
    stores = "".join(f"""  %co{r} = mul i64 %ldc, {r}
  %pc{r} = getelementptr i8, ptr %pcb, i64 %co{r}
  %pc{r}b = getelementptr i8, ptr %pc{r}, i64 64
  store {vt} %y{r}_0_kl, ptr %pc{r}, align 4
  store {vt} %y{r}_1_kl, ptr %pc{r}b, align 4
""" for r in range(rows))
    return f"""
define void @gemm_{op}_{kb}(ptr %A, i64 %lda, ptr %B, ptr %C, i64 %ldc, i64 %mq, i64 %nj) #0 {{
{_avx512_group_head(rows, blk)}  %cg = mul i64 %g, 64
  br label %iloop
iloop:
  %i = phi i64 [0, %gloop], [%inext, %kl_end]
  %ia = mul i64 %i, %lda
  %pa = getelementptr i8, ptr %A, i64 %ia
  %ic = mul i64 %i, %ldc
  %pcr = getelementptr i8, ptr %C, i64 %ic
  %pcb = getelementptr i8, ptr %pcr, i64 %cg
{_avx512_k_loop_ir(n_steps, op, rows, "iloop", "kl")}{stores}  %inext = add i64 %i, {rows}
  %idone = icmp uge i64 %inext, %mq
  br i1 %idone, label %gend, label %iloop
gend:
  %gnext = add i64 %g, 2
  %gdone = icmp uge i64 %gnext, %ng
  br i1 %gdone, label %exit, label %gloop
exit:
  ret void
}}
"""


def _avx512_filter_ir(kb, rows=_ROWS):
    """LLVM IR of ``filter_bf16_{kb}(A, lda, B, mq, nj, T, OK, OJ, ldo, CNT)``
    on AVX-512, the contract of the AMX kernel of that name
    (``_filter_kernel_ir``): the accumulators are compared with each row's
    ``T`` in registers; values appended in column order per row."""
    n_steps = kb * 16
    blk = kb * 1024
    emit = []
    for r in range(rows):
        emit.append(f"""  br label %r{r}
r{r}:
  %row{r} = add i64 %i, {r}
  %tp{r} = getelementptr float, ptr %T, i64 %row{r}
  %t{r} = load float, ptr %tp{r}
  %tv0{r} = insertelement <16 x float> poison, float %t{r}, i64 0
  %tv{r} = shufflevector <16 x float> %tv0{r}, <16 x float> poison, <16 x i32> zeroinitializer
  %m0{r} = fcmp ole <16 x float> %y{r}_0_kl, %tv{r}
  %m1{r} = fcmp ole <16 x float> %y{r}_1_kl, %tv{r}
  %b0{r} = bitcast <16 x i1> %m0{r} to i16
  %b1{r} = bitcast <16 x i1> %m1{r} to i16
  %bb{r} = or i16 %b0{r}, %b1{r}
  %any{r} = icmp ne i16 %bb{r}, 0
  br i1 %any{r}, label %emit{r}, label %done{r}
emit{r}:
  %cp{r} = getelementptr i32, ptr %CNT, i64 %row{r}
  %ro{r}x = mul i64 %row{r}, %ldo
  %kr{r} = getelementptr i8, ptr %OK, i64 %ro{r}x
  %jr{r} = getelementptr i8, ptr %OJ, i64 %ro{r}x
  %cnt0{r} = load i32, ptr %cp{r}
  %c0{r} = sext i32 %cnt0{r} to i64
  %kp0{r} = getelementptr float, ptr %kr{r}, i64 %c0{r}
  %jp0{r} = getelementptr i32, ptr %jr{r}, i64 %c0{r}
  call void @llvm.masked.compressstore.v16f32(<16 x float> %y{r}_0_kl, ptr %kp0{r}, <16 x i1> %m0{r})
  call void @llvm.masked.compressstore.v16i32(<16 x i32> %jv0, ptr %jp0{r}, <16 x i1> %m0{r})
  %p0{r} = call i16 @llvm.ctpop.i16(i16 %b0{r})
  %p0w{r} = zext i16 %p0{r} to i32
  %cnt1{r} = add i32 %cnt0{r}, %p0w{r}
  %c1{r} = sext i32 %cnt1{r} to i64
  %kp1{r} = getelementptr float, ptr %kr{r}, i64 %c1{r}
  %jp1{r} = getelementptr i32, ptr %jr{r}, i64 %c1{r}
  call void @llvm.masked.compressstore.v16f32(<16 x float> %y{r}_1_kl, ptr %kp1{r}, <16 x i1> %m1{r})
  call void @llvm.masked.compressstore.v16i32(<16 x i32> %jv1, ptr %jp1{r}, <16 x i1> %m1{r})
  %p1{r} = call i16 @llvm.ctpop.i16(i16 %b1{r})
  %p1w{r} = zext i16 %p1{r} to i32
  %cnt2{r} = add i32 %cnt1{r}, %p1w{r}
  store i32 %cnt2{r}, ptr %cp{r}
  br label %done{r}
done{r}:
""")
    return f"""
define void @filter_bf16_{kb}(ptr %A, i64 %lda, ptr %B, i64 %mq, i64 %nj, ptr %T, ptr %OK,
                              ptr %OJ, i64 %ldo, ptr %CNT) #0 {{
{_avx512_group_head(rows, blk)}  %gb0 = trunc i64 %g to i32
  %gc0 = shl i32 %gb0, 4
  %gv0i = insertelement <16 x i32> poison, i32 %gc0, i64 0
  %gv0 = shufflevector <16 x i32> %gv0i, <16 x i32> poison, <16 x i32> zeroinitializer
  %jv0 = add <16 x i32> %gv0, <i32 0, i32 1, i32 2, i32 3, i32 4, i32 5, i32 6, i32 7, i32 8, i32 9, i32 10, i32 11, i32 12, i32 13, i32 14, i32 15>
  %jv1 = add <16 x i32> %jv0, <i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16, i32 16>
  br label %iloop
iloop:
  %i = phi i64 [0, %gloop], [%inext, %done{rows - 1}]
  %ia = mul i64 %i, %lda
  %pa = getelementptr i8, ptr %A, i64 %ia
{_avx512_k_loop_ir(n_steps, "bf16", rows, "iloop", "kl")}{"".join(emit)}  %inext = add i64 %i, {rows}
  %idone = icmp uge i64 %inext, %mq
  br i1 %idone, label %gend, label %iloop
gend:
  %gnext = add i64 %g, 2
  %gdone = icmp uge i64 %gnext, %ng
  br i1 %gdone, label %exit, label %gloop
exit:
  ret void
}}
"""


_P, _I = ctypes.c_void_p, ctypes.c_int64
_PROTO = ctypes.CFUNCTYPE(None, _P, _I, _P, _P, _I, _I, _I)
_PROTO_FILTER = ctypes.CFUNCTYPE(None, _P, _I, _P, _I, _I, _P, _P, _P, _I, _P)


FAMILIES = ("amx", "avx512")      # in order of preference
_FEATURES = {"amx": "+amx-tile,+amx-bf16,+amx-int8,+avx512f,+avx512vl,+avx512bw",
             "avx512": "+avx512f,+avx512vl,+avx512bw,+avx512bf16,+avx512vnni"}


def _request_tile_state():
    """Ask Linux for the AMX tile data state (XFEATURE_XTILEDATA = 18);
    without it the first tile instruction would kill the process."""
    if "tile_state" not in _state:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            # SYS_arch_prctl = 158 on x86-64, ARCH_REQ_XCOMP_PERM = 0x1023
            _state["tile_state"] = libc.syscall(158, 0x1023, 18) == 0
        except (OSError, AttributeError):
            _state["tile_state"] = False
    return _state["tile_state"]


def _supported(fam, op):
    """Whether the CPU, the OS and the ``FASTNN_*`` switches allow ``fam``'s
    ``op`` product (no self-test)."""
    flags = cpu.linux_flags()
    if os.name != "posix":
        return False
    if fam == "amx":
        need = {"amx_tile", "amx_bf16", "avx512f", "avx512vl", "avx512bw"}
        if op == "u8s8":
            need |= {"amx_int8"}
        return cpu.switch_on("FASTNN_AMX") and need <= flags and _request_tile_state()
    if fam == "avx512":
        need = {"avx512f", "avx512vl", "avx512bw",
                "avx512_bf16" if op == "bf16" else "avx512_vnni"}
        return cpu.switch_on("FASTNN_AVX512") and need <= flags
    return False


def _usable(fam, op):
    """``_supported`` and a self-test product equal to numpy's (once per
    process and family)."""
    key = ("usable", fam, op)
    ok = _state.get(key)
    if ok is None:
        ok = _supported(fam, op)
        if ok:
            try:
                ok = _self_test(fam) if op == "bf16" else _self_test_int8(fam)
            except Exception:       # pragma: no cover - any failure: not usable
                ok = False
        _state[key] = ok
    return ok


def kernel_family(op="bf16"):
    """The kernel family this process uses for ``op`` (``'bf16'`` or
    ``'u8s8'``): ``'amx'``, ``'avx512'`` or None (no tile kernels here)."""
    for fam in FAMILIES:
        if _usable(fam, op):
            return fam
    return None


def _resolve(fam, op):
    """``fam`` checked (None: the automatic choice, which must exist)."""
    if fam is None:
        fam = kernel_family(op)
        if fam is None:
            raise RuntimeError(f"no {op} tile kernels on this CPU (see available())")
        return fam
    if fam not in FAMILIES:
        raise ValueError(f"kernel family must be one of {FAMILIES} or None, got {fam!r}")
    if not _usable(fam, op):
        raise ValueError(f"the {fam!r} {op} kernels cannot run here (CPU flags, the OS, or "
                         f"FASTNN_AMX=0 / FASTNN_AVX512=0)")
    return fam


def _compile(fam, op, kb):
    import llvmlite.binding as ll

    eng = _state.get("engine")
    if fam == "amx":
        ir = _DECLS + (_kernel_ir(kb) + _filter_kernel_ir(kb) if op == "bf16"
                       else _kernel_ir(kb, "u8s8"))
    else:
        ir = _DECLS_AVX512 + (_avx512_kernel_ir(kb) + _avx512_filter_ir(kb) if op == "bf16"
                              else _avx512_kernel_ir(kb, "u8s8"))
    # (each family's functions get their own names: one engine holds both)
    ir = ir.replace(f"@gemm_{op}_{kb}(", f"@{fam}_gemm_{op}_{kb}(").replace(
        f"@filter_bf16_{kb}(", f"@{fam}_filter_bf16_{kb}(")
    mod = ll.parse_assembly(ir + f"""
attributes #0 = {{ "target-features"="{_FEATURES[fam]}" }}
""")
    mod.verify()
    if eng is None:
        ll.initialize_native_target()
        ll.initialize_native_asmprinter()
        tm = ll.Target.from_default_triple().create_target_machine(
            cpu=ll.get_host_cpu_name(), features=ll.get_host_cpu_features().flatten(),
            opt=3, codemodel="jitdefault")
        eng = ll.create_mcjit_compiler(mod, tm)
        _state["engine"] = eng
    else:
        eng.add_module(mod)
    eng.finalize_object()
    _state.setdefault("modules", []).append(mod)
    if op == "bf16":
        return (_PROTO(eng.get_function_address(f"{fam}_gemm_bf16_{kb}")),
                _PROTO_FILTER(eng.get_function_address(f"{fam}_filter_bf16_{kb}")))
    return _PROTO(eng.get_function_address(f"{fam}_gemm_u8s8_{kb}"))


def _function(kb, op, fam):
    with _lock:
        funcs = _state.setdefault("funcs", {})
        if (fam, op, kb) not in funcs:
            funcs[fam, op, kb] = _compile(fam, op, kb)
        return funcs[fam, op, kb]


def available(family=None):
    """Whether bfloat16 tile products can run here: in ``family`` (``'amx'``,
    ``'avx512'``), or in either (None). Checked once per process: CPU
    flags, the switches, OS permission, compilation and a self-test."""
    if family is None:
        return kernel_family("bf16") is not None
    return family in FAMILIES and _usable(family, "bf16")


def _self_test(fam):
    rng = np.random.default_rng(0)
    A = to_bf16(rng.standard_normal((64, 40)).astype(np.float32))
    B = to_bf16(rng.standard_normal((96, 40)).astype(np.float32))
    C = np.zeros((64, 96), np.float32)
    _gemm(_function(A.shape[1] // KB, "bf16", fam)[0], A, pack_b(B), C, 96, 0)
    ref = from_bf16(A).astype(np.float64) @ from_bf16(B).astype(np.float64).T
    bound = (A.shape[1] + 2) * 2.0 ** -24 * (np.abs(from_bf16(A)).astype(np.float64)
                                            @ np.abs(from_bf16(B)).astype(np.float64).T)
    return bool(np.all(np.abs(C - ref) <= bound))


def aligned(shape, dtype, zero=False):
    """An empty (or zeroed) C-contiguous array whose data starts on a
    64-byte cache line.

    A tile row of 64 bytes that does not start on a line touches two, and
    numpy's large allocations start 16 bytes past a page: the filtered
    product (``gemm_filter``, K = 128) then runs at ~330 GMAC/s on this
    Sapphire Rapids VM, against ~590 with both operands aligned. Every
    operand and result of the tile kernels should come from here."""
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(v) for v in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = (np.zeros if zero else np.empty)(nbytes + LINE, np.uint8)
    off = (-buf.ctypes.data) % LINE
    return buf[off:off + nbytes].view(dtype).reshape(shape)


def bf16_bits(a):
    """``a`` rounded to bfloat16 (nearest, ties to even; subnormal results
    flushed to zero, as the tiles read them) as uint16 bit patterns.
    Values must be finite and below float32's largest bfloat16."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    r = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    r[(r & 0x7F80) == 0] = 0
    return r


def to_bf16(a, k=None):
    """``bf16_bits`` of the 2-D ``a``, each row padded with zeros to ``k``
    values (default: the next multiple of ``KB``)."""
    a = np.asarray(a, np.float32)
    n, d = a.shape
    if k is None:
        k = -(-d // KB) * KB
    if k % KB or k < d:
        raise ValueError(f"k must be a multiple of {KB} and >= {d}, got {k}")
    out = aligned((n, k), np.uint16, zero=True)
    out[:, :d] = bf16_bits(a)
    return out


def from_bf16(h):
    """float32 values of bfloat16 bit patterns."""
    return (np.asarray(h, np.uint16).astype(np.uint32) << 16).view(np.float32)


def pack_b(Bt):
    """The right operand from its rows ``Bt`` (``n x K`` bfloat16 bits, one
    row per output column): zero-padded to a multiple of 32 columns and laid
    out as AMX wants it, pairs of K values interleaved per column in groups
    of 16 columns: ``(n_pad / 16, K / 2, 16, 2)``."""
    Bt = np.asarray(Bt, np.uint16)
    n, k = Bt.shape
    if k % KB:
        raise ValueError(f"rows must hold a multiple of {KB} values, got {k}")
    n_pad = -(-n // 32) * 32
    P = np.zeros((n_pad, k), np.uint16)
    P[:n] = Bt
    out = aligned((n_pad // 16, k // 2, 16, 2), np.uint16)
    out[...] = P.reshape(n_pad // 16, 16, k // 2, 2).transpose(0, 2, 1, 3)
    return out


def gemm(A, Bp, C, nj, j0=0, family=None):
    """``C[:, :nj] = A @ B[:, j0:j0 + nj]`` on AMX tiles.

    ``A``: ``(mq, K)`` uint16 (bfloat16 bits), C-contiguous, ``mq`` a
    multiple of 32; ``Bp``: ``pack_b`` output; ``j0``, ``nj``: multiples of
    32 within the packed columns; ``C``: ``(mq, >= nj)`` float32,
    C-contiguous. Everything is checked before the call (a wrong size would
    be a wild memory access). ``family``: see ``available``."""
    mq, k = A.shape
    if not (A.dtype == np.uint16 and A.flags.c_contiguous and Bp.dtype == np.uint16
            and Bp.flags.c_contiguous and C.dtype == np.float32 and C.flags.c_contiguous
            and C.flags.writeable):
        raise TypeError("gemm: A, Bp uint16 and C float32, all C-contiguous")
    if (k % KB or mq % 32 or nj % 32 or j0 % 32 or nj < 0 or j0 < 0
            or Bp.ndim != 4 or Bp.shape[1:] != (k // 2, 16, 2)
            or j0 + nj > Bp.shape[0] * 16 or C.shape[0] != mq or C.shape[1] < nj):
        raise ValueError(f"gemm: shapes A {A.shape}, Bp {Bp.shape}, C {C.shape}, "
                         f"j0 {j0}, nj {nj} do not fit")
    if mq == 0 or nj == 0:
        return C
    return _gemm(_function(k // KB, "bf16", _resolve(family, "bf16"))[0], A, Bp, C, nj, j0)


def _gemm(f, A, Bp, C, nj, j0):
    k = A.shape[1]
    f(A.ctypes.data, k * 2, Bp.ctypes.data + j0 * k * 2, C.ctypes.data,
      C.shape[1] * 4, A.shape[0], nj)
    return C


def gemm_filter(A, Bp, nj, j0, T, OK, OJ, CNT, family=None):
    """``gemm`` fused with a filter: per row ``r`` only the values
    ``<= T[r]`` are kept, appended in column order to ``OK[r]`` (float32)
    with their columns, counted from ``j0``, in ``OJ[r]`` (int32);
    ``CNT[r]`` counts them. The product never leaves L1: no ``mq x nj``
    matrix is written or read back. ``T``: float32 ``(mq,)``; ``OK``
    float32 and ``OJ`` int32, ``(mq, w)`` with ``w >= nj``; ``CNT``: int32
    ``(mq,)``; all C-contiguous (checked)."""
    mq = A.shape[0]
    if T.ndim != 1 or T.shape[0] != mq or CNT.shape != T.shape:
        raise ValueError(f"gemm_filter: shapes A {A.shape}, T {T.shape}, CNT {CNT.shape} "
                         f"do not fit")
    FilterPlan(A, Bp, T, OK, OJ, CNT, family)(0, mq, j0, nj)


class FilterPlan:
    """``gemm_filter`` for many calls on the same arrays: their types,
    layouts and shapes are checked once, each call only its row and column
    ranges (the Python checks cost ~12 us a call otherwise, at ~600 calls
    per CIFAR-10 search).

    ``plan(q0, mq, j0, nj)`` filters rows ``q0 .. q0 + mq`` of ``A`` against
    ``T[:mq]`` into ``OK[:mq]``/``OJ[:mq]``/``CNT[:mq]``: ``mq`` and ``nj``
    multiples of 32, ``mq`` at most ``len(T)``, ``nj`` at most ``OK``'s
    width. The plan holds the arrays (their memory stays valid)."""

    def __init__(self, A, Bp, T, OK, OJ, CNT, family=None):
        arrs = (A, Bp, T, OK, OJ, CNT)
        if not (all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in arrs)
                and A.dtype == np.uint16 and Bp.dtype == np.uint16 and T.dtype == np.float32
                and OK.dtype == np.float32 and OJ.dtype == np.int32
                and CNT.dtype == np.int32 and OK.flags.writeable and OJ.flags.writeable
                and CNT.flags.writeable):
            raise TypeError("gemm_filter: A, Bp uint16; T, OK float32; OJ, CNT int32; "
                            "all C-contiguous")
        k = A.shape[1] if A.ndim == 2 else -1
        if (A.ndim != 2 or k % KB or k == 0 or Bp.ndim != 4 or Bp.shape[1:] != (k // 2, 16, 2)
                or T.ndim != 1 or CNT.shape != T.shape or OK.ndim != 2
                or OK.shape[0] != T.shape[0] or OJ.shape != OK.shape):
            raise ValueError(f"gemm_filter: shapes A {A.shape}, Bp {Bp.shape}, T {T.shape}, "
                             f"OK {OK.shape}, OJ {OJ.shape}, CNT {CNT.shape} do not fit")
        self._arrays = arrs
        self.family = _resolve(family, "bf16")
        self._f = _function(k // KB, "bf16", self.family)[1]
        self._k = k
        self._rows, self._cols = A.shape[0], Bp.shape[0] * 16
        self._width = OK.shape[1]
        self._ptr = tuple(a.ctypes.data for a in arrs)

    def __call__(self, q0, mq, j0, nj):
        if not (q0 >= 0 and mq >= 0 and mq % 32 == 0 and q0 + mq <= self._rows
                and mq <= self._arrays[2].shape[0] and nj >= 0 and nj % 32 == 0
                and j0 >= 0 and j0 % 32 == 0 and j0 + nj <= self._cols and nj <= self._width):
            raise ValueError(f"gemm_filter: rows {q0} + {mq} of {self._rows}, columns "
                             f"{j0} + {nj} of {self._cols} (output width {self._width}) "
                             f"do not fit")
        pa, pb, pt, pok, poj, pcnt = self._ptr
        ctypes.memset(pcnt, 0, 4 * mq)
        if mq == 0 or nj == 0:
            return
        k = self._k
        self._f(pa + q0 * k * 2, k * 2, pb + j0 * k * 2, mq, nj, pt, pok, poj,
                self._width * 4, pcnt)


def available_int8(family=None):
    """Whether the exact uint8 x int8 product (``gemm_u8s8``) runs here: in
    ``family``, or in either (None); with its own self-test."""
    if family is None:
        return kernel_family("u8s8") is not None
    return family in FAMILIES and _usable(family, "u8s8")


def _self_test_int8(fam):
    rng = np.random.default_rng(0)
    A = rng.integers(0, 256, (32, 200), dtype=np.uint8)
    B = rng.integers(-128, 128, (40, 200), dtype=np.int8)
    Ap = np.zeros((32, 256), np.uint8)
    Ap[:, :200] = A
    C = np.zeros((32, 64), np.int32)
    _gemm_u8s8(_function(256 // 64, "u8s8", fam), Ap, pack_b_s8(B, 256), C, 64)
    return bool(np.array_equal(C[:, :40], A.astype(np.int64) @ B.T.astype(np.int64)))


def pack_b_s8(Bt, k=None):
    """The int8 right operand from its rows ``Bt`` (``n x d`` int8, one row
    per output column), zero-padded to ``k`` values per row (a multiple of
    64; default the next one) and to a multiple of 32 columns, in the AMX
    layout: quads of K values interleaved per column, groups of 16 columns:
    ``(n_pad / 16, k / 4, 16, 4)``."""
    Bt = np.asarray(Bt, np.int8)
    n, d = Bt.shape
    if k is None:
        k = -(-d // 64) * 64
    if k % 64 or k < d:
        raise ValueError(f"k must be a multiple of 64 and >= {d}, got {k}")
    n_pad = -(-n // 32) * 32
    P = np.zeros((n_pad, k), np.int8)
    P[:n, :d] = Bt
    out = aligned((n_pad // 16, k // 4, 16, 4), np.int8)
    out[...] = P.reshape(n_pad // 16, 16, k // 4, 4).transpose(0, 2, 1, 3)
    return out


def gemm_u8s8(A, Bp, C, nj, family=None):
    """``C[:, :nj] = A @ B`` exactly in int32: ``A`` uint8 ``(mq, k)``
    (``mq`` a multiple of 32, ``k`` of 64; rows may be a strided view with
    unit inner stride), ``Bp`` from ``pack_b_s8`` with the same ``k``,
    ``nj`` a multiple of 32 within its columns, ``C`` int32 ``(mq, >= nj)``
    C-contiguous. Sums must stay within int32: ``k * 255 * 128 < 2**31``
    (``k <= 65,792``; checked)."""
    mq, k = A.shape
    if not (A.dtype == np.uint8 and A.strides[1] == 1 and A.strides[0] >= k
            and Bp.dtype == np.int8 and Bp.flags.c_contiguous and C.dtype == np.int32
            and C.flags.c_contiguous and C.flags.writeable):
        raise TypeError("gemm_u8s8: A uint8 rows (unit inner stride), Bp int8 and C int32 "
                        "C-contiguous")
    if (k % 64 or mq % 32 or nj % 32 or nj < 0 or k * 255 * 128 >= 2 ** 31
            or Bp.ndim != 4 or Bp.shape[1:] != (k // 4, 16, 4)
            or nj > Bp.shape[0] * 16 or C.shape[0] != mq or C.shape[1] < nj):
        raise ValueError(f"gemm_u8s8: shapes A {A.shape}, Bp {Bp.shape}, C {C.shape}, "
                         f"nj {nj} do not fit")
    if mq == 0 or nj == 0:
        return C
    return _gemm_u8s8(_function(k // 64, "u8s8", _resolve(family, "u8s8")), A, Bp, C, nj)


def _gemm_u8s8(f, A, Bp, C, nj):
    f(A.ctypes.data, A.strides[0], Bp.ctypes.data, C.ctypes.data, C.shape[1] * 4, A.shape[0],
      nj)
    return C
