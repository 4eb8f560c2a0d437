// The elementwise and reduction kernels of the CUDA backend, compiled at run time by NVRTC.
// Each mirrors a plain loop of crates/dae/src/kernels.rs or crates/dae/src/corrupt.rs (named
// beside it), and is tested against it: on a GPU in tests/cuda.rs, and on the CPU, through a
// small emulation of CUDA, in tests/cuda_emu.rs. Matrices are row-major; `n` counts values.

typedef unsigned int u32;
typedef unsigned long long u64;

// Activations: 0 sigmoid, 1 tanh, 2 relu, 3 identity (the order of config::Activation).
__device__ __forceinline__ float act_apply(int act, float a) {
    switch (act) {
    case 0:
        if (a >= 0.f) return 1.f / (1.f + expf(-a));
        else { float e = expf(a); return e / (1.f + e); }
    case 1: return tanhf(a);
    case 2: return fmaxf(a, 0.f);
    default: return a;
    }
}

// s'(a) through the output y = s(a).
__device__ __forceinline__ float act_grad_out(int act, float y) {
    switch (act) {
    case 0: return y * (1.f - y);
    case 1: return 1.f - y * y;
    case 2: return y > 0.f ? 1.f : 0.f;
    default: return 1.f;
    }
}

__device__ __forceinline__ u64 gid() { return (u64)blockIdx.x * blockDim.x + threadIdx.x; }

// Row and column of element i of a matrix of n values, `cols` a row: in 32-bit arithmetic
// whenever n allows (a 64-bit division is a long routine on the GPU, run on every thread).
__device__ __forceinline__ void row_col(u64 i, u64 n, u32 cols, u32& r, u32& j) {
    if (n <= 0xffffffffull) {
        r = (u32)i / cols;
        j = (u32)i % cols;
    } else {
        r = (u32)(i / cols);
        j = (u32)(i % cols);
    }
}

// kernels::bias_act_row over rows × cols.
extern "C" __global__ void bias_act(float* __restrict__ x, const float* __restrict__ bias, int act, u32 rows,
                                    u32 cols) {
    u64 i = gid(), n = (u64)rows * cols;
    if (i >= n) return;
    u32 r, j;
    row_col(i, n, cols, r, j);
    x[i] = act_apply(act, x[i] + bias[j]);
}

// delta · s'(a) through the output y = s(a), as kernels::act_grad (relu zeroes where y <= 0).
// The product is rounded on its own (__fmul_rn is never contracted into an FMA), so a caller
// that sums the results gets the same values as act_grad followed by col_sums.
__device__ __forceinline__ float act_grad_apply(int act, float delta, float y) {
    if (act == 2) return y <= 0.f ? 0.f : delta;
    return __fmul_rn(delta, act_grad_out(act, y));
}

// kernels::act_grad.
extern "C" __global__ void act_grad(float* delta, const float* y, int act, u64 n) {
    u64 i = gid();
    if (i >= n) return;
    delta[i] = act_grad_apply(act, delta[i], y[i]);
}

// Dataset::gather: out[r, j] = scale(data[idx[r], j]), u8 values read as v / 255.
extern "C" __global__ void gather_u8(float* out, const unsigned char* data, const u32* idx, u32 rows, u32 cols,
                                     const float* offset, const float* factor) {
    u64 i = gid(), n = (u64)rows * cols;
    if (i >= n) return;
    u32 r, j;
    row_col(i, n, cols, r, j);
    float v = (float)data[(u64)idx[r] * cols + j] / 255.f;
    if (offset) v = (v - offset[j]) * factor[j];
    out[i] = v;
}

extern "C" __global__ void gather_f32(float* out, const float* data, const u32* idx, u32 rows, u32 cols,
                                      const float* offset, const float* factor) {
    u64 i = gid(), n = (u64)rows * cols;
    if (i >= n) return;
    u32 r, j;
    row_col(i, n, cols, r, j);
    float v = data[(u64)idx[r] * cols + j];
    if (offset) v = (v - offset[j]) * factor[j];
    out[i] = v;
}

// A fixed-order sum of one block's `v` (blockDim.x a multiple of 32, at most 1024), the same
// on every run: each warp adds its lanes by a butterfly (every lane ends with the same sum:
// each step adds the same two values, in either order), then every thread adds the warps'
// sums in order. Two barriers, against log2(blockDim.x) for a shared-memory tree.
__device__ double block_sum(double v) {
    __shared__ double s[32];
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x % 32 == 0) s[threadIdx.x / 32] = v;
    __syncthreads();
    double r = 0.0;
    for (u32 w = 0; w < blockDim.x / 32; w++) r += s[w];
    __syncthreads();
    return r;
}

// kernels::loss_grad_row, one block per row. loss: 0 cross-entropy, 1 squared error; output:
// 0 rows only, 1 gradient, 2 elements. emphasis: 0 none, else weights w_corrupted, w_clean
// (with `mask` null every input counts as clean). A thread takes the row's columns j ≡ t
// (mod blockDim.x) in order, LOSS_BATCH at a time: every read of a batch before any write, so
// that the reads wait on memory together rather than one after another.
#define LOSS_BATCH 4
extern "C" __global__ void loss_grad(float* __restrict__ pre, const float* __restrict__ c,
                                     const float* __restrict__ target, const float* __restrict__ mask, int loss,
                                     int decoder, int emphasis, float w_corrupted, float w_clean, float grad_scale,
                                     int output, u32 cols, float* __restrict__ row_loss) {
    u32 r = blockIdx.x;
    u64 base = (u64)r * cols;
    double total = 0.0;
    for (u32 j0 = threadIdx.x; j0 < cols; j0 += LOSS_BATCH * blockDim.x) {
        float a[LOSS_BATCH], x[LOSS_BATCH], w[LOSS_BATCH];
#pragma unroll
        for (u32 u = 0; u < LOSS_BATCH; u++) {
            u32 j = j0 + u * blockDim.x;
            if (j >= cols) break;
            a[u] = pre[base + j] + c[j];
            x[u] = target[base + j];
            w[u] = 1.f;
            if (emphasis) w[u] = (mask && mask[base + j] != 0.f) ? w_corrupted : w_clean;
        }
#pragma unroll
        for (u32 u = 0; u < LOSS_BATCH; u++) {
            u32 j = j0 + u * blockDim.x;
            if (j >= cols) break;
            float l, g;
            if (loss == 0) {
                x[u] = fminf(fmaxf(x[u], 0.f), 1.f);  // as kernels::loss_grad_row
                float e = expf(-fabsf(a[u]));
                l = fmaxf(a[u], 0.f) - a[u] * x[u] + log1pf(e);
                float s = a[u] >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
                g = s - x[u];
            } else {
                float z = act_apply(decoder, a[u]);
                float d = z - x[u];
                l = d * d;
                g = 2.f * d * act_grad_out(decoder, z);
            }
            total += (double)(w[u] * l);
            if (output == 1) pre[base + j] = grad_scale * w[u] * g;
            else if (output == 2) pre[base + j] = w[u] * l;
        }
    }
    total = block_sum(total);
    if (threadIdx.x == 0) row_loss[r] = (float)total;
}

// kernels::softmax_xent_row, one thread per row.
extern "C" __global__ void softmax_xent(float* z, const float* bias, const float* labels, int output, float grad_scale,
                                        u32 rows, u32 classes, float* row_loss, float* row_correct) {
    u64 r = gid();
    if (r >= rows) return;
    float* zr = z + r * classes;
    u32 label = (u32)labels[r];
    float mx = __int_as_float(0xff800000);  // -infinity
    u32 arg = 0;
    for (u32 j = 0; j < classes; j++) {
        zr[j] += bias[j];
        if (zr[j] > mx) { mx = zr[j]; arg = j; }
    }
    double sum = 0.0;
    for (u32 j = 0; j < classes; j++) sum += exp((double)(zr[j] - mx));
    double lse = (double)mx + log(sum);
    row_loss[r] = (float)(lse - (double)zr[label]);
    row_correct[r] = arg == label ? 1.f : 0.f;
    if (output == 1) {
        for (u32 j = 0; j < classes; j++) {
            float p = (float)exp((double)zr[j] - lse);
            zr[j] = grad_scale * (p - (j == label ? 1.f : 0.f));
        }
    } else if (output == 2) {
        for (u32 j = 0; j < classes; j++) zr[j] = (float)exp((double)zr[j] - lse);
    }
}

// Column sums, out[j] = β·out[j] + α·Σ_r x[r, j] (β = 0: out is not read). A block of
// 32 × L threads (L = blockDim.x / 32, a power of two up to 32: the backend picks it from the
// rows, see col_sum_block in mod.rs) takes a stripe of 32 columns: L row lanes each sum every L-th row,
// in order, then the lanes are added in a fixed tree order, so the sum is the same on every
// run. With `y` given, x is first replaced by act_grad(x, y) (each element once), and the sums
// are of the new values. A lane reads COL_BATCH rows before it writes any, and out[j] is read
// first, so that the reads wait on memory together.
#define COL_BATCH 8
__device__ __forceinline__ void col_sums_stripe(float* __restrict__ out, float* __restrict__ x,
                                                const float* __restrict__ y, int act, u32 stripe, u32 rows,
                                                u32 cols, float alpha, float beta) {
    __shared__ float s[32][33];
    u32 c = threadIdx.x % 32, lane = threadIdx.x / 32, lanes = blockDim.x / 32;
    u64 j = (u64)stripe * 32 + c;
    bool live = j < cols;
    float old = live && lane == 0 && beta != 0.f ? out[j] : 0.f;
    float acc = 0.f;
    if (live) {
        for (u32 r0 = lane; r0 < rows; r0 += COL_BATCH * lanes) {
            float v[COL_BATCH], yv[COL_BATCH];
#pragma unroll
            for (u32 u = 0; u < COL_BATCH; u++) {
                u32 r = r0 + u * lanes;
                if (r >= rows) break;
                v[u] = x[(u64)r * cols + j];
                if (y) yv[u] = y[(u64)r * cols + j];
            }
#pragma unroll
            for (u32 u = 0; u < COL_BATCH; u++) {
                u32 r = r0 + u * lanes;
                if (r >= rows) break;
                if (y) {
                    v[u] = act_grad_apply(act, v[u], yv[u]);
                    x[(u64)r * cols + j] = v[u];
                }
                acc += v[u];
            }
        }
    }
    s[lane][c] = acc;
    __syncthreads();
    for (u32 w = lanes / 2; w > 0; w /= 2) {
        if (lane < w) s[lane][c] += s[lane + w][c];
        __syncthreads();
    }
    if (lane == 0 && live) out[j] = beta == 0.f ? alpha * s[0][c] : beta * old + alpha * s[0][c];
}

extern "C" __global__ void col_sums(float* out, const float* x, u32 rows, u32 cols, float alpha, float beta) {
    col_sums_stripe(out, (float*)x, 0, 3, blockIdx.x, rows, cols, alpha, beta);
}

// Two column sums in one launch (the backward pass's bias gradients): the first stripes of
// blocks do out[j] = β·out[j] + α·Σ_r act_grad(x, y)[r, j], writing act_grad(x, y) back to x;
// the rest out2 = β·out2 + α·Σ_r x2[r, j] over cols2 columns (none when x2 is null).
extern "C" __global__ void act_grad_col_sums(float* out, float* x, const float* y, int act, u32 cols, float* out2,
                                             const float* x2, u32 cols2, u32 rows, float alpha, float beta) {
    u32 stripes = (cols + 31) / 32;
    if (blockIdx.x < stripes) col_sums_stripe(out, x, y, act, blockIdx.x, rows, cols, alpha, beta);
    else col_sums_stripe(out2, (float*)x2, 0, 3, blockIdx.x - stripes, rows, cols2, alpha, beta);
}

// A weight update from a small batch, as gemm of one product aᵀ·b of depth kk ≤ UPDATE_DEPTH:
// out (m × n row-major) = β·out + α·Σ_t a[t, i]·b[t, j] (β = 0: out is not read), with a kk × m
// and b kk × n row-major (m and n multiples of 4, rows 16-byte aligned). For a batch of a few
// dozen rows cuBLAS runs this as a general product; here a block of 256 threads takes a tile
// of 32 rows × 128 columns: it first reads the tile's slices of a and b into shared memory
// (every read of a thread in flight at once), then thread (ty, tx) = (t / 32, t % 32) sums the
// 4 × 4 outputs at rows i0 + 4·ty .. + 3, columns j0 + 4·tx .. + 3, in order of t.
#define UPDATE_DEPTH 64
#define UPDATE_THREADS 256
extern "C" __global__ void rank_update(float* __restrict__ out, const float* __restrict__ a,
                                       const float* __restrict__ b, u32 m, u32 n, u32 kk, float alpha, float beta) {
    __shared__ float4 sa[UPDATE_DEPTH][8];
    __shared__ float4 sb[UPDATE_DEPTH][32];
    u32 tiles_n = (n + 127) / 128;
    u32 i0 = (blockIdx.x / tiles_n) * 32, j0 = (blockIdx.x % tiles_n) * 128;
    u32 t = threadIdx.x, ty = t / 32, tx = t % 32;
    u32 i = i0 + 4 * ty, j = j0 + 4 * tx;
    bool live = i < m && j < n;
    // The old values first, so that their reads overlap the tile's.
    float4 old[4];
    if (live && beta != 0.f) {
#pragma unroll
        for (u32 u = 0; u < 4; u++)
            old[u] = i + u < m ? *(const float4*)(out + (u64)(i + u) * n + j) : float4{0.f, 0.f, 0.f, 0.f};
    }
    // Every read of the tile in flight at once: at most 2 of a and 8 of b a thread.
    float4 av[UPDATE_DEPTH * 8 / UPDATE_THREADS], bv[UPDATE_DEPTH * 32 / UPDATE_THREADS];
#pragma unroll
    for (u32 u = 0; u < UPDATE_DEPTH * 8 / UPDATE_THREADS; u++) {
        u32 e = t + u * UPDATE_THREADS, r = e / 8, ii = i0 + 4 * (e % 8);
        av[u] = r < kk && ii < m ? *(const float4*)(a + (u64)r * m + ii) : float4{0.f, 0.f, 0.f, 0.f};
    }
#pragma unroll
    for (u32 u = 0; u < UPDATE_DEPTH * 32 / UPDATE_THREADS; u++) {
        u32 e = t + u * UPDATE_THREADS, r = e / 32, jj = j0 + 4 * (e % 32);
        bv[u] = r < kk && jj < n ? *(const float4*)(b + (u64)r * n + jj) : float4{0.f, 0.f, 0.f, 0.f};
    }
#pragma unroll
    for (u32 u = 0; u < UPDATE_DEPTH * 8 / UPDATE_THREADS; u++) {
        u32 e = t + u * UPDATE_THREADS;
        if (e / 8 < kk) sa[e / 8][e % 8] = av[u];
    }
#pragma unroll
    for (u32 u = 0; u < UPDATE_DEPTH * 32 / UPDATE_THREADS; u++) {
        u32 e = t + u * UPDATE_THREADS;
        if (e / 32 < kk) sb[e / 32][e % 32] = bv[u];
    }
    __syncthreads();
    if (!live) return;
    float acc[4][4];
#pragma unroll
    for (u32 u = 0; u < 4; u++)
#pragma unroll
        for (u32 v = 0; v < 4; v++) acc[u][v] = 0.f;
    for (u32 r = 0; r < kk; r++) {
        float4 x = sa[r][ty], y = sb[r][tx];
        float xs[4] = {x.x, x.y, x.z, x.w}, ys[4] = {y.x, y.y, y.z, y.w};
#pragma unroll
        for (u32 u = 0; u < 4; u++)
#pragma unroll
            for (u32 v = 0; v < 4; v++) acc[u][v] += xs[u] * ys[v];
    }
#pragma unroll
    for (u32 u = 0; u < 4; u++) {
        if (i + u >= m) break;
        float4 o;
        if (beta == 0.f) {
            o = float4{alpha * acc[u][0], alpha * acc[u][1], alpha * acc[u][2], alpha * acc[u][3]};
        } else {
            o = float4{beta * old[u].x + alpha * acc[u][0], beta * old[u].y + alpha * acc[u][1],
                       beta * old[u].z + alpha * acc[u][2], beta * old[u].w + alpha * acc[u][3]};
        }
        *(float4*)(out + (u64)(i + u) * n + j) = o;
    }
}

extern "C" __global__ void copy_f32(float* dst, const float* src, u64 n) {
    u64 i = gid();
    if (i < n) dst[i] = src[i];
}

extern "C" __global__ void fill(float* x, float v, u64 n) {
    u64 i = gid();
    if (i < n) x[i] = v;
}

extern "C" __global__ void mul(float* out, const float* a, const float* b, u64 n) {
    u64 i = gid();
    if (i < n) out[i] = a[i] * b[i];
}

extern "C" __global__ void mul_assign(float* x, const float* m, u64 n) {
    u64 i = gid();
    if (i < n) x[i] *= m[i];
}

extern "C" __global__ void scale(float* x, float f, u64 n) {
    u64 i = gid();
    if (i < n) x[i] *= f;
}

// Σ x² in f64 by one block of 256 threads, each over a fixed stride: the same sum every time.
extern "C" __global__ void sum_squares(const float* x, u64 n, double* out) {
    double s = 0.0;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) s += (double)x[i] * (double)x[i];
    s = block_sum(s);
    if (threadIdx.x == 0) *out = s;
}

// kernels::update. kind: 0 SGD, 1 Adam, 2 AdamW; `m` null for SGD without momentum.
extern "C" __global__ void update(float* p, const float* g, float* m, float* v, u64 n, int kind, float lr,
                                  float momentum, int nesterov, float wd, float beta1, float beta2, float eps,
                                  float step_size, float bc2_sqrt) {
    u64 i = gid();
    if (i >= n) return;
    float pi = p[i], gi = g[i];
    if (kind == 0) {
        float d = gi + wd * pi;
        if (m) {
            float b = momentum * m[i] + d;
            m[i] = b;
            pi -= lr * (nesterov ? d + momentum * b : b);
        } else {
            pi -= lr * d;
        }
    } else {
        if (kind == 2) { pi *= 1.f - lr * wd; }
        else { gi = gi + wd * pi; }
        float mi = m[i] + (1.f - beta1) * (gi - m[i]);
        float vi = beta2 * v[i] + (1.f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        pi -= step_size * mi / denom;
    }
    p[i] = pi;
}

// ---- Noise: Philox4x32-10 exactly as crate::rng, laid out as crate::corrupt documents ----

__device__ __forceinline__ void philox(u32 k0, u32 k1, u32 c[4]) {
    for (int round = 0; round < 10; round++) {
        if (round > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        u64 p0 = (u64)0xD2511F53u * c[0];
        u64 p1 = (u64)0xCD9E8D57u * c[2];
        u32 n0 = (u32)(p1 >> 32) ^ c[1] ^ k0;
        u32 n2 = (u32)(p0 >> 32) ^ c[3] ^ k1;
        c[1] = (u32)p1;
        c[3] = (u32)p0;
        c[0] = n0;
        c[2] = n2;
    }
}

__device__ __forceinline__ float unit(u32 b) { return (float)(b >> 8) * (1.f / 16777216.f); }
__device__ __forceinline__ float unit_open(u32 b) { return (float)((b >> 8) + 1) * (1.f / 16777216.f); }

// One thread per (row, group g, lane l): block 8g + l of the row, i.e. the row's words
// 32g + 8w + l for w = 0..4. kind: 0 none, 1 masking, 2 gaussian, 3 salt-and-pepper (groups of
// 16 elements). `src.load(r, j)` gives the clean value of row r, column j, and `src.keep(r, j,
// v)` is told it (each element's once, from the one thread it belongs to); `mask` may be null.
// A thread reads all its values first, then draws, then writes: its reads wait on memory
// together, and the draws' arithmetic runs while they do.
template <typename Src>
__device__ __forceinline__ void corrupt_rows(const Src& src, float* __restrict__ xt, float* __restrict__ mask,
                                             int kind, float level, u32 seed_lo, u32 seed_hi, u32 stream, u32 epoch,
                                             u32 row0, u32 rows, u32 cols) {
    u32 per = kind == 3 ? 16 : 32;
    u32 groups = (cols + per - 1) / per;
    u64 t = gid(), n = (u64)rows * groups * 8;
    if (t >= n) return;
    u32 r, q;  // q = 8g + l
    row_col(t, n, 8 * groups, r, q);
    u32 l = q % 8, g = q / 8;
    u64 base = (u64)r * cols;
    u32 w[4] = {q, row0 + r, epoch, stream};
    // The thread's columns: 32g + 8k + l for k = 0..4 (salt-and-pepper: 16g + 8k + l, k < 2).
    u32 step = kind == 3 ? 16 * g : 32 * g, count = kind == 3 ? 2 : 4;
    float v[4];
#pragma unroll
    for (u32 k = 0; k < 4; k++) {
        u32 j = step + 8 * k + l;
        v[k] = k < count && j < cols ? src.load(r, j) : 0.f;
    }
    if (kind != 0) philox(seed_lo, seed_hi, w);
    // Every loop below is unrolled, so that v and w stay in registers.
#pragma unroll
    for (u32 k = 0; k < 4; k++) {
        u32 j = step + 8 * k + l;
        if (k < count && j < cols) src.keep(r, j, v[k]);
    }
    if (kind == 0 || kind == 1) {
#pragma unroll
        for (u32 k = 0; k < 4; k++) {
            u32 j = 32 * g + 8 * k + l;
            if (j >= cols) continue;
            bool hit = kind == 1 && unit(w[k]) < level;
            xt[base + j] = hit ? 0.f : v[k];
            if (mask) mask[base + j] = hit ? 1.f : 0.f;
        }
    } else if (kind == 2) {
#pragma unroll
        for (u32 k = 0; k < 4; k += 2) {
            float rad = sqrtf(-2.f * logf(unit_open(w[k])));
            float s, c;
            sincosf(6.28318530717958647692f * unit(w[k + 1]), &s, &c);
            u32 j0 = 32 * g + 8 * k + l, j1 = j0 + 8;
            if (j0 < cols) { xt[base + j0] = v[k] + level * (rad * c); if (mask) mask[base + j0] = 1.f; }
            if (j1 < cols) { xt[base + j1] = v[k + 1] + level * (rad * s); if (mask) mask[base + j1] = 1.f; }
        }
    } else {
#pragma unroll
        for (u32 h = 0; h < 2; h++) {
            u32 j = 16 * g + 8 * h + l;
            if (j >= cols) continue;
            bool hit = unit(w[2 * h]) < level;
            float salt = (float)(w[2 * h + 1] >> 31);
            xt[base + j] = hit ? salt : v[h];
            if (mask) mask[base + j] = hit ? 1.f : 0.f;
        }
    }
}

// The clean values of `corrupt`: x's (or, x null, every value `kept`).
struct PlainSource {
    const float* x;
    float kept;
    u32 cols;
    __device__ __forceinline__ float load(u32 r, u32 j) const { return x ? x[(u64)r * cols + j] : kept; }
    __device__ __forceinline__ void keep(u32, u32, float) const {}
};

// crate::corrupt over rows × cols of x (dropout masks: x null, masking with every kept value
// `kept`).
extern "C" __global__ void corrupt(const float* __restrict__ x, float* __restrict__ xt, float* __restrict__ mask,
                                   int kind, float level, float kept, u32 seed_lo, u32 seed_hi, u32 stream, u32 epoch,
                                   u32 row0, u32 rows, u32 cols) {
    corrupt_rows(PlainSource{x, kept, cols}, xt, mask, kind, level, seed_lo, seed_hi, stream, epoch, row0, rows, cols);
}

// Value `at` of the data: u8 read as v / 255 when `is_u8`, else f32.
__device__ __forceinline__ float raw_value(const void* data, int is_u8, u64 at) {
    return is_u8 ? (float)((const unsigned char*)data)[at] / 255.f : ((const float*)data)[at];
}

// Dataset::gather followed by corrupt, in one pass: x[r, j] = scale(data[idx[r], j]) (u8 values
// read as v / 255 when `is_u8`), then xt (and mask) exactly as `corrupt` makes them from x, with
// the same threads, counters and draws.
__device__ __forceinline__ float gathered(const void* data, int is_u8, const u32* idx, const float* offset,
                                          const float* factor, u32 r, u32 cols, u32 j) {
    float v = raw_value(data, is_u8, (u64)idx[r] * cols + j);
    // Rounded on its own, as gather_* store it, before any use in the noise.
    if (offset) v = __fmul_rn(v - offset[j], factor[j]);
    return v;
}

// The clean values of `gather_corrupt`: gathered from the data, and kept in x.
struct GatherSource {
    float* x;
    const void* data;
    int is_u8;
    const u32* idx;
    const float* offset;
    const float* factor;
    u32 cols;
    __device__ __forceinline__ float load(u32 r, u32 j) const {
        return gathered(data, is_u8, idx, offset, factor, r, cols, j);
    }
    __device__ __forceinline__ void keep(u32 r, u32 j, float v) const { x[(u64)r * cols + j] = v; }
};

extern "C" __global__ void gather_corrupt(float* __restrict__ x, float* __restrict__ xt, float* __restrict__ mask,
                                          const void* __restrict__ data, const u32* __restrict__ idx,
                                          const float* __restrict__ offset, const float* __restrict__ factor,
                                          int is_u8, int kind, float level, u64 seed, u32 stream, u32 epoch, u32 row0,
                                          u32 rows, u32 cols) {
    GatherSource src{x, data, is_u8, idx, offset, factor, cols};
    corrupt_rows(src, xt, mask, kind, level, (u32)seed, (u32)(seed >> 32), stream, epoch, row0, rows, cols);
}

// Dataset::gather_augmented: row r of the batch is the image data[idx[r]] (h × w) translated by
// (dy, dx) and mirrored as crate::augment::Augment::draw gives them for position row0 + r,
// vacated pixels 0, then scaled: out[r, j] = scale_j(raw value of the source pixel, or 0).
extern "C" __global__ void gather_augment(float* out, const void* data, const u32* idx, const float* offset,
                                          const float* factor, int is_u8, u32 shift, int flip, u64 seed, u32 stream,
                                          u32 epoch, u32 row0, u32 rows, u32 h, u32 w) {
    u32 cols = h * w;
    u64 i = gid(), n = (u64)rows * cols;
    if (i >= n) return;
    u32 r, j;
    row_col(i, n, cols, r, j);
    u32 c[4] = {row0 + r, epoch, stream, 0};
    philox((u32)seed, (u32)(seed >> 32), c);
    u32 span = 2 * shift + 1;
    int dy = (int)(c[0] % span) - (int)shift, dx = (int)(c[1] % span) - (int)shift;
    bool mirrored = flip && (c[2] & 1u);
    int sy = (int)(j / w) - dy, sx = (int)(j % w) - dx;
    float v = 0.f;
    if (sy >= 0 && sx >= 0 && sy < (int)h && sx < (int)w) {
        u32 s = (u32)sy * w + (mirrored ? w - 1 - (u32)sx : (u32)sx);
        v = raw_value(data, is_u8, (u64)idx[r] * cols + s);
    }
    if (offset) v = __fmul_rn(v - offset[j], factor[j]);
    out[i] = v;
}
