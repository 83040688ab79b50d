"""LLVM IR of the tile kernels (``kernels/amx.py`` compiles and calls them).

Two families with one data layout (see ``amx``): Intel AMX tiles
(``tdpbf16ps``, ``tdpbusd``) and AVX-512 (``vdpbf16ps``, ``vpdpbusd``), each
as a plain product (``gemm``) and, for bfloat16, a product filtered in L1 by
a per-row limit (``filter``). The text is generated per K (in steps of
``KB`` values); nothing here runs code.
"""

KB = 32          # bfloat16 values per tile row (64 bytes): K is padded to this

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
declare <16 x float> @llvm.x86.avx512.mask.compress.v16f32(<16 x float>, <16 x float>, <16 x i1>)
declare <16 x i32> @llvm.x86.avx512.mask.compress.v16i32(<16 x i32>, <16 x i32>, <16 x i1>)
declare i16 @llvm.ctpop.i16(i16)
"""


def _append_ir(tag, keys, cols, mask, lanes):
    """IR appending the ``keys`` and column vectors ``cols`` selected by
    ``mask`` at ``%kp{tag}`` / ``%jp{tag}``. AVX-512 (16 lanes): compressed
    in registers, then one full-width store each, because ``vpcompressd``
    with a memory operand is microcoded on AMD Zen 4 (docs/benchmarks.md,
    2026-12-07 night: it cost the int8 filter a third of its time on CIFAR
    raw pixels). The lanes beyond the
    selected ones land past the row's count, inside the columns of this
    call: a row's count before a vector is at most the columns before it,
    so ``count + lanes`` never passes ``nj`` (``OK``/``OJ`` hold ``nj``
    values per row). AVX2 (8 lanes, no compress instruction): LLVM's
    masked compress store."""
    fv, iv, m = f"<{lanes} x float>", f"<{lanes} x i32>", f"<{lanes} x i1>"
    if lanes != 16:
        return (f"  call void @llvm.masked.compressstore.v{lanes}f32({fv} {keys}, ptr %kp{tag}, {m} {mask})\n"
                f"  call void @llvm.masked.compressstore.v{lanes}i32({iv} {cols}, ptr %jp{tag}, {m} {mask})\n")
    return (f"  %ck{tag} = call {fv} @llvm.x86.avx512.mask.compress.v16f32({fv} {keys}, {fv} zeroinitializer, {m} {mask})\n"
            f"  store {fv} %ck{tag}, ptr %kp{tag}, align 4\n"
            f"  %cj{tag} = call {iv} @llvm.x86.avx512.mask.compress.v16i32({iv} {cols}, {iv} zeroinitializer, {m} {mask})\n"
            f"  store {iv} %cj{tag}, ptr %jp{tag}, align 4\n")


def _k_loop_head_ir(rows, parts, vt, head, label):
    """The head of a register-blocked K loop: the block's row pointers
    ``%pa{r}_{label}``, the step counter and the ``parts`` accumulators per
    row (``%x{r}_{h}_{label}``: zero from ``head``, ``%y..`` around the loop)."""
    out = []
    for r in range(rows):
        out.append(f"  %ro{r}_{label} = mul i64 %lda, {r}\n"
                   f"  %pa{r}_{label} = getelementptr i8, ptr %pa, i64 %ro{r}_{label}\n")
    out.append(f"  br label %{label}\n{label}:\n  %t_{label} = phi i64 [0, %{head}], [%tn_{label}, %{label}]\n")
    for r in range(rows):
        for h in range(parts):
            out.append(f"  %x{r}_{h}_{label} = phi {vt} [zeroinitializer, %{head}], [%y{r}_{h}_{label}, %{label}]\n")
    return "".join(out)


def _avx512_k_loop_ir(n_steps, op, rows, head, label):
    """The K loop of a block as an LLVM loop (phi accumulators): an unrolled
    K loop lets LLVM hoist every B load and spill the accumulators. Enters
    from block ``head``; leaves in block ``{label}_end`` with the sums in
    ``%acc{r}_{h}_{label}``."""
    vt = "<16 x float>" if op == "bf16" else "<16 x i32>"
    out = [_k_loop_head_ir(rows, 2, vt, head, label)]
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


def _splat(name, value, vt, lanes):
    """IR broadcasting the scalar ``value`` into ``%{name}`` (``vt``
    vectors of ``lanes``)."""
    return (f"  %{name}_0 = insertelement {vt} poison, {value}, i64 0\n"
            f"  %{name} = shufflevector {vt} %{name}_0, {vt} poison, "
            f"<{lanes} x i32> zeroinitializer\n")


def _gemm_function_ir(name, rows, blk, k_loop, stores):
    """A product kernel ``name(A, lda, B, C, ldc, mq, nj)``: pairs of
    16-column groups outside (their packed B stays in L1), blocks of
    ``rows`` rows of A inside; ``k_loop`` (entered from ``iloop``, ending in
    ``kl_end``) sums a block, ``stores`` writes it at ``%pcb``."""
    return f"""
define void @{name}(ptr %A, i64 %lda, ptr %B, ptr %C, i64 %ldc, i64 %mq, i64 %nj) #0 {{
{_avx512_group_head(rows, blk)}  %cg = mul i64 %g, 64
  br label %iloop
iloop:
  %i = phi i64 [0, %gloop], [%inext, %kl_end]
  %ia = mul i64 %i, %lda
  %pa = getelementptr i8, ptr %A, i64 %ia
  %ic = mul i64 %i, %ldc
  %pcr = getelementptr i8, ptr %C, i64 %ic
  %pcb = getelementptr i8, ptr %pcr, i64 %cg
{k_loop}{stores}  %inext = add i64 %i, {rows}
  %idone = icmp uge i64 %inext, %mq
  br i1 %idone, label %gend, label %iloop
{_LOOP_ENDS}"""


_LOOP_ENDS = """gend:
  %gnext = add i64 %g, 2
  %gdone = icmp uge i64 %gnext, %ng
  br i1 %gdone, label %exit, label %gloop
exit:
  ret void
}
"""


def _stores_ir(rows, parts, vt, sums):
    """Stores of a block's ``parts`` vectors per row (``sums(r, h)``: the
    value names), each ``64 / parts`` bytes after the last."""
    out = []
    for r in range(rows):
        out.append(f"  %co{r} = mul i64 %ldc, {r}\n  %pc{r} = getelementptr i8, ptr %pcb, i64 %co{r}\n")
        for h in range(parts):
            out.append(f"  %pc{r}_{h} = getelementptr i8, ptr %pc{r}, i64 {128 // parts * h}\n"
                       f"  store {vt} {sums(r, h)}, ptr %pc{r}_{h}, align 4\n")
    return "".join(out)


def _avx512_kernel_ir(kb, op="bf16", rows=_ROWS):
    """LLVM IR of ``gemm_{op}_{kb}(A, lda, B, C, ldc, mq, nj)`` on AVX-512, the
    contract of the AMX kernel of that name (``_kernel_ir``): pairs of
    16-column groups outside (their 2 x 64 x kb x 16 bytes of B stay in L1),
    blocks of ``rows`` rows of A inside, ``rows`` x 32 accumulators in
    registers."""
    n_steps = kb * 16            # bf16: K = 32 kb values, pairs; u8s8: K = 64 kb, quads
    vt = "<16 x float>" if op == "bf16" else "<16 x i32>"
    return _gemm_function_ir(f"gemm_{op}_{kb}", rows, kb * 1024,
                             _avx512_k_loop_ir(n_steps, op, rows, "iloop", "kl"),
                             _stores_ir(rows, 2, vt, lambda r, h: f"%y{r}_{h}_kl"))


def _int8_key_ir(r, parts, lanes):
    """The int8 epilogue of row ``r``: its int32 sums ``%y{r}_{h}_kl`` as
    float32 keys ``%key{r}_{h}`` (see ``_avx512_filter_ir``), from the
    row's ``QN``/``QG`` and the columns' ``%xn``/``%xs``/``%xc``."""
    fv, iv = f"<{lanes} x float>", f"<{lanes} x i32>"
    out = [f"""  %qnp{r} = getelementptr float, ptr %QN, i64 %row{r}
  %qn{r} = load float, ptr %qnp{r}
  %qgp{r} = getelementptr float, ptr %QG, i64 %row{r}
  %qg{r} = load float, ptr %qgp{r}
""", _splat(f"qnv{r}", f"float %qn{r}", fv, lanes), _splat(f"qgv{r}", f"float %qg{r}", fv, lanes)]
    for h in range(parts):
        out.append(f"""  %d{h}{r} = sub {iv} %y{r}_{h}_kl, %xc{h}
  %f{h}{r} = sitofp {iv} %d{h}{r} to {fv}
  %s{h}{r} = fmul {fv} %xs{h}, %qgv{r}
  %u{h}{r} = fmul {fv} %f{h}{r}, %s{h}{r}
  %n{h}{r} = fadd {fv} %xn{h}, %qnv{r}
  %key{r}_{h} = fadd {fv} %n{h}{r}, %u{h}{r}
""")
    return "".join(out)


def _filter_row_ir(r, parts, lanes, keys):
    """Row ``r`` of a filter block: its ``parts`` key vectors (``keys(h)``)
    compared with ``T[row]``; the passing keys and their columns (``%jv{h}``)
    appended (``_append_ir``) to the row of ``OK``/``OJ``, ``CNT[row]``
    counting them. Ends in block ``done{r}``."""
    fv, bits = f"<{lanes} x float>", f"i{lanes}"
    out = [f"""  %tp{r} = getelementptr float, ptr %T, i64 %row{r}
  %t{r} = load float, ptr %tp{r}
""", _splat(f"tv{r}", f"float %t{r}", fv, lanes)]
    for h in range(parts):
        out.append(f"""  %m{h}{r} = fcmp ole {fv} {keys(h)}, %tv{r}
  %b{h}{r} = bitcast <{lanes} x i1> %m{h}{r} to {bits}
""")
    acc = f"%b0{r}"
    for h in range(1, parts):
        out.append(f"  %bo{h}{r} = or {bits} {acc}, %b{h}{r}\n")
        acc = f"%bo{h}{r}"
    out.append(f"""  %any{r} = icmp ne {bits} {acc}, 0
  br i1 %any{r}, label %emit{r}, label %done{r}
emit{r}:
  %cp{r} = getelementptr i32, ptr %CNT, i64 %row{r}
  %ro{r}x = mul i64 %row{r}, %ldo
  %kr{r} = getelementptr i8, ptr %OK, i64 %ro{r}x
  %jr{r} = getelementptr i8, ptr %OJ, i64 %ro{r}x
  %cnt0{r} = load i32, ptr %cp{r}
""")
    for h in range(parts):
        out.append(f"""  %c{h}{r} = sext i32 %cnt{h}{r} to i64
  %kp{h}{r} = getelementptr float, ptr %kr{r}, i64 %c{h}{r}
  %jp{h}{r} = getelementptr i32, ptr %jr{r}, i64 %c{h}{r}
{_append_ir(f"{h}{r}", keys(h), f"%jv{h}", f"%m{h}{r}", lanes)}  %p{h}{r} = call {bits} @llvm.ctpop.{bits}({bits} %b{h}{r})
  %p{h}w{r} = zext {bits} %p{h}{r} to i32
  %cnt{h + 1}{r} = add i32 %cnt{h}{r}, %p{h}w{r}
""")
    out.append(f"""  store i32 %cnt{parts}{r}, ptr %cp{r}
  br label %done{r}
done{r}:
""")
    return "".join(out)


def _filter_function_ir(name, rows, blk, parts, lanes, k_loop, int8, xc_halved=False):
    """A filter kernel ``name(A, lda, B, mq, nj, T, OK, OJ, ldo, CNT[, QN,
    QG, XN, XS, XC])``: ``_gemm_function_ir``'s loops, each block's sums
    (``int8``: turned into keys by ``_int8_key_ir``) filtered row by row
    (``_filter_row_ir``); a group pair's 32 columns are ``parts`` vectors of
    ``lanes``. ``xc_halved``: the int8 kernel subtracts ``XC / 2``."""
    iv = f"<{lanes} x i32>"
    lane_ids = ", ".join(f"i32 {t}" for t in range(lanes))
    cols = ("  %gb0 = trunc i64 %g to i32\n  %gc0 = shl i32 %gb0, 4\n"
            + _splat("gv0", "i32 %gc0", iv, lanes)
            + f"  %jv0 = add {iv} %gv0, <{lane_ids}>\n"
            + "".join(f"  %jv{h} = add {iv} %jv0, <{', '.join([f'i32 {lanes * h}'] * lanes)}>\n"
                      for h in range(1, parts)))
    args = ""
    if int8:
        args = ", ptr %QN, ptr %QG, ptr %XN, ptr %XS, ptr %XC"
        # the group pair's column vectors, loaded once per pair
        cols += "  %xg0 = mul i64 %g, 64\n"
        for h in range(parts):
            xc = f"%xcr{h}" if xc_halved else f"%xc{h}"
            cols += f"""  %xo{h} = add i64 %xg0, {4 * lanes * h}
  %xnp{h} = getelementptr i8, ptr %XN, i64 %xo{h}
  %xn{h} = load <{lanes} x float>, ptr %xnp{h}, align 4
  %xsp{h} = getelementptr i8, ptr %XS, i64 %xo{h}
  %xs{h} = load <{lanes} x float>, ptr %xsp{h}, align 4
  %xcp{h} = getelementptr i8, ptr %XC, i64 %xo{h}
  {xc} = load {iv}, ptr %xcp{h}, align 4
"""
            if xc_halved:
                cols += f"  %xc{h} = ashr {iv} %xcr{h}, <{', '.join(['i32 1'] * lanes)}>\n"
    emit = []
    for r in range(rows):
        emit.append(f"  br label %r{r}\nr{r}:\n  %row{r} = add i64 %i, {r}\n")
        if int8:
            emit.append(_int8_key_ir(r, parts, lanes))
        keys = (lambda h, r=r: f"%key{r}_{h}") if int8 else (lambda h, r=r: f"%y{r}_{h}_kl")
        emit.append(_filter_row_ir(r, parts, lanes, keys))
    return f"""
define void @{name}(ptr %A, i64 %lda, ptr %B, i64 %mq, i64 %nj, ptr %T, ptr %OK,
                    ptr %OJ, i64 %ldo, ptr %CNT{args}) #0 {{
{_avx512_group_head(rows, blk)}{cols}  br label %iloop
iloop:
  %i = phi i64 [0, %gloop], [%inext, %done{rows - 1}]
  %ia = mul i64 %i, %lda
  %pa = getelementptr i8, ptr %A, i64 %ia
{k_loop}{"".join(emit)}  %inext = add i64 %i, {rows}
  %idone = icmp uge i64 %inext, %mq
  br i1 %idone, label %gend, label %iloop
{_LOOP_ENDS}"""


def _avx512_filter_ir(kb, rows=_ROWS, op="bf16"):
    """LLVM IR of ``filter_bf16_{kb}(A, lda, B, mq, nj, T, OK, OJ, ldo, CNT)``
    on AVX-512, the contract of the AMX kernel of that name
    (``_filter_kernel_ir``): the accumulators are compared with each row's
    ``T`` in registers; values appended in column order per row.

    ``op='u8s8'``: ``filter_u8s8_{kb}(..., CNT, QN, QG, XN, XS, XC)``, the
    int8 first stage. ``A``: uint8 query rows ``q + 128`` (``lda`` bytes
    apart, K = 64 kb), ``B``: ``pack_b_s8`` rows ``x``; per row of ``A``
    float32 ``QN`` and ``QG``, per column float32 ``XN``, ``XS`` and int32
    ``XC`` (from the block's first row / column). The value compared and
    kept is the float32 key ``(XN + QN) + float(S - XC) * (XS * QG)``,
    ``S`` the exact int32 sum (so ``S - XC = q.x`` when ``XC = 128 sum(x)``):
    with ``XN = |h_x|^2``, ``QN = |h_q|^2``, ``XS = s_x``, ``QG = -2 s_q``
    it is ``|h_q - h_x|^2`` of the vectors ``h = s * (integers)``, in four
    float32 roundings (``neighbors.pruned.search.int8_key_slack``)."""
    return _filter_function_ir(f"filter_{op}_{kb}", rows, kb * 1024, 2, 16,
                               _avx512_k_loop_ir(kb * 16, op, rows, "iloop", "kl"),
                               int8=op == "u8s8")


# --------------------------------------------------------------------------
# AVX2 (no AVX-512, no VNNI): the int8 first stage's product and filter with
# ``vpmaddubsw`` (uint8 x int8 pairs summed into int16) and ``vpmaddwd``
# (int16 pairs into int32). The int16 sums cannot saturate when the uint8
# operand stays below 127: ``2 * 126 * 127 = 32,004 < 32,767``, so the query
# side is quantised to 7 bits (``v + 63``, ``|v| <= 63``) and the int32 sums
# equal ``vpdpbusd``'s. The packed right operand is the same (16 columns of
# quads = two ymm registers); rows per register block: 2 rows x 32 columns are
# 8 ymm accumulators, plus 4 B registers, the broadcast and the ones (of 16).
_ROWS_AVX2 = 2

_DECLS_AVX2 = """
declare <8 x i32> @llvm.x86.avx512.vpdpbusd.256(<8 x i32>, <8 x i32>, <8 x i32>)
declare <16 x i16> @llvm.x86.avx2.pmadd.ub.sw(<32 x i8>, <32 x i8>)
declare <8 x i32> @llvm.x86.avx2.pmadd.wd(<16 x i16>, <16 x i16>)
declare void @llvm.masked.compressstore.v8f32(<8 x float>, ptr, <8 x i1>)
declare void @llvm.masked.compressstore.v8i32(<8 x i32>, ptr, <8 x i1>)
declare i8 @llvm.ctpop.i8(i8)
"""


def _avx2_k_loop_ir(n_steps, rows, head, label, vnni=False):
    """The K loop of an AVX2 block (phi accumulators ``%x{r}_{q}``, ``q`` the
    four 8-column quarters of the group pair); leaves in ``{label}_end`` with
    the int32 sums in ``%y{r}_{q}_{label}``. ``vnni``: one AVX-VNNI
    ``{vex} vpdpbusd`` a quarter instead of the three AVX2 instructions
    (full 8-bit uint8 operands)."""
    out = [_k_loop_head_ir(rows, 4, "<8 x i32>", head, label)]
    out.append(f"  %bo_{label} = shl i64 %t_{label}, 6\n  %ao_{label} = shl i64 %t_{label}, 2\n")
    for q in range(4):
        base = "%pb0" if q < 2 else "%pb1"
        out.append(f"""  %pq{q}a_{label} = getelementptr i8, ptr {base}, i64 %bo_{label}
  %pq{q}_{label} = getelementptr i8, ptr %pq{q}a_{label}, i64 {32 * (q % 2)}
  %q{q}_{label} = load <32 x i8>, ptr %pq{q}_{label}, align 4
""")
    for r in range(rows):
        out.append(f"""  %ap{r}_{label} = getelementptr i8, ptr %pa{r}_{label}, i64 %ao_{label}
  %as{r}_{label} = load i32, ptr %ap{r}_{label}, align 4
  %ai{r}_{label} = insertelement <8 x i32> poison, i32 %as{r}_{label}, i64 0
  %av{r}_{label} = shufflevector <8 x i32> %ai{r}_{label}, <8 x i32> poison, <8 x i32> zeroinitializer
  %ab{r}_{label} = bitcast <8 x i32> %av{r}_{label} to <32 x i8>
""")
        for q in range(4):
            if vnni:
                out.append(f"""  %qi{r}_{q}_{label} = bitcast <32 x i8> %q{q}_{label} to <8 x i32>
  %y{r}_{q}_{label} = call <8 x i32> @llvm.x86.avx512.vpdpbusd.256(<8 x i32> %x{r}_{q}_{label}, <8 x i32> %av{r}_{label}, <8 x i32> %qi{r}_{q}_{label})
""")
                continue
            out.append(f"""  %w{r}_{q}_{label} = call <16 x i16> @llvm.x86.avx2.pmadd.ub.sw(<32 x i8> %ab{r}_{label}, <32 x i8> %q{q}_{label})
  %d{r}_{q}_{label} = call <8 x i32> @llvm.x86.avx2.pmadd.wd(<16 x i16> %w{r}_{q}_{label}, <16 x i16> <i16 1, i16 1, i16 1, i16 1, i16 1, i16 1, i16 1, i16 1, i16 1, i16 1, i16 1, i16 1, i16 1, i16 1, i16 1, i16 1>)
  %y{r}_{q}_{label} = add <8 x i32> %x{r}_{q}_{label}, %d{r}_{q}_{label}
""")
    out.append(f"""  %tn_{label} = add i64 %t_{label}, 1
  %td_{label} = icmp uge i64 %tn_{label}, {n_steps}
  br i1 %td_{label}, label %{label}_end, label %{label}
{label}_end:
""")
    return "".join(out)


def _avx2_int8_ir(kb, rows=_ROWS_AVX2, vnni=False):
    """LLVM IR of ``gemm_u8s8_{kb}`` and ``filter_u8s8_{kb}`` on AVX2: the
    contracts of the AVX-512 kernels of those names (``_avx512_kernel_ir``,
    ``_avx512_filter_ir`` with ``op='u8s8'``), for uint8 rows of ``A`` below
    127 (``amx`` checks it). The filter's queries are shifted by 64, not 128:
    it subtracts ``XC / 2`` (``XC = 128 sum v`` is even). ``vnni``: the
    AVX-VNNI kernels (Intel client CPUs since Alder Lake, no AVX-512), full
    8-bit operands and queries shifted by 128, as on AVX-512."""
    n_steps = kb * 16
    gemm = _gemm_function_ir(f"gemm_u8s8_{kb}", rows, kb * 1024,
                             _avx2_k_loop_ir(n_steps, rows, "iloop", "kl", vnni),
                             _stores_ir(rows, 4, "<8 x i32>", lambda r, q: f"%y{r}_{q}_kl"))
    filt = _filter_function_ir(f"filter_u8s8_{kb}", rows, kb * 1024, 4, 8,
                               _avx2_k_loop_ir(n_steps, rows, "iloop", "kl", vnni), int8=True,
                               xc_halved=not vnni)
    return gemm + filt
