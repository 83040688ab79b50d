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


def _int8_key_ir(r):
    """The epilogue of ``filter_u8s8``: row ``r``'s int32 sums of the block
    turned into float32 keys ``%key{r}_0`` / ``%key{r}_1`` (see
    ``_avx512_filter_ir``)."""
    out = [f"""  %qnp{r} = getelementptr float, ptr %QN, i64 %row{r}
  %qn{r} = load float, ptr %qnp{r}
  %qgp{r} = getelementptr float, ptr %QG, i64 %row{r}
  %qg{r} = load float, ptr %qgp{r}
  %qnv0{r} = insertelement <16 x float> poison, float %qn{r}, i64 0
  %qnv{r} = shufflevector <16 x float> %qnv0{r}, <16 x float> poison, <16 x i32> zeroinitializer
  %qgv0{r} = insertelement <16 x float> poison, float %qg{r}, i64 0
  %qgv{r} = shufflevector <16 x float> %qgv0{r}, <16 x float> poison, <16 x i32> zeroinitializer
"""]
    for h in (0, 1):
        out.append(f"""  %d{h}{r} = sub <16 x i32> %y{r}_{h}_kl, %xc{h}
  %f{h}{r} = sitofp <16 x i32> %d{h}{r} to <16 x float>
  %s{h}{r} = fmul <16 x float> %xs{h}, %qgv{r}
  %u{h}{r} = fmul <16 x float> %f{h}{r}, %s{h}{r}
  %n{h}{r} = fadd <16 x float> %xn{h}, %qnv{r}
  %key{r}_{h} = fadd <16 x float> %n{h}{r}, %u{h}{r}
""")
    return "".join(out)


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
    float32 roundings (``kernels.projection.int8_key_slack``)."""
    n_steps = kb * 16
    blk = kb * 1024
    emit = []
    for r in range(rows):
        emit.append(f"""  br label %r{r}
r{r}:
  %row{r} = add i64 %i, {r}
""")
        if op == "u8s8":
            emit.append(_int8_key_ir(r))
            key0, key1 = f"%key{r}_0", f"%key{r}_1"
        else:
            key0, key1 = f"%y{r}_0_kl", f"%y{r}_1_kl"
        emit.append(f"""  %tp{r} = getelementptr float, ptr %T, i64 %row{r}
  %t{r} = load float, ptr %tp{r}
  %tv0{r} = insertelement <16 x float> poison, float %t{r}, i64 0
  %tv{r} = shufflevector <16 x float> %tv0{r}, <16 x float> poison, <16 x i32> zeroinitializer
  %m0{r} = fcmp ole <16 x float> {key0}, %tv{r}
  %m1{r} = fcmp ole <16 x float> {key1}, %tv{r}
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
  call void @llvm.masked.compressstore.v16f32(<16 x float> {key0}, ptr %kp0{r}, <16 x i1> %m0{r})
  call void @llvm.masked.compressstore.v16i32(<16 x i32> %jv0, ptr %jp0{r}, <16 x i1> %m0{r})
  %p0{r} = call i16 @llvm.ctpop.i16(i16 %b0{r})
  %p0w{r} = zext i16 %p0{r} to i32
  %cnt1{r} = add i32 %cnt0{r}, %p0w{r}
  %c1{r} = sext i32 %cnt1{r} to i64
  %kp1{r} = getelementptr float, ptr %kr{r}, i64 %c1{r}
  %jp1{r} = getelementptr i32, ptr %jr{r}, i64 %c1{r}
  call void @llvm.masked.compressstore.v16f32(<16 x float> {key1}, ptr %kp1{r}, <16 x i1> %m1{r})
  call void @llvm.masked.compressstore.v16i32(<16 x i32> %jv1, ptr %jp1{r}, <16 x i1> %m1{r})
  %p1{r} = call i16 @llvm.ctpop.i16(i16 %b1{r})
  %p1w{r} = zext i16 %p1{r} to i32
  %cnt2{r} = add i32 %cnt1{r}, %p1w{r}
  store i32 %cnt2{r}, ptr %cp{r}
  br label %done{r}
done{r}:
""")
    if op == "u8s8":
        args = ", ptr %QN, ptr %QG, ptr %XN, ptr %XS, ptr %XC"
        # the group pair's column vectors, loaded once per pair
        cols = """  %xg0 = mul i64 %g, 64
  %xg1 = add i64 %xg0, 64
""" + "".join(f"""  %xnp{h} = getelementptr i8, ptr %XN, i64 %xg{h}
  %xn{h} = load <16 x float>, ptr %xnp{h}, align 4
  %xsp{h} = getelementptr i8, ptr %XS, i64 %xg{h}
  %xs{h} = load <16 x float>, ptr %xsp{h}, align 4
  %xcp{h} = getelementptr i8, ptr %XC, i64 %xg{h}
  %xc{h} = load <16 x i32>, ptr %xcp{h}, align 4
""" for h in (0, 1))
    else:
        args = cols = ""
    return f"""
define void @filter_{op}_{kb}(ptr %A, i64 %lda, ptr %B, i64 %mq, i64 %nj, ptr %T, ptr %OK,
                              ptr %OJ, i64 %ldo, ptr %CNT{args}) #0 {{
{_avx512_group_head(rows, blk)}{cols}  %gb0 = trunc i64 %g to i32
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
{_avx512_k_loop_ir(n_steps, op, rows, "iloop", "kl")}{"".join(emit)}  %inext = add i64 %i, {rows}
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
