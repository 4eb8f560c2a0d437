//! Single-precision matrix products for the CPU backend.
//!
//! The classic BLIS structure (Van Zee & van de Geijn, 2015): the operands are packed into
//! cache-sized blocks (A in MR-row panels, B in NR-column panels) and an MR×NR micro-kernel keeps
//! a tile of C in registers. The micro-kernel is AVX2/FMA where the processor has it and plain
//! Rust elsewhere.
//!
//! What is particular here:
//! - **Tiles fitted to the shapes.** The tile height MR is 4, 5 or 6, weighing the rows padded
//!   against the speed of each kernel: batches of 20 fill 5-row tiles exactly.
//! - **No packing where it does not pay.** With few rows of A (a small batch), B is read in
//!   place, and A·Bᵀ with both operands contiguous along k becomes dot products of rows.
//! - **Sums of products.** C = β·C + α·Σᵢ op(Aᵢ)·op(Bᵢ) in one pass over C, so that the two
//!   gradient terms of a tied weight matrix (or an SGD step, with α = −lr and β = 1) need no
//!   intermediate buffer.
//! - **No allocation per call.** Packing buffers are per-thread and grow once.
//! - **Thread splits that do not change the arithmetic.** Work is divided between threads by
//!   whole tiles of C, and the method is chosen from the whole product; each element is summed
//!   over the same k-blocks in the same order whatever the number of threads.

use super::team::{share, Team};
use std::cell::RefCell;

/// The tallest micro-kernel tile.
pub const MR_MAX: usize = 6;
/// Columns of the micro-kernel's tile (two AVX2 vectors).
pub const NR: usize = 16;
/// Depth of a packed block: a KC×NR panel of B (16 KiB) stays in L1.
const KC: usize = 256;
/// Rows of a packed block of A, rounded down to whole tiles: MC×KC (96 KiB) stays in L2.
const MC: usize = 96;
/// Columns of a packed block of B: KC×NC (2 MiB) stays in L3.
const NC: usize = 2048;
/// A·Bᵀ with both read in place along k (dot products) when A has at most this many rows: no
/// packing, which at small batches costs as much as the products.
const DOT_MAX_M: usize = 32;
/// A·B with B read in place (no packing) when A has at most this many rows.
const DIRECT_MAX_M: usize = 24;
/// The sparse path is taken when more than this fraction of A is zeros: below it (masked images
/// are about 65 % zeros) the dense kernels, which reuse each value of B from registers, win on
/// these cores (measured by `gemm_shapes`).
const SPARSE_MIN_ZEROS: f64 = 0.8;
/// Below this many multiply-adds a product runs on one thread.
const PAR_MIN_FMAS: usize = 1 << 18;

/// A matrix operand: element (i, j) is `data[offset + i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Operand<'a> {
    /// A row-major `rows`×`cols` matrix, used as stored (`transposed` = false) or transposed.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, transposed: bool) -> Operand<'a> {
        if transposed {
            Operand { data, offset: 0, rs: 1, cs: cols }
        } else {
            Operand { data, offset: 0, rs: cols, cs: 1 }
        }
        .checked(if transposed { cols } else { rows }, if transposed { rows } else { cols })
    }

    /// Checks that an `r`×`c` view fits in the data.
    fn checked(self, r: usize, c: usize) -> Operand<'a> {
        if r > 0 && c > 0 {
            let last = self.offset + (r - 1) * self.rs + (c - 1) * self.cs;
            assert!(last < self.data.len(), "operand of {r}×{c} does not fit in {} values", self.data.len());
        }
        self
    }

    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[self.offset + i * self.rs + j * self.cs]
    }
}

/// One product op(A)·op(B) of a sum: op(A) is m×k, op(B) is k×n.
#[derive(Clone, Copy, Debug)]
pub struct Term<'a> {
    pub a: Operand<'a>,
    pub b: Operand<'a>,
    pub k: usize,
}

thread_local! {
    /// Packing buffers of this thread: (A block, B block).
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// A in compressed rows, for the sparse path: (row starts, column indices, values).
    static CSR: RefCell<(Vec<usize>, Vec<u32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Grows a scratch buffer to at least `len` values (once; never during training).
fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

/// A raw pointer to C shared by threads that write disjoint tiles of it.
#[derive(Clone, Copy)]
struct SharedC(*mut f32);
// SAFETY: the threads given a SharedC write disjoint elements (see `gemm`).
unsafe impl Send for SharedC {}
unsafe impl Sync for SharedC {}

/// Whether the AVX2/FMA kernels can run here (checked once).
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static FLAG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FLAG.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// How a product is computed, chosen once for the whole product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Both operands packed: the general case.
    Packed,
    /// B read in place (few rows, row-major B).
    Direct,
    /// Dot products of rows (few rows, A·Bᵀ with both contiguous along k).
    Dot,
    /// A mostly zeros: each row of C a sum of the rows of B that A's non-zeros pick.
    Sparse,
}

/// The tile height for `m` rows: the padded rows divided by the kernel's relative speed (taller
/// tiles keep more accumulators busy: 12, 10 or 8), least wins. 20 rows take 5-row tiles, most
/// shapes 6.
fn tile_rows(m: usize) -> usize {
    // Relative speed of the 6-, 5- and 4-row kernels, in percent (measured on Zen 3).
    [(6, 100), (5, 95), (4, 85)]
        .into_iter()
        .min_by_key(|&(r, speed)| m.div_ceil(r) * r * 100_000 / speed)
        .map_or(MR_MAX, |(r, _)| r)
}

/// `c` (m×n, row-major) = β·`c` + α·Σ op(Aᵢ)·op(Bᵢ), on the threads of `team`. With β = 0, `c`
/// is not read.
pub fn gemm(team: &Team, m: usize, n: usize, terms: &[Term<'_>], alpha: f32, beta: f32, c: &mut [f32]) {
    assert!(c.len() >= m * n, "C of {m}×{n} does not fit in {} values", c.len());
    for t in terms {
        t.a.checked(m, t.k);
        t.b.checked(t.k, n);
    }
    if m == 0 || n == 0 {
        return;
    }
    let path = match terms {
        [t] if t.a.cs == 1 && t.b.cs == 1 && t.k >= 64 && mostly_zeros(&t.a, m, t.k) => Path::Sparse,
        [t] if t.a.cs == 1 && t.b.rs == 1 && m <= DOT_MAX_M => Path::Dot,
        [t] if t.b.cs == 1 && m <= DIRECT_MAX_M => Path::Direct,
        _ => Path::Packed,
    };
    if path == Path::Sparse {
        return sparse_product(team, m, n, &terms[0], alpha, beta, c);
    }
    let mr = tile_rows(m);
    let fmas = m * n * terms.iter().map(|t| t.k).sum::<usize>();
    let ptr = SharedC(c.as_mut_ptr());
    let parts = if fmas < PAR_MIN_FMAS { 1 } else { team.size() };
    // Split the longer side into whole tiles, one range per thread.
    let split_rows = m >= n;
    let work = |t: usize| {
        let p = ptr;
        let (rows, cols) = if parts == 1 {
            (0..m, 0..n)
        } else if split_rows {
            (share(m, mr, t, parts), 0..n)
        } else {
            (0..m, share(n, NR, t, parts))
        };
        // SAFETY: each thread writes only its own rows (or columns) of C, disjoint across
        // threads; c holds m×n values and the operands were bounds-checked above.
        unsafe {
            match mr {
                4 => block::<4>(path, rows, cols, n, terms, alpha, beta, p.0),
                5 => block::<5>(path, rows, cols, n, terms, alpha, beta, p.0),
                _ => block::<6>(path, rows, cols, n, terms, alpha, beta, p.0),
            }
        }
    };
    if parts == 1 {
        work(0);
    } else {
        team.run(&work);
    }
}

/// A k×n matrix B packed once for many products A·B: the KC-deep blocks of depth in order,
/// each cut into NR-column panels (zero-padded), as [`packed_block`] packs B for one product.
/// [`block_product`] through it sums every element over the same blocks in the same order as
/// [`gemm`]'s packed path, so the results are the same to the bit.
pub struct PackedB {
    data: Vec<f32>,
    k: usize,
    n: usize,
}

impl PackedB {
    /// Packs B = `b` (k×n, row-major) or, when `transposed`, B = `b`ᵀ (`b` n×k, row-major).
    pub fn new(b: &[f32], k: usize, n: usize, transposed: bool) -> PackedB {
        let op = if transposed { Operand::new(b, n, k, true) } else { Operand::new(b, k, n, false) };
        let width = n.div_ceil(NR) * NR;
        let mut data = vec![0f32; k * width];
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            pack_b(&mut data[pc * width..], &op, pc, kc, kc, 0, 0, n);
        }
        PackedB { data, k, n }
    }

    /// The rows of B (the depth of the products).
    pub fn rows(&self) -> usize {
        self.k
    }

    /// The columns of B (of the products' results).
    pub fn cols(&self) -> usize {
        self.n
    }
}

/// Runs `f` on blocks of `block` rows of `0..m` (the last may be shorter), on the threads of
/// `team` when the work (`fmas` multiply-adds in all) is worth it. Blocks are handed out as
/// threads come for them, so a thread slowed down (by another process on its core, say) takes
/// fewer: `f` must give each row the same result whichever thread runs it.
pub fn for_blocks(team: &Team, m: usize, block: usize, fmas: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
    let block = block.max(1);
    if fmas < PAR_MIN_FMAS || m <= block || team.size() == 1 {
        for i0 in (0..m).step_by(block) {
            f(i0..(i0 + block).min(m));
        }
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    team.run(&|_| loop {
        let i0 = next.fetch_add(block, std::sync::atomic::Ordering::Relaxed);
        if i0 >= m {
            break;
        }
        f(i0..(i0 + block).min(m));
    });
}

/// Rows of A that [`block_product`] takes at a time, as [`gemm`]'s packed path does: 96, a
/// whole number of tiles of every height.
pub const BLOCK_ROWS: usize = MC;

/// `c` (m×n, row-major) = A·B on this thread, for a small block of rows of A (m×k, row-major),
/// as [`gemm`]'s packed path computes it (the same to the bit): A is packed whole, then
/// multiplied a block of depth at a time into C, which stays in cache between the blocks.
pub fn block_product(a: &[f32], m: usize, b: &PackedB, c: &mut [f32]) {
    let (k, n) = (b.k, b.n);
    assert!(a.len() >= m * k && c.len() >= m * n, "block_product: A or C too small");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the operands were checked above.
    unsafe {
        match tile_rows(m) {
            4 => block_product_mr::<4>(a, m, b, c),
            5 => block_product_mr::<5>(a, m, b, c),
            _ => block_product_mr::<6>(a, m, b, c),
        }
    }
}

/// [`block_product`] with tiles of MR rows.
///
/// # Safety
/// `a` must hold m×k values and `c` m×n.
unsafe fn block_product_mr<const MR: usize>(a: &[f32], m: usize, b: &PackedB, c: &mut [f32]) {
    let (k, n) = (b.k, b.n);
    let avx = has_avx2_fma();
    let width = n.div_ceil(NR) * NR;
    let a = Operand::new(&a[..m * k], m, k, false);
    let mp = m.div_ceil(MR) * MR;
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let apack = &mut s.0;
        grow(apack, mp * k);
        // Every block of depth, one after another: the panels of block pc start at mp·pc.
        for pc in (0..k).step_by(KC) {
            pack_a::<MR>(&mut apack[mp * pc..], &a, 0, m, pc, KC.min(k - pc), KC.min(k - pc), 0);
        }
        let cp = c.as_mut_ptr();
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let beta = if pc == 0 { 0.0 } else { 1.0 };
            let (ab, bb) = (apack.as_ptr().add(mp * pc), b.data.as_ptr().add(pc * width));
            for jr in (0..n).step_by(NR) {
                let bp = bb.add(jr * kc);
                for ir in (0..m).step_by(MR) {
                    micro::<MR>(avx, kc, ab.add(ir * kc), bp, NR, cp.add(ir * n + jr), n, 1.0, beta, MR.min(m - ir), NR.min(n - jr));
                }
            }
        }
    });
}

/// Rows `rows` and columns `cols` of the product, on this thread, by `path`.
///
/// # Safety
/// `c` must point to a row-major matrix with leading dimension `ldc` holding those elements, and
/// the operands must cover them.
#[allow(clippy::too_many_arguments)]
unsafe fn block<const MR: usize>(path: Path, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, ldc: usize, terms: &[Term<'_>], alpha: f32, beta: f32, c: *mut f32) {
    if rows.is_empty() || cols.is_empty() {
        return;
    }
    let avx = has_avx2_fma();
    match (path, terms) {
        (Path::Dot, [t]) => dot_block(avx, rows, cols, ldc, t, alpha, beta, c),
        (Path::Direct, [t]) => direct_block::<MR>(avx, rows, cols, ldc, t, alpha, beta, c),
        _ => packed_block::<MR>(avx, rows, cols, ldc, terms, alpha, beta, c),
    }
}

/// The pieces of the products' concatenated depth that fall in the block p0..p0+kc:
/// (term, first depth within the term, count, position within the block).
fn segments<'t, 'a>(terms: &'t [Term<'a>], p0: usize, kc: usize) -> impl Iterator<Item = (&'t Term<'a>, usize, usize, usize)> {
    let mut start = 0;
    terms.iter().filter_map(move |t| {
        let (lo, hi) = (start, start + t.k);
        start = hi;
        let from = p0.max(lo);
        let to = (p0 + kc).min(hi);
        (from < to).then(|| (t, from - lo, to - from, from - p0))
    })
}

/// The general method: both operands packed. The depths of all terms are concatenated and cut
/// into blocks of KC, so that small products share one pass over C.
///
/// # Safety
/// As [`block`].
#[allow(clippy::too_many_arguments)]
unsafe fn packed_block<const MR: usize>(avx: bool, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, ldc: usize, terms: &[Term<'_>], alpha: f32, beta: f32, c: *mut f32) {
    let (i0, j0) = (rows.start, cols.start);
    let (m, n) = (rows.len(), cols.len());
    let depth: usize = terms.iter().map(|t| t.k).sum();
    if depth == 0 {
        for i in rows {
            for j in cols.clone() {
                let x = c.add(i * ldc + j);
                *x = if beta == 0.0 { 0.0 } else { beta * *x };
            }
        }
        return;
    }
    let mc_max = MC / MR * MR;
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (apack, bpack) = &mut *s;
        grow(apack, mc_max * KC);
        grow(bpack, KC * NC.min(n.div_ceil(NR) * NR));
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..depth).step_by(KC) {
                let kc = KC.min(depth - pc);
                for (t, from, count, pos) in segments(terms, pc, kc) {
                    pack_b(bpack, &t.b, from, count, kc, pos, j0 + jc, nc);
                }
                let b_here = if pc == 0 { beta } else { 1.0 };
                for ic in (0..m).step_by(mc_max) {
                    let mc = mc_max.min(m - ic);
                    for (t, from, count, pos) in segments(terms, pc, kc) {
                        pack_a::<MR>(apack, &t.a, i0 + ic, mc, from, count, kc, pos);
                    }
                    for jr in (0..nc).step_by(NR) {
                        let nr = NR.min(nc - jr);
                        let bp = bpack.as_ptr().add(jr * kc);
                        for ir in (0..mc).step_by(MR) {
                            let mr = MR.min(mc - ir);
                            let ap = apack.as_ptr().add(ir * kc);
                            let cp = c.add((i0 + ic + ir) * ldc + j0 + jc + jr);
                            micro::<MR>(avx, kc, ap, bp, NR, cp, ldc, alpha, b_here, mr, nr);
                        }
                    }
                }
            }
        }
    });
}

/// C = β·C + α·op(A)·op(B) with op(B) row-major, read in place: A is packed (it is small), B's
/// rows are read where they are; a last partial tile of columns is packed.
///
/// # Safety
/// As [`block`].
#[allow(clippy::too_many_arguments)]
unsafe fn direct_block<const MR: usize>(avx: bool, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, ldc: usize, t: &Term<'_>, alpha: f32, beta: f32, c: *mut f32) {
    let (i0, j0) = (rows.start, cols.start);
    let (m, n) = (rows.len(), cols.len());
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (apack, bpack) = &mut *s;
        grow(apack, m.div_ceil(MR) * MR * KC);
        grow(bpack, KC * NR);
        let b = &t.b;
        let whole = n / NR * NR;
        for pc in (0..t.k).step_by(KC) {
            let kc = KC.min(t.k - pc);
            pack_a::<MR>(apack, &t.a, i0, m, pc, kc, kc, 0);
            let b_here = if pc == 0 { beta } else { 1.0 };
            for jr in (0..n).step_by(NR) {
                let nr = NR.min(n - jr);
                let (bp, ldb) = if jr < whole {
                    (b.data.as_ptr().add(b.offset + pc * b.rs + j0 + jr), b.rs)
                } else {
                    pack_b(bpack, b, pc, kc, kc, 0, j0 + jr, nr);
                    (bpack.as_ptr(), NR)
                };
                for ir in (0..m).step_by(MR) {
                    let mr = MR.min(m - ir);
                    let cp = c.add((i0 + ir) * ldc + j0 + jr);
                    micro::<MR>(avx, kc, apack.as_ptr().add(ir * kc), bp, ldb, cp, ldc, alpha, b_here, mr, nr);
                }
            }
        }
    });
}

/// C = β·C + α·A·Bᵀ with A and B both row-major along k: each element is a dot product of two
/// contiguous rows, computed 2×4 at a time, nothing packed.
///
/// # Safety
/// As [`block`].
#[allow(clippy::too_many_arguments)]
unsafe fn dot_block(avx: bool, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, ldc: usize, t: &Term<'_>, alpha: f32, beta: f32, c: *mut f32) {
    let (a, b) = (&t.a, &t.b);
    for j in cols.clone().step_by(4) {
        let nr = 4.min(cols.end - j);
        for i in rows.clone().step_by(2) {
            let mr = 2.min(rows.end - i);
            let ap = a.data.as_ptr().add(a.offset + i * a.rs);
            let bp = b.data.as_ptr().add(b.offset + j * b.cs);
            let mut out = [[0f32; 4]; 2];
            #[cfg(target_arch = "x86_64")]
            if avx {
                dot_tile_avx2(t.k, ap, a.rs, bp, b.cs, mr, nr, &mut out);
            } else {
                dot_tile_portable(t.k, ap, a.rs, bp, b.cs, mr, nr, &mut out);
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = avx;
                dot_tile_portable(t.k, ap, a.rs, bp, b.cs, mr, nr, &mut out);
            }
            for (ii, row) in out.iter().enumerate().take(mr) {
                for (jj, &v) in row.iter().enumerate().take(nr) {
                    let x = c.add((i + ii) * ldc + j + jj);
                    *x = if beta == 0.0 { alpha * v } else { beta * *x + alpha * v };
                }
            }
        }
    }
}

/// Whether more than [`SPARSE_MIN_ZEROS`] of the m×k row-major operand are zeros. The first row
/// decides for most operands (dense ones, and images, whose rows are alike), so that the whole
/// operand is counted only when it may well be sparse.
fn mostly_zeros(a: &Operand<'_>, m: usize, k: usize) -> bool {
    let zeros_in = |i: usize| {
        let start = a.offset + i * a.rs;
        a.data[start..start + k].iter().filter(|&&v| v == 0.0).count()
    };
    if (zeros_in(0) as f64) <= SPARSE_MIN_ZEROS * k as f64 {
        return false;
    }
    let zeros: usize = (0..m).map(zeros_in).sum();
    zeros as f64 > SPARSE_MIN_ZEROS * (m * k) as f64
}

/// C = β·C + α·A·B with A mostly zeros: A is compressed by rows once, then each thread computes
/// whole columns of C (in blocks of 64) as sums of the rows of B that A's non-zeros select, in
/// the order of k.
fn sparse_product(team: &Team, m: usize, n: usize, t: &Term<'_>, alpha: f32, beta: f32, c: &mut [f32]) {
    CSR.with(|csr| {
        let mut csr = csr.borrow_mut();
        let (starts, idx, val) = &mut *csr;
        starts.clear();
        idx.clear();
        val.clear();
        // Room for a dense A: the buffers grow once, not during training.
        starts.reserve(m + 1);
        idx.reserve(m * t.k);
        val.reserve(m * t.k);
        starts.push(0);
        for i in 0..m {
            let start = t.a.offset + i * t.a.rs;
            for (p, &v) in t.a.data[start..start + t.k].iter().enumerate() {
                if v != 0.0 {
                    idx.push(p as u32);
                    val.push(v);
                }
            }
            starts.push(idx.len());
        }
        let (starts, idx, val) = (&starts[..], &idx[..], &val[..]);
        let ptr = SharedC(c.as_mut_ptr());
        let parts = if n * idx.len() < PAR_MIN_FMAS { 1 } else { team.size() };
        let avx = has_avx2_fma();
        let b = &t.b;
        let work = |th: usize| {
            let p = ptr;
            let cols = if parts == 1 { 0..n } else { share(n, 64, th, parts) };
            // SAFETY: each thread writes only its own columns of C; B's rows were bounds-checked.
            unsafe { sparse_cols(avx, m, cols, n, starts, idx, val, b, alpha, beta, p.0) };
        };
        if parts == 1 {
            work(0);
        } else {
            team.run(&work);
        }
    });
}

/// Columns `cols` of every row of C for the sparse path.
///
/// # Safety
/// `c` must be m×ldc; the compressed rows must index rows of `b` that exist.
#[allow(clippy::too_many_arguments)]
unsafe fn sparse_cols(avx: bool, m: usize, cols: std::ops::Range<usize>, ldc: usize, starts: &[usize], idx: &[u32], val: &[f32], b: &Operand<'_>, alpha: f32, beta: f32, c: *mut f32) {
    let base = b.data.as_ptr().add(b.offset);
    let mut j = cols.start;
    while j < cols.end {
        let w = 64.min(cols.end - j);
        for i in 0..m {
            let (lo, hi) = (starts[i], starts[i + 1]);
            let out = c.add(i * ldc + j);
            #[cfg(target_arch = "x86_64")]
            if avx && w == 64 {
                sparse_row64_avx2(&idx[lo..hi], &val[lo..hi], base.add(j), b.rs, out, alpha, beta);
                continue;
            }
            let _ = avx;
            let mut acc = [0f32; 64];
            for (&p, &v) in idx[lo..hi].iter().zip(&val[lo..hi]) {
                let row = base.add(p as usize * b.rs + j);
                for (q, a) in acc.iter_mut().enumerate().take(w) {
                    *a += v * *row.add(q);
                }
            }
            for (q, &a) in acc.iter().enumerate().take(w) {
                let x = out.add(q);
                *x = if beta == 0.0 { alpha * a } else { beta * *x + alpha * a };
            }
        }
        j += w;
    }
}

/// One row of C, 64 columns: Σ over the non-zeros (p, v) of v·B[p, 0..64], with FMA.
///
/// # Safety
/// `b` + p·ldb must hold 64 values for every p in `idx`; `out` must hold 64; AVX2/FMA needed.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sparse_row64_avx2(idx: &[u32], val: &[f32], b: *const f32, ldb: usize, out: *mut f32, alpha: f32, beta: f32) {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 8];
    for (&p, &v) in idx.iter().zip(val) {
        let row = b.add(p as usize * ldb);
        let x = _mm256_set1_ps(v);
        for (q, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(x, _mm256_loadu_ps(row.add(8 * q)), *a);
        }
    }
    let (va, vb) = (_mm256_set1_ps(alpha), _mm256_set1_ps(beta));
    for (q, &a) in acc.iter().enumerate() {
        let o = out.add(8 * q);
        let r = if beta == 0.0 { _mm256_mul_ps(va, a) } else { _mm256_fmadd_ps(va, a, _mm256_mul_ps(vb, _mm256_loadu_ps(o))) };
        _mm256_storeu_ps(o, r);
    }
}

/// out[i][j] = Σ_p a[i·lda + p]·b[j·ldb + p] for i < mr, j < nr, summed in 8 lanes then across
/// them, as the AVX2 tile does.
#[allow(clippy::too_many_arguments)]
unsafe fn dot_tile_portable(k: usize, a: *const f32, lda: usize, b: *const f32, ldb: usize, mr: usize, nr: usize, out: &mut [[f32; 4]; 2]) {
    for i in 0..mr {
        for j in 0..nr {
            let mut lanes = [0f32; 8];
            let full = k / 8 * 8;
            for p in (0..full).step_by(8) {
                for (l, lane) in lanes.iter_mut().enumerate() {
                    *lane += *a.add(i * lda + p + l) * *b.add(j * ldb + p + l);
                }
            }
            let mut s = hsum8(&lanes);
            for p in full..k {
                s += *a.add(i * lda + p) * *b.add(j * ldb + p);
            }
            out[i][j] = s;
        }
    }
}

/// The sum of 8 lanes in a fixed order: ((0+4)+(2+6))+((1+5)+(3+7)).
#[inline(always)]
fn hsum8(l: &[f32; 8]) -> f32 {
    let q = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let d = [q[0] + q[2], q[1] + q[3]];
    d[0] + d[1]
}

/// The AVX2/FMA 2×4 dot tile: 8 accumulators of 8 lanes.
///
/// # Safety
/// Rows i < mr of `a` and j < nr of `b` must hold k values; the processor must have AVX2/FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn dot_tile_avx2(k: usize, a: *const f32, lda: usize, b: *const f32, ldb: usize, mr: usize, nr: usize, out: &mut [[f32; 4]; 2]) {
    use std::arch::x86_64::*;
    // Rows past mr or nr repeat the first one: computed, never stored.
    let ar = [a, a.add(if mr > 1 { lda } else { 0 })];
    let br = [b, b.add(if nr > 1 { ldb } else { 0 }), b.add(if nr > 2 { 2 * ldb } else { 0 }), b.add(if nr > 3 { 3 * ldb } else { 0 })];
    let mut acc = [[_mm256_setzero_ps(); 4]; 2];
    let full = k / 8 * 8;
    let mut p = 0;
    while p < full {
        let w = [_mm256_loadu_ps(br[0].add(p)), _mm256_loadu_ps(br[1].add(p)), _mm256_loadu_ps(br[2].add(p)), _mm256_loadu_ps(br[3].add(p))];
        for i in 0..2 {
            let h = _mm256_loadu_ps(ar[i].add(p));
            for j in 0..4 {
                acc[i][j] = _mm256_fmadd_ps(h, w[j], acc[i][j]);
            }
        }
        p += 8;
    }
    for i in 0..mr {
        for j in 0..nr {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc[i][j]);
            let mut s = hsum8(&lanes);
            for q in full..k {
                s += *ar[i].add(q) * *br[j].add(q);
            }
            out[i][j] = s;
        }
    }
}

/// Packs rows i0..i0+mc, depths p0..p0+kc of op(A) into MR-row panels of a block of depth
/// `block`, at depth position `pos`: `dst[q·MR·block + (pos + p)·MR + i]`, zero past mc.
#[allow(clippy::too_many_arguments)]
fn pack_a<const MR: usize>(dst: &mut [f32], a: &Operand<'_>, i0: usize, mc: usize, p0: usize, kc: usize, block: usize, pos: usize) {
    for (q, panel) in dst[..mc.div_ceil(MR) * MR * block].chunks_exact_mut(MR * block).enumerate() {
        let panel = &mut panel[pos * MR..(pos + kc) * MR];
        let rows = MR.min(mc - q * MR);
        let base = i0 + q * MR;
        if a.cs == 1 {
            for i in 0..MR {
                if i < rows {
                    let start = a.offset + (base + i) * a.rs + p0;
                    for (p, &v) in a.data[start..start + kc].iter().enumerate() {
                        panel[p * MR + i] = v;
                    }
                } else {
                    for p in 0..kc {
                        panel[p * MR + i] = 0.0;
                    }
                }
            }
        } else if a.rs == 1 && rows == MR {
            for p in 0..kc {
                let start = a.offset + base + (p0 + p) * a.cs;
                panel[p * MR..(p + 1) * MR].copy_from_slice(&a.data[start..start + MR]);
            }
        } else {
            for p in 0..kc {
                for i in 0..MR {
                    panel[p * MR + i] = if i < rows { a.at(base + i, p0 + p) } else { 0.0 };
                }
            }
        }
    }
}

/// Packs depths p0..p0+kc, columns j0..j0+nc of op(B) into NR-column panels of a block of depth
/// `block`, at depth position `pos`: `dst[q·NR·block + (pos + p)·NR + j]`, zero past nc.
#[allow(clippy::too_many_arguments)]
fn pack_b(dst: &mut [f32], b: &Operand<'_>, p0: usize, kc: usize, block: usize, pos: usize, j0: usize, nc: usize) {
    for (q, panel) in dst[..nc.div_ceil(NR) * NR * block].chunks_exact_mut(NR * block).enumerate() {
        let panel = &mut panel[pos * NR..(pos + kc) * NR];
        let cols = NR.min(nc - q * NR);
        let base = j0 + q * NR;
        if b.cs == 1 && cols == NR {
            for p in 0..kc {
                let start = b.offset + (p0 + p) * b.rs + base;
                panel[p * NR..(p + 1) * NR].copy_from_slice(&b.data[start..start + NR]);
            }
        } else if b.rs == 1 {
            for j in 0..NR {
                if j < cols {
                    let start = b.offset + (base + j) * b.cs + p0;
                    for (p, &v) in b.data[start..start + kc].iter().enumerate() {
                        panel[p * NR + j] = v;
                    }
                } else {
                    for p in 0..kc {
                        panel[p * NR + j] = 0.0;
                    }
                }
            }
        } else {
            for p in 0..kc {
                for j in 0..NR {
                    panel[p * NR + j] = if j < cols { b.at(p0 + p, base + j) } else { 0.0 };
                }
            }
        }
    }
}

/// One micro-kernel call, AVX2/FMA when `avx`.
///
/// # Safety
/// As the kernels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<const MR: usize>(avx: bool, kc: usize, a: *const f32, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, alpha: f32, beta: f32, mr: usize, nr: usize) {
    #[cfg(target_arch = "x86_64")]
    if avx {
        return kernel_avx2::<MR>(kc, a, b, ldb, c, ldc, alpha, beta, mr, nr);
    }
    let _ = avx;
    kernel_portable::<MR>(kc, a, b, ldb, c, ldc, alpha, beta, mr, nr)
}

/// Writes the tile `acc` (MR×NR) into the mr×nr corner of C: c = β·c + α·acc.
///
/// # Safety
/// `c` must address an mr×nr block with leading dimension `ldc`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn store_tile<const MR: usize>(acc: &[[f32; NR]; MR], c: *mut f32, ldc: usize, alpha: f32, beta: f32, mr: usize, nr: usize) {
    for (i, row) in acc.iter().enumerate().take(mr) {
        let dst = c.add(i * ldc);
        for (j, &v) in row.iter().enumerate().take(nr) {
            let x = dst.add(j);
            *x = if beta == 0.0 { alpha * v } else { beta * *x + alpha * v };
        }
    }
}

/// The portable micro-kernel: c (mr×nr of a tile) = β·c + α·Σ_p a[p]·b[p]. `a` is a packed
/// MR-row panel; row p of `b` starts at `b + p·ldb` (NR for a packed panel, the row stride for
/// B read in place). NR values of every row are read whatever `nr` is, so B is read in place
/// only for whole tiles.
///
/// # Safety
/// `a` must hold a kc-deep packed panel and `b` kc rows of NR values; `c` must address the
/// tile.
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_portable<const MR: usize>(kc: usize, a: *const f32, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, alpha: f32, beta: f32, mr: usize, nr: usize) {
    let mut acc = [[0f32; NR]; MR];
    for p in 0..kc {
        let ap = std::slice::from_raw_parts(a.add(p * MR), MR);
        let bp = std::slice::from_raw_parts(b.add(p * ldb), NR);
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] += ap[i] * bp[j];
            }
        }
    }
    store_tile::<MR>(&acc, c, ldc, alpha, beta, mr, nr);
}

/// The AVX2/FMA micro-kernel: 2·MR accumulators of 8 lanes hold the MR×16 tile (12 for MR = 6,
/// leaving room for the two values of B and the broadcast value of A in 16 registers).
///
/// # Safety
/// As [`kernel_portable`], and the processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx2<const MR: usize>(kc: usize, a: *const f32, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, alpha: f32, beta: f32, mr: usize, nr: usize) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let (mut ap, mut bp) = (a, b);
    // One depth step: two vectors of B, MR broadcasts of A, 2·MR multiply-adds.
    let step = |acc: &mut [[__m256; 2]; MR], ap: *const f32, bp: *const f32| {
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm256_broadcast_ss(&*ap.add(i));
            row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
        }
    };
    // Unrolled by 4, so that the loads of the next step overlap the arithmetic of this one
    // (about 8 % faster on Zen 3, measured).
    for _ in 0..kc / 4 {
        for u in 0..4 {
            step(&mut acc, ap.add(u * MR), bp.add(u * ldb));
        }
        ap = ap.add(4 * MR);
        bp = bp.add(4 * ldb);
    }
    for _ in 0..kc % 4 {
        step(&mut acc, ap, bp);
        ap = ap.add(MR);
        bp = bp.add(ldb);
    }
    let va = _mm256_set1_ps(alpha);
    if mr == MR && nr == NR {
        let vb = _mm256_set1_ps(beta);
        for (i, row) in acc.iter().enumerate() {
            let dst = c.add(i * ldc);
            for (h, &v) in row.iter().enumerate() {
                let x = dst.add(8 * h);
                let r = if beta == 0.0 {
                    _mm256_mul_ps(va, v)
                } else {
                    _mm256_fmadd_ps(va, v, _mm256_mul_ps(vb, _mm256_loadu_ps(x)))
                };
                _mm256_storeu_ps(x, r);
            }
        }
    } else {
        let mut tile = [[0f32; NR]; MR];
        for (i, row) in acc.iter().enumerate() {
            _mm256_storeu_ps(tile[i].as_mut_ptr(), row[0]);
            _mm256_storeu_ps(tile[i].as_mut_ptr().add(8), row[1]);
        }
        store_tile::<MR>(&tile, c, ldc, alpha, beta, mr, nr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Trans;
    use crate::kernels::matmul_ref;
    use crate::rng::Rng;

    fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| rng.next_f32() - 0.5).collect()
    }

    /// Every shape class (tile remainders, several k-blocks, both splits), both transposes,
    /// α and β, and sums of two products, against the reference loops.
    #[test]
    fn matches_the_reference_product() {
        let mut rng = Rng::new(11, 0);
        let teams: Vec<Team> = (1..=3).map(|t| Team::new(t).unwrap()).collect();
        let shapes = [(1, 1, 1), (7, 17, 3), (20, 500, 784), (784, 500, 20), (13, 2100, 300), (97, 33, 600), (6, 16, 256), (32, 40, 50), (128, 50, 30)];
        // Sparse A (90 % zeros): the sparse path, checked against the reference too.
        for &(m, n, k) in &[(20, 500, 784), (128, 500, 784), (5, 70, 100)] {
            let a: Vec<f32> = (0..m * k).map(|_| if rng.next_f32() < 0.9 { 0.0 } else { rng.next_f32() }).collect();
            let b = random(k * n, &mut rng);
            let c0 = random(m * n, &mut rng);
            let mut p = vec![0f32; m * n];
            matmul_ref(&mut p, &a, Trans::N, &b, Trans::N, m, n, k, false);
            let t = [Term { a: Operand::new(&a, m, k, false), b: Operand::new(&b, k, n, false), k }];
            assert!(mostly_zeros(&t[0].a, m, k));
            let mut results = Vec::new();
            for team in &teams {
                let mut c = c0.clone();
                gemm(team, m, n, &t, -0.5, 0.25, &mut c);
                for (i, (x, y)) in c.iter().zip((0..m * n).map(|i| 0.25 * c0[i] - 0.5 * p[i])).enumerate() {
                    assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "sparse {m}×{n}×{k} [{i}]: {x} vs {y}");
                }
                results.push(c);
            }
            assert!(results.iter().all(|r| r == &results[0]), "sparse: the thread count changed the result");
        }
        for &(m, n, k) in &shapes {
            for (ta, tb) in [(Trans::N, Trans::N), (Trans::T, Trans::N), (Trans::N, Trans::T), (Trans::T, Trans::T)] {
                let a = random(m * k, &mut rng);
                let b = random(k * n, &mut rng);
                let a2 = random(m * 5, &mut rng);
                let b2 = random(5 * n, &mut rng);
                let c0 = random(m * n, &mut rng);
                let (alpha, beta) = (-0.7f32, 0.3f32);
                // Reference: beta·c0 + alpha·(op(a)·op(b) + a2·b2).
                let mut p1 = vec![0f32; m * n];
                matmul_ref(&mut p1, &a, ta, &b, tb, m, n, k, false);
                let mut p2 = vec![0f32; m * n];
                matmul_ref(&mut p2, &a2, Trans::N, &b2, Trans::N, m, n, 5, false);
                let want_one: Vec<f32> = (0..m * n).map(|i| beta * c0[i] + alpha * p1[i]).collect();
                let want_two: Vec<f32> = (0..m * n).map(|i| beta * c0[i] + alpha * (p1[i] + p2[i])).collect();
                let terms = [
                    Term {
                        a: Operand::new(&a, if ta == Trans::T { k } else { m }, if ta == Trans::T { m } else { k }, ta == Trans::T),
                        b: Operand::new(&b, if tb == Trans::T { n } else { k }, if tb == Trans::T { k } else { n }, tb == Trans::T),
                        k,
                    },
                    Term { a: Operand::new(&a2, m, 5, false), b: Operand::new(&b2, 5, n, false), k: 5 },
                ];
                // One product (which takes the in-place paths when they apply) and a sum of two.
                for (count, want) in [(1, &want_one), (2, &want_two)] {
                    let mut results = Vec::new();
                    for team in &teams {
                        let mut c = c0.clone();
                        gemm(team, m, n, &terms[..count], alpha, beta, &mut c);
                        let tol = 2e-6 * (k as f32).sqrt() + 1e-6;
                        for (i, (x, y)) in c.iter().zip(want.iter()).enumerate() {
                            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{m}×{n}×{k} {ta:?}{tb:?} ({count}) [{i}]: {x} vs {y}");
                        }
                        results.push(c);
                    }
                    assert!(results.iter().all(|r| r == &results[0]), "{m}×{n}×{k}: the thread count changed the result");
                }
                // β = 0 overwrites whatever C held, NaN included.
                let mut c = vec![f32::NAN; m * n];
                gemm(&teams[0], m, n, &terms[..1], 1.0, 0.0, &mut c);
                assert!(c.iter().zip(&p1).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs())));
            }
        }
    }

    #[test]
    fn tile_heights_fit_the_shapes() {
        assert_eq!(tile_rows(20), 5);
        assert_eq!(tile_rows(128), 6);
        assert_eq!(tile_rows(36), 6);
        assert_eq!(tile_rows(784), 6);
        assert_eq!(tile_rows(8), 4);
        assert_eq!(tile_rows(1), 4);
    }

    #[test]
    fn portable_and_avx2_kernels_agree() {
        let mut rng = Rng::new(12, 0);
        let kc = 37;
        const MR: usize = 5;
        let a = random(MR * kc, &mut rng);
        let b = random(NR * kc, &mut rng);
        let mut c1 = random(MR * NR, &mut rng);
        let mut c2 = c1.clone();
        unsafe {
            kernel_portable::<MR>(kc, a.as_ptr(), b.as_ptr(), NR, c1.as_mut_ptr(), NR, 0.5, 1.0, MR, NR);
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                kernel_avx2::<MR>(kc, a.as_ptr(), b.as_ptr(), NR, c2.as_mut_ptr(), NR, 0.5, 1.0, MR, NR);
            } else {
                kernel_portable::<MR>(kc, a.as_ptr(), b.as_ptr(), NR, c2.as_mut_ptr(), NR, 0.5, 1.0, MR, NR);
            }
        }
        for (x, y) in c1.iter().zip(&c2) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()));
        }
    }
}
